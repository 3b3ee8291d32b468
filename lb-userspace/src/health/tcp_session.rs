//! The client side of one TCP connection, as a pure state machine: segments in, segments out.
//!
//! The checks that follow the data path ([`super::vip_stream`]) open their connection to
//! VIP:port themselves, over a packet socket, because the director's kernel cannot: it holds
//! the VIP (or routes it to the active director). This is the little TCP such a check needs:
//! one connection, one request, one response, then a FIN. It acknowledges every segment at
//! once, keeps only in-order data (anything else is acknowledged again, so the server resends),
//! resends unacknowledged data when told to, and sends no options (so the server sends at most
//! [`DEFAULT_MSS`] bytes per segment, which is plenty for a health check). No I/O happens here:
//! [`super::vip_stream`] moves the segments.

use std::collections::VecDeque;

/// The segment size both sides use when neither sends an MSS option (RFC 9293).
pub const DEFAULT_MSS: usize = 536;
/// The receive window advertised (no window scaling).
pub const WINDOW: u16 = u16::MAX;

/// TCP flag FIN.
pub const FIN: u8 = 0x01;
/// TCP flag SYN.
pub const SYN: u8 = 0x02;
/// TCP flag RST.
pub const RST: u8 = 0x04;
/// TCP flag PSH.
pub const PSH: u8 = 0x08;
/// TCP flag ACK.
pub const ACK: u8 = 0x10;

/// One TCP segment, as far as this connection cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number (meaningful with [`ACK`]).
    pub ack: u32,
    /// Flags.
    pub flags: u8,
    /// The data.
    pub payload: Vec<u8>,
}

impl Segment {
    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// Where the connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// SYN sent, no answer yet.
    SynSent,
    /// Handshake done.
    Established,
    /// The server answered the SYN with a RST.
    Refused,
    /// The server reset the established connection.
    Reset,
}

/// The client's side of one connection.
#[derive(Debug)]
pub struct Session {
    state: State,
    isn: u32,
    /// Oldest byte sent and not acknowledged.
    snd_una: u32,
    /// Next sequence number to send.
    snd_nxt: u32,
    /// Next sequence number expected from the server.
    rcv_nxt: u32,
    /// Bytes sent and not yet acknowledged, from `snd_una`.
    unacked: VecDeque<u8>,
    /// Our FIN has been sent (it occupies the sequence number after the data).
    fin_sent: bool,
    /// Received in order and not yet read.
    received: VecDeque<u8>,
    /// The server's FIN has arrived (after all of its data).
    fin_received: bool,
}

impl Session {
    /// A connection whose SYN carries `isn`.
    pub fn new(isn: u32) -> Self {
        Self {
            state: State::SynSent,
            isn,
            snd_una: isn,
            snd_nxt: isn.wrapping_add(1),
            rcv_nxt: 0,
            unacked: VecDeque::new(),
            fin_sent: false,
            received: VecDeque::new(),
            fin_received: false,
        }
    }

    /// Where the connection is.
    pub fn state(&self) -> State {
        self.state
    }

    /// The SYN (sent first, and again while no answer comes).
    pub fn syn(&self) -> Segment {
        Segment {
            seq: self.isn,
            ack: 0,
            flags: SYN,
            payload: Vec::new(),
        }
    }

    /// Takes one segment from the server; what to answer, if anything.
    pub fn receive(&mut self, seg: &Segment) -> Option<Segment> {
        match self.state {
            State::SynSent => self.receive_handshake(seg),
            State::Established => self.receive_established(seg),
            State::Refused | State::Reset => None,
        }
    }

    fn receive_handshake(&mut self, seg: &Segment) -> Option<Segment> {
        // Only an answer to our SYN counts.
        if !seg.has(ACK) || seg.ack != self.snd_nxt {
            return None;
        }
        if seg.has(RST) {
            self.state = State::Refused;
            return None;
        }
        if !seg.has(SYN) {
            return None;
        }
        self.state = State::Established;
        self.snd_una = self.snd_nxt;
        self.rcv_nxt = seg.seq.wrapping_add(1);
        Some(self.ack())
    }

    fn receive_established(&mut self, seg: &Segment) -> Option<Segment> {
        if seg.has(RST) {
            // RFC 5961: only a reset at the expected sequence number ends the connection.
            if seg.seq == self.rcv_nxt {
                self.state = State::Reset;
            }
            return None;
        }
        if seg.has(SYN) {
            // The SYN-ACK again: our ACK was lost.
            return Some(self.ack());
        }
        if seg.has(ACK) {
            self.acknowledged(seg.ack);
        }
        let in_order = self.take_in_order(seg);
        let fin_end = seg.seq.wrapping_add(seg.payload.len() as u32);
        if seg.has(FIN) && in_order && fin_end == self.rcv_nxt && !self.fin_received {
            self.fin_received = true;
            self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
        }
        // Data, a FIN, or something out of order: say where we are.
        let occupies = !seg.payload.is_empty() || seg.has(FIN);
        occupies.then(|| self.ack())
    }

