//! Connection states and the TCP state machine, as IPVS runs it for direct routing.
//!
//! In DR mode the director sees only client->server packets, so IPVS uses its "input only"
//! transition table (`tcp_states[]`, INPUT-ONLY rows, in `ip_vs_proto_tcp.c`). The same table
//! is encoded here and used by the data plane; the control plane uses it in tests and for
//! reporting. State numbers and names are IPVS's, so listings read the same.

/// State of a connection table entry. Numbering follows IPVS (`IP_VS_TCP_S_*`); `Udp` is ours
/// (IPVS tracks UDP with a single state it prints as `UDP`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnState {
    /// No state (persistence templates are shown with it).
    None = 0,
    /// Established: counted as ActiveConn.
    Established = 1,
    /// SYN sent (not reached in input-only tracking).
    SynSent = 2,
    /// SYN received.
    SynRecv = 3,
    /// FIN seen from the client.
    FinWait = 4,
    /// TIME_WAIT.
    TimeWait = 5,
    /// Closed (RST seen, or a packet without flags).
    Close = 6,
    /// CLOSE_WAIT.
    CloseWait = 7,
    /// LAST_ACK.
    LastAck = 8,
    /// LISTEN.
    Listen = 9,
    /// SYN-ACK.
    SynAck = 10,
    /// A UDP flow.
    Udp = 11,
}

/// TCP flag bits as in byte 13 of the TCP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;

    /// True for the first packet of a handshake: SYN without ACK, RST or FIN.
    #[inline(always)]
    pub const fn is_new_syn(self) -> bool {
        self.0 & (Self::SYN | Self::ACK | Self::RST | Self::FIN) == Self::SYN
    }
}

use ConnState::{
    Close as CL, CloseWait as CW, Established as ES, FinWait as FW, LastAck as LA, Listen as LI,
    SynAck as SA, SynRecv as SR, SynSent as SS, TimeWait as TW,
};

/// IPVS's input-only transitions: `[event][current state]`, events in IPVS order
/// (syn, fin, ack, rst), states `None..=SynAck`.
const INPUT_ONLY: [[ConnState; 11]; 4] = [
    //  NO  ES  SS  SR  FW  TW  CL  CW  LA  LI  SA
    [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR], // syn
    [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW], // fin
    [CL, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES], // ack
    [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL], // rst
];

impl ConnState {
    /// Number of states (size of the timeout table).
    pub const COUNT: usize = 12;

    /// IPVS's default idle timeouts in seconds, indexed by state (`tcp_timeouts[]`, and 300 s
    /// for UDP).
    pub const DEFAULT_TIMEOUTS: [u32; Self::COUNT] =
        [2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120, 300];

    /// The state after a client->server TCP packet with `flags`, from state `self`.
    ///
    /// Flags are looked at in IPVS's order: RST, then SYN, then FIN, then ACK; a packet with
    /// none of them moves the entry to CLOSE, as IPVS does.
    #[inline(always)]
    pub fn next_tcp(self, flags: TcpFlags) -> ConnState {
        let f = flags.0;
        let event = if f & TcpFlags::RST != 0 {
            3
        } else if f & TcpFlags::SYN != 0 {
            0
        } else if f & TcpFlags::FIN != 0 {
            1
        } else if f & TcpFlags::ACK != 0 {
            2
        } else {
            return CL;
        };
        match INPUT_ONLY[event].get(self as usize) {
            Some(s) => *s,
            None => CL,
        }
    }

    /// The state of a TCP flow first seen with `flags`.
    ///
    /// IPVS would start from NONE, so a mid-flow ACK would land in CLOSE and expire after
    /// 10 s. A flow we have not seen (a director that just took over, or an entry lost to LRU
    /// eviction) is live traffic, so a plain ACK starts it as ESTABLISHED; SYN, FIN and RST
    /// follow the table from NONE.
    #[inline(always)]
    pub fn first_tcp(flags: TcpFlags) -> ConnState {
        let f = flags.0;
        if f & (TcpFlags::SYN | TcpFlags::FIN | TcpFlags::RST) == 0 && f & TcpFlags::ACK != 0 {
            ES
        } else {
            ConnState::None.next_tcp(flags)
        }
    }

    /// Decodes a stored state; unknown values read as CLOSE.
    #[inline(always)]
    pub const fn from_u8(v: u8) -> ConnState {
        match v {
            0 => ConnState::None,
            1 => ES,
            2 => SS,
            3 => SR,
            4 => FW,
            5 => TW,
            6 => CL,
            7 => CW,
            8 => LA,
            9 => LI,
            10 => SA,
            11 => ConnState::Udp,
            _ => CL,
        }
    }

    /// The name IPVS prints for this state (`ipvsadm -L -c`).
    pub const fn name(self) -> &'static str {
        match self {
            ConnState::None => "NONE",
            ES => "ESTABLISHED",
            SS => "SYN_SENT",
            SR => "SYN_RECV",
            FW => "FIN_WAIT",
            TW => "TIME_WAIT",
            CL => "CLOSE",
            CW => "CLOSE_WAIT",
            LA => "LAST_ACK",
            LI => "LISTEN",
            SA => "SYNACK",
            ConnState::Udp => "UDP",
        }
    }

    /// Whether IPVS counts this state as ActiveConn (only ESTABLISHED is).
    pub const fn is_active(self) -> bool {
        matches!(self, ES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYN: TcpFlags = TcpFlags(TcpFlags::SYN);
    const ACK: TcpFlags = TcpFlags(TcpFlags::ACK);
    const FIN_ACK: TcpFlags = TcpFlags(TcpFlags::FIN | TcpFlags::ACK);
    const RST: TcpFlags = TcpFlags(TcpFlags::RST);

    #[test]
    fn handshake_data_close() {
        let s = ConnState::first_tcp(SYN);
        assert_eq!(s, SR);
        let s = s.next_tcp(ACK);
        assert_eq!(s, ES);
        let s = s.next_tcp(TcpFlags(TcpFlags::ACK | TcpFlags::PSH));
        assert_eq!(s, ES);
        let s = s.next_tcp(FIN_ACK);
        assert_eq!(s, FW);
        assert_eq!(s.next_tcp(ACK), FW);
    }

    #[test]
    fn rst_and_flagless() {
        assert_eq!(ES.next_tcp(RST), CL);
        assert_eq!(SR.next_tcp(RST), SR, "IPVS keeps SYN_RECV on RST");
        assert_eq!(ES.next_tcp(TcpFlags(0)), CL);
        assert_eq!(ConnState::first_tcp(RST), CL);
        assert_eq!(ConnState::first_tcp(FIN_ACK), CL);
    }

    #[test]
    fn mid_flow_pickup_is_established() {
        assert_eq!(ConnState::first_tcp(ACK), ES);
        assert_eq!(
            ConnState::first_tcp(TcpFlags(TcpFlags::ACK | TcpFlags::PSH)),
            ES
        );
    }

    #[test]
    fn new_syn_detection() {
        assert!(SYN.is_new_syn());
        assert!(!TcpFlags(TcpFlags::SYN | TcpFlags::ACK).is_new_syn());
        assert!(!ACK.is_new_syn());
    }

    #[test]
    fn names_and_decoding_round_trip() {
        for v in 0..ConnState::COUNT as u8 {
            assert_eq!(ConnState::from_u8(v) as u8, v);
        }
        assert_eq!(ConnState::from_u8(99), CL);
        assert_eq!(ES.name(), "ESTABLISHED");
        assert_eq!(ConnState::Udp.name(), "UDP");
        assert!(ES.is_active() && !FW.is_active());
    }
}
