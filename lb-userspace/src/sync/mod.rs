//! Director state sync: the agents of one director group tell each other about the flows they
//! confirm, so that any director continues any flow on its real (IPVS's sync daemon,
//! keepalived's `lvs_sync_daemon`). The authenticated datagram ([`wire`]), the replay filter a
//! receiver applies ([`replay`]), and the translation between this director's map indices and
//! the addresses on the wire ([`translate`]), and the socket ([`channel`]).

pub mod channel;
pub mod replay;
pub mod translate;
pub mod wire;
