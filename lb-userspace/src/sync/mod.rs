//! Director state sync (issue 15's first slice): the authenticated datagram directors will
//! exchange ([`wire`]) and the replay filter a receiver applies ([`replay`]). Pure so far; the
//! agent does not send or receive yet.

pub mod replay;
pub mod wire;