    /// Keeps the part of `seg`'s data that continues the stream; false if none of it could.
    fn take_in_order(&mut self, seg: &Segment) -> bool {
        let already = self.rcv_nxt.wrapping_sub(seg.seq) as usize;
        // A segment that starts ahead of us (a gap) wraps to a huge offset: not in order.
        if already > seg.payload.len() {
            return false;
        }
        let new = &seg.payload[already..];
        self.received.extend(new);
        self.rcv_nxt = self.rcv_nxt.wrapping_add(new.len() as u32);
        true
    }

    fn acknowledged(&mut self, ack: u32) {
        let advance = ack.wrapping_sub(self.snd_una);
        let outstanding = self.snd_nxt.wrapping_sub(self.snd_una);
        if advance == 0 || advance > outstanding {
            return;
        }
        let data = (advance as usize).min(self.unacked.len());
        self.unacked.drain(..data);
        self.snd_una = ack;
    }

    /// Queues `data` and returns the segments that carry it.
    pub fn send(&mut self, data: &[u8]) -> Vec<Segment> {
        let seq = self.snd_nxt;
        self.unacked.extend(data);
        self.snd_nxt = self.snd_nxt.wrapping_add(data.len() as u32);
        self.data_segments(seq, data)
    }

    /// Ends our side: the FIN.
    pub fn close(&mut self) -> Segment {
        if !self.fin_sent {
            self.fin_sent = true;
            self.snd_nxt = self.snd_nxt.wrapping_add(1);
        }
        self.fin()
    }

    fn fin(&self) -> Segment {
        Segment {
            seq: self.snd_nxt.wrapping_sub(1),
            ack: self.rcv_nxt,
            flags: FIN | ACK,
            payload: Vec::new(),
        }
    }

    /// Everything sent and not acknowledged, again (data, then our FIN).
    pub fn resend(&self) -> Vec<Segment> {
        let data: Vec<u8> = self.unacked.iter().copied().collect();
        let mut out = self.data_segments(self.snd_una, &data);
        if self.fin_sent && self.snd_una != self.snd_nxt {
            out.push(self.fin());
        }
        out
    }

    /// Whether anything sent awaits its acknowledgement.
    pub fn outstanding(&self) -> bool {
        self.state == State::Established && self.snd_una != self.snd_nxt
    }

    fn data_segments(&self, seq: u32, data: &[u8]) -> Vec<Segment> {
        data.chunks(DEFAULT_MSS)
            .scan(seq, |seq, chunk| {
                let seg = Segment {
                    seq: *seq,
                    ack: self.rcv_nxt,
                    flags: ACK | PSH,
                    payload: chunk.to_vec(),
                };
                *seq = seq.wrapping_add(chunk.len() as u32);
                Some(seg)
            })
            .collect()
    }

    fn ack(&self) -> Segment {
        Segment {
            seq: self.snd_nxt,
            ack: self.rcv_nxt,
            flags: ACK,
            payload: Vec::new(),
        }
    }

    /// Moves received data into `buf`; how much.
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.received.len());
        for (dst, src) in buf.iter_mut().zip(self.received.drain(..n)) {
            *dst = src;
        }
        n
    }

    /// Whether unread data is waiting.
    pub fn readable(&self) -> bool {
        !self.received.is_empty()
    }

    /// The server has sent everything it will (its FIN came and all data before it was read).
    pub fn at_end(&self) -> bool {
        self.fin_received && self.received.is_empty()
    }

    /// Both sides have closed and the server has acknowledged our FIN: nothing is left to
    /// clean up.
    pub fn closed(&self) -> bool {
        self.fin_received && self.fin_sent && self.snd_una == self.snd_nxt
    }

    /// The RST that makes the server forget the connection.
    pub fn reset(&self) -> Segment {
        Segment {
            seq: self.snd_nxt,
            ack: 0,
            flags: RST,
            payload: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Segment {
        Segment {
            seq,
            ack,
            flags,
            payload: payload.to_vec(),
        }
    }

    /// A session past its handshake: ours starts at 1001, the server's at 5001.
    fn established() -> Session {
        let mut s = Session::new(1000);
        let ack = s.receive(&seg(5000, 1001, SYN | ACK, b""));
        assert_eq!(ack, Some(seg(1001, 5001, ACK, b"")));
        assert_eq!(s.state(), State::Established);
        s
    }

    #[test]
    fn the_handshake_needs_an_answer_to_our_syn() {
        let mut s = Session::new(u32::MAX);
        assert_eq!(s.syn(), seg(u32::MAX, 0, SYN, b""));
        // Acknowledging something else, or no SYN: ignored.
        assert_eq!(s.receive(&seg(5000, 7, SYN | ACK, b"")), None);
        assert_eq!(s.receive(&seg(5000, 0, ACK, b"")), None);
        assert_eq!(s.state(), State::SynSent);
        // The sequence number wraps.
        assert_eq!(
            s.receive(&seg(5000, 0, SYN | ACK, b"")).map(|a| a.seq),
            Some(0)
        );
        assert_eq!(s.state(), State::Established);
    }

    #[test]
    fn a_reset_answering_the_syn_is_refused() {
        let mut s = Session::new(1000);
        assert_eq!(s.receive(&seg(0, 999, RST | ACK, b"")), None);
        assert_eq!(s.state(), State::SynSent, "a reset for another SYN");
        s.receive(&seg(0, 1001, RST | ACK, b""));
        assert_eq!(s.state(), State::Refused);
    }

    #[test]
    fn data_goes_out_in_segments_and_is_resent_until_acknowledged() {
        let mut s = established();
        let request = vec![b'x'; DEFAULT_MSS + 10];
        let out = s.send(&request);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].seq, out[0].payload.len()), (1001, DEFAULT_MSS));
        assert_eq!((out[1].seq, out[1].payload.len()), (1001 + 536, 10));
        assert!(out.iter().all(|o| o.flags == ACK | PSH && o.ack == 5001));
        assert!(s.outstanding());
        // The first segment is acknowledged: only the second is resent.
        s.receive(&seg(5001, 1001 + 536, ACK, b""));
        let again = s.resend();
        assert_eq!(again, vec![out[1].clone()]);
        // An old or impossible acknowledgement changes nothing.
        s.receive(&seg(5001, 1001, ACK, b""));
        s.receive(&seg(5001, 9999, ACK, b""));
        assert_eq!(s.resend(), vec![out[1].clone()]);
        s.receive(&seg(5001, 1001 + 546, ACK, b""));
        assert!(!s.outstanding());
        assert!(s.resend().is_empty());
    }

    #[test]
    fn in_order_data_is_kept_and_everything_is_acknowledged() {
        let mut s = established();
        assert_eq!(
            s.receive(&seg(5001, 1001, ACK, b"HTTP/1.0")),
            Some(seg(1001, 5009, ACK, b""))
        );
        // A gap: nothing kept, our position said again.
        assert_eq!(
            s.receive(&seg(5020, 1001, ACK, b"later")),
            Some(seg(1001, 5009, ACK, b""))
        );
        // A retransmission overlapping what we have: only the new part is kept.
        s.receive(&seg(5005, 1001, ACK, b"/1.0 200"));
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf);
        assert_eq!(&buf[..n], b"HTTP/1.0 200");
        assert!(!s.readable());
        // A pure ACK is not answered.
        assert_eq!(s.receive(&seg(5013, 1001, ACK, b"")), None);
    }

    #[test]
    fn the_servers_fin_ends_the_stream_after_its_data() {
        let mut s = established();
        // A FIN beyond a gap does not count.
        s.receive(&seg(5005, 1001, FIN | ACK, b""));
        assert!(!s.at_end());
        assert_eq!(
            s.receive(&seg(5001, 1001, FIN | ACK | PSH, b"done")),
            Some(seg(1001, 5006, ACK, b""))
        );
        assert!(!s.at_end(), "data is still unread");
        let mut buf = [0u8; 8];
        assert_eq!(s.read(&mut buf), 4);
        assert!(s.at_end());
        // The FIN again (our ACK was lost): acknowledged again, counted once.
        assert_eq!(
            s.receive(&seg(5005, 1001, FIN | ACK, b"")),
            Some(seg(1001, 5006, ACK, b""))
        );
        assert!(!s.closed(), "our side is open");
        assert_eq!(s.close(), seg(1001, 5006, FIN | ACK, b""));
        assert_eq!(s.resend(), vec![seg(1001, 5006, FIN | ACK, b"")]);
        s.receive(&seg(5006, 1002, ACK, b""));
        assert!(s.closed());
        assert!(s.resend().is_empty());
    }

    #[test]
    fn only_a_reset_in_sequence_ends_the_connection() {
        let mut s = established();
        s.receive(&seg(4000, 0, RST, b""));
        assert_eq!(s.state(), State::Established, "a blind reset");
        s.receive(&seg(5001, 0, RST, b""));
        assert_eq!(s.state(), State::Reset);
        assert_eq!(s.reset(), seg(1001, 0, RST, b""));
    }
}
