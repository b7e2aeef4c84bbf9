//! The Engine.IO v4 session state machine, sans IO: heartbeat, long-polling request rules,
//! the polling → WebSocket upgrade, the claim (Socket.IO connect) timeout, and the outbox.
//!
//! Everything here is synchronous and takes the current time as an argument, so every
//! rule is unit-testable without sockets or clocks. The IO layer holds one
//! [`SessionState`] per session behind a mutex, feeds it packets and timer ticks, and
//! moves [`Frame`]s from its outbox to whichever transport is current.
//!
//! Heartbeat as in the Node reference server: the first ping goes out one
//! `ping_interval` after the handshake, the next one `ping_interval` after each pong, and
//! the session closes when no pong arrives within `ping_timeout` of a ping.
//!
//! The outbox is bounded ([`Timing::max_buffered`]): a client that asks for answers and
//! never reads them (no polling GET, a WebSocket it does not drain) would otherwise make
//! the server hold every answer — 300 pulls of 1 MB held 944 MB before this bound. A
//! packet is always taken by an empty outbox, so one answer larger than the bound still
//! goes out; otherwise a packet that would take the queued bytes past the bound ends the
//! session ([`CloseReason::BufferFull`]). The batch a WebSocket is writing at that moment
//! is not counted: it was taken under the same rule, so a session holds at most two
//! batches, one in the socket's writer and one queued.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::packet::{frames, Frame, Message, Packet};

/// The transport a session currently talks over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Polling,
    WebSocket,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Polling => "polling",
            Transport::WebSocket => "websocket",
        }
    }
}

/// Why a session ended. The names match the Node server's close reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The client sent a `close` packet or a WebSocket close frame.
    ClientClose,
    /// The connection went away (EOF) without a close.
    TransportClose,
    /// A transport failure or a polling rule broken (two GETs or two POSTs in flight).
    TransportError,
    /// No pong within `ping_timeout` of a ping.
    PingTimeout,
    /// A malformed Engine.IO or Socket.IO packet.
    ParseError,
    /// A packet larger than `max_payload`.
    PayloadTooLarge,
    /// The application did not claim the session (no namespace joined) in time.
    ConnectTimeout,
    /// The application closed it.
    ServerClose,
    /// The server is shutting down.
    ServerShutdown,
    /// The client let more than `max_buffered` bytes of answers pile up unread.
    BufferFull,
}

impl CloseReason {
    /// Every reason, for exporting per-reason counters before the first close.
    pub const ALL: [CloseReason; 10] = [
        CloseReason::ClientClose,
        CloseReason::TransportClose,
        CloseReason::TransportError,
        CloseReason::PingTimeout,
        CloseReason::ParseError,
        CloseReason::PayloadTooLarge,
        CloseReason::ConnectTimeout,
        CloseReason::ServerClose,
        CloseReason::ServerShutdown,
        CloseReason::BufferFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClose => "client close",
            CloseReason::TransportClose => "transport close",
            CloseReason::TransportError => "transport error",
            CloseReason::PingTimeout => "ping timeout",
            CloseReason::ParseError => "parse error",
            CloseReason::PayloadTooLarge => "payload too large",
            CloseReason::ConnectTimeout => "connect timeout",
            CloseReason::ServerClose => "forced close",
            CloseReason::ServerShutdown => "server shutting down",
            CloseReason::BufferFull => "buffer full",
        }
    }

    /// The packet a pending long-polling GET receives when the session ends: a client
    /// that closed gets `noop` (it is not waiting for anything), every other end is
    /// announced with `close` so the client reconnects at once.
    fn final_frame(self) -> Frame {
        match self {
            CloseReason::ClientClose => frames::noop(),
            _ => frames::close(),
        }
    }
}

/// Heartbeat and timeout settings of one session.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// Close the session if the application has not claimed it within this time.
    pub claim_timeout: Option<Duration>,
    /// Most bytes of packets queued for the client (see the module doc): each packet
    /// counts its length plus [`PACKET_OVERHEAD`].
    pub max_buffered: usize,
}

/// What a queued packet costs beyond its bytes (its slot in the queue, the shared
/// buffer's header), so that a flood of empty packets is bounded too.
pub const PACKET_OVERHEAD: usize = 64;

/// A packet could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The session is closed.
    Closed,
    /// The packet would have taken the outbox past `max_buffered`: the outbox is
    /// dropped and the session must close with [`CloseReason::BufferFull`]
    /// ([`SessionState::overflowed`]). Returned once; later pushes get `Closed`.
    Full,
}

fn cost(frame: &Frame) -> usize {
    frame.len() + PACKET_OVERHEAD
}

/// A long-polling request that cannot proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollError {
    /// The session is closed.
    Closed,
    /// The session moved to WebSocket; polling requests are refused.
    Upgraded,
    /// A request of the same kind is already in flight: the session must close.
    Overlap,
}

/// An upgrade that cannot start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeError {
    Closed,
    NotPolling,
    AlreadyUpgrading,
    /// Anything but `2probe` then `5` on the probing WebSocket.
    UnexpectedPacket,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upgrade {
    None,
    /// A WebSocket with this sid is open; waiting for `2probe`.
    Attached,
    /// `3probe` sent; waiting for `5`.
    Probed,
}

/// The state of one Engine.IO session.
#[derive(Debug)]
pub struct SessionState {
    timing: Timing,
    transport: Transport,
    upgrade: Upgrade,
    outbox: VecDeque<Frame>,
    /// What the outbox holds, in [`cost`] units.
    queued: usize,
    /// A push did not fit: the session must close with [`CloseReason::BufferFull`]
    /// (its driver does it; the outbox is already freed).
    overflowed: bool,
    next_ping: Option<Instant>,
    pong_deadline: Option<Instant>,
    claim_deadline: Option<Instant>,
    closed: Option<CloseReason>,
    final_delivered: bool,
    get_in_flight: bool,
    post_in_flight: bool,
}

impl SessionState {
    /// A session whose handshake was sent at `now`.
    pub fn new(now: Instant, transport: Transport, timing: Timing) -> Self {
        SessionState {
            timing,
            transport,
            upgrade: Upgrade::None,
            outbox: VecDeque::new(),
            queued: 0,
            overflowed: false,
            next_ping: Some(now + timing.ping_interval),
            pong_deadline: None,
            claim_deadline: timing.claim_timeout.map(|t| now + t),
            closed: None,
            final_delivered: false,
            get_in_flight: false,
            post_in_flight: false,
        }
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.closed
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// The next instant [`SessionState::on_timer`] has work to do.
    pub fn deadline(&self) -> Option<Instant> {
        if self.closed.is_some() {
            return None;
        }
        [self.next_ping, self.pong_deadline, self.claim_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs the timers due at `now`: queues a ping, or returns the reason the session
    /// must now close (the caller closes it, so its close side effects run once).
    pub fn on_timer(&mut self, now: Instant) -> Option<CloseReason> {
        if self.closed.is_some() {
            return None;
        }
        if self.pong_deadline.is_some_and(|d| d <= now) {
            return Some(CloseReason::PingTimeout);
        }
        if self.claim_deadline.is_some_and(|d| d <= now) {
            return Some(CloseReason::ConnectTimeout);
        }
        if self.next_ping.is_some_and(|d| d <= now) {
            // Pings are not held to the bound: at most one per interval, and a client
            // that reads nothing is closed by the next answer or by its ping timeout.
            let ping = frames::ping();
            self.queued += cost(&ping);
            self.outbox.push_back(ping);
            self.next_ping = None;
            self.pong_deadline = Some(now + self.timing.ping_timeout);
        }
        None
    }

    /// Marks the session as claimed by the application (a namespace was joined), which
    /// cancels the claim timeout.
    pub fn claim(&mut self) {
        self.claim_deadline = None;
    }

    /// Applies a packet received on the session's current transport. Returns the
    /// application message it carried, or the reason the session must close.
    pub fn receive(
        &mut self,
        now: Instant,
        packet: Packet,
    ) -> Result<Option<Message>, CloseReason> {
        if self.closed.is_some() {
            return Ok(None);
        }
        match packet {
            Packet::Message(message) => Ok(Some(message)),
            Packet::Pong { probe: false } => {
                self.pong_deadline = None;
                self.next_ping = Some(now + self.timing.ping_interval);
                Ok(None)
            }
            Packet::Noop => Ok(None),
            Packet::Close => Err(CloseReason::ClientClose),
            // In v4 only the server pings; probes and upgrades belong to the probe
            // transport; clients never send `open`.
            Packet::Ping { .. } | Packet::Pong { probe: true } | Packet::Upgrade | Packet::Open => {
                Err(CloseReason::ParseError)
            }
        }
    }

    /// Queues a frame for the client.
    pub fn push(&mut self, frame: Frame) -> Result<(), PushError> {
        self.push_all([frame])
    }

    /// Queues several frames that must stay contiguous (a binary packet and its
    /// attachments): all of them, or none when the session is closed or they do not fit.
    pub fn push_all<I>(&mut self, frames: I) -> Result<(), PushError>
    where
        I: IntoIterator<Item = Frame>,
        I::IntoIter: Clone,
    {
        if self.closed.is_some() || self.overflowed {
            return Err(PushError::Closed);
        }
        let frames = frames.into_iter();
        let added: usize = frames.clone().map(|f| cost(&f)).sum();
        if self.queued > 0 && self.queued.saturating_add(added) > self.timing.max_buffered {
            self.overflowed = true;
            self.outbox = VecDeque::new();
            self.queued = 0;
            return Err(PushError::Full);
        }
        self.queued += added;
        self.outbox.extend(frames);
        Ok(())
    }

    /// Moves every queued frame into `into` (for the WebSocket writer).
    pub fn drain_into(&mut self, into: &mut VecDeque<Frame>) {
        self.queued = 0;
        if into.is_empty() {
            std::mem::swap(into, &mut self.outbox);
        } else {
            into.append(&mut self.outbox);
        }
    }

    /// What the outbox holds, in bytes plus [`PACKET_OVERHEAD`] per packet.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Whether a push overflowed the outbox: the session must now close with
    /// [`CloseReason::BufferFull`].
    pub fn overflowed(&self) -> bool {
        self.overflowed && self.closed.is_none()
    }

    pub fn has_output(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Ends the session. Returns false if it was already closed. Frames still queued
    /// stay for a pending GET when the server ends the session, so nothing it sent
    /// before closing is lost.
    pub fn close(&mut self, reason: CloseReason) -> bool {
        if self.closed.is_some() {
            return false;
        }
        self.closed = Some(reason);
        if reason == CloseReason::ClientClose {
            // Nobody waits for them.
            self.outbox = VecDeque::new();
            self.queued = 0;
        }
        self.next_ping = None;
        self.pong_deadline = None;
        self.claim_deadline = None;
        true
    }

    /// Starts a long-polling GET.
    pub fn begin_get(&mut self) -> Result<(), PollError> {
        self.check_polling()?;
        if self.get_in_flight {
            return Err(PollError::Overlap);
        }
        self.get_in_flight = true;
        Ok(())
    }

    /// Ends a long-polling GET (answered or abandoned by the client).
    pub fn end_get(&mut self) {
        self.get_in_flight = false;
    }

    /// Starts a long-polling POST.
    pub fn begin_post(&mut self) -> Result<(), PollError> {
        self.check_polling()?;
        if self.post_in_flight {
            return Err(PollError::Overlap);
        }
        self.post_in_flight = true;
        Ok(())
    }

    pub fn end_post(&mut self) {
        self.post_in_flight = false;
    }

    fn check_polling(&self) -> Result<(), PollError> {
        if self.closed.is_some() {
            return Err(PollError::Closed);
        }
        if self.transport == Transport::WebSocket {
            return Err(PollError::Upgraded);
        }
        Ok(())
    }

    /// What the pending GET answers now, or `None` to keep waiting.
    pub fn take_poll(&mut self) -> Option<Vec<Frame>> {
        if let Some(reason) = self.closed {
            if self.final_delivered {
                return Some(Vec::new());
            }
            self.final_delivered = true;
            self.queued = 0;
            let mut out: Vec<Frame> = self.outbox.drain(..).collect();
            out.push(reason.final_frame());
            return Some(out);
        }
        if self.transport == Transport::WebSocket {
            return Some(vec![frames::noop()]);
        }
        if !self.outbox.is_empty() {
            self.queued = 0;
            return Some(self.outbox.drain(..).collect());
        }
        if self.upgrade != Upgrade::None {
            // The client is switching to WebSocket: end its polls quickly.
            return Some(vec![frames::noop()]);
        }
        None
    }

    /// A WebSocket carrying this session's sid was opened.
    pub fn begin_upgrade(&mut self) -> Result<(), UpgradeError> {
        if self.closed.is_some() {
            return Err(UpgradeError::Closed);
        }
        if self.transport != Transport::Polling {
            return Err(UpgradeError::NotPolling);
        }
        if self.upgrade != Upgrade::None {
            return Err(UpgradeError::AlreadyUpgrading);
        }
        self.upgrade = Upgrade::Attached;
        Ok(())
    }

    /// Applies a packet received on the probing WebSocket. Returns the frame to answer
    /// on that WebSocket, `Ok(None)` when the upgrade completed, or `Err` when the
    /// upgrade must be abandoned (the session itself stays on polling).
    pub fn probe_packet(&mut self, packet: &Packet) -> Result<Option<Frame>, UpgradeError> {
        if self.closed.is_some() {
            return Err(UpgradeError::Closed);
        }
        match (self.upgrade, packet) {
            (Upgrade::Attached | Upgrade::Probed, Packet::Ping { probe: true }) => {
                self.upgrade = Upgrade::Probed;
                Ok(Some(frames::pong_probe()))
            }
            (Upgrade::Probed, Packet::Upgrade) => {
                self.upgrade = Upgrade::None;
                self.transport = Transport::WebSocket;
                Ok(None)
            }
            _ => Err(UpgradeError::UnexpectedPacket),
        }
    }

    /// The probing WebSocket went away before the upgrade completed.
    pub fn abort_upgrade(&mut self) {
        self.upgrade = Upgrade::None;
    }

    pub fn is_upgrading(&self) -> bool {
        self.upgrade != Upgrade::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const INTERVAL: Duration = Duration::from_millis(300);
    const TIMEOUT: Duration = Duration::from_millis(200);

    fn state(now: Instant, transport: Transport) -> SessionState {
        SessionState::new(
            now,
            transport,
            Timing {
                ping_interval: INTERVAL,
                ping_timeout: TIMEOUT,
                claim_timeout: Some(Duration::from_millis(1000)),
                max_buffered: MAX_BUFFERED,
            },
        )
    }

    const MAX_BUFFERED: usize = 1000;

    fn text(len: usize) -> Frame {
        Frame::Text(Bytes::from(vec![b'4'; len]))
    }

    #[test]
    fn close_reasons_are_listed_in_declaration_order() {
        for (i, reason) in CloseReason::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, i, "{reason:?}");
        }
    }

    #[test]
    fn an_unread_outbox_past_the_bound_overflows_once_and_is_dropped() {
        let mut s = state(Instant::now(), Transport::Polling);
        // Each packet costs its bytes plus the overhead: 3 × (236 + 64) = 900 fit.
        for _ in 0..3 {
            assert_eq!(s.push(text(236)), Ok(()));
        }
        assert_eq!(s.queued(), 900);
        assert_eq!(s.push(text(36)), Ok(()), "exactly the bound fits");
        assert_eq!(s.queued(), MAX_BUFFERED);
        assert!(!s.overflowed());
        assert_eq!(s.push(text(0)), Err(PushError::Full));
        assert!(s.overflowed());
        assert_eq!(s.queued(), 0, "what overflowed is freed at once");
        assert_eq!(s.push(text(1)), Err(PushError::Closed), "reported once");
        assert!(s.close(CloseReason::BufferFull));
        assert!(!s.overflowed());
        assert_eq!(s.take_poll(), Some(vec![frames::close()]));
    }

    #[test]
    fn an_empty_outbox_takes_one_packet_larger_than_the_bound() {
        let mut s = state(Instant::now(), Transport::WebSocket);
        assert_eq!(s.push(text(5000)), Ok(()));
        assert_eq!(s.push(text(1)), Err(PushError::Full));

        let mut s = state(Instant::now(), Transport::WebSocket);
        assert_eq!(s.push(text(5000)), Ok(()));
        let mut writing = VecDeque::new();
        s.drain_into(&mut writing);
        // The batch in the writer is not counted: the next answer is queued.
        assert_eq!(s.queued(), 0);
        assert_eq!(s.push(text(5000)), Ok(()));
        assert_eq!(s.push_all([text(10), text(10)]), Err(PushError::Full));
    }

    #[test]
    fn contiguous_frames_are_queued_all_or_none() {
        let mut s = state(Instant::now(), Transport::Polling);
        assert_eq!(s.push(text(100)), Ok(()));
        assert_eq!(s.push_all([text(400), text(400)]), Err(PushError::Full));
        s.close(CloseReason::ServerClose);
        assert_eq!(s.take_poll(), Some(vec![frames::close()]));
    }

    #[test]
    fn a_polled_or_drained_outbox_is_empty_again() {
        let mut s = state(Instant::now(), Transport::Polling);
        s.push(text(800)).unwrap();
        assert!(s.take_poll().is_some());
        assert_eq!(s.queued(), 0);
        s.push(text(800)).unwrap();
        s.push(text(72)).unwrap();
        assert_eq!(s.queued(), MAX_BUFFERED);
    }

    #[test]
    fn first_ping_is_one_interval_after_the_handshake() {
        let t0 = Instant::now();
        let mut s = state(t0, Transport::WebSocket);
        assert_eq!(s.deadline(), Some(t0 + INTERVAL));
        assert_eq!(s.on_timer(t0 + INTERVAL - Duration::from_millis(1)), None);
        assert!(!s.has_output());
        assert_eq!(s.on_timer(t0 + INTERVAL), None);
        let mut out = VecDeque::new();
        s.drain_into(&mut out);
        assert_eq!(out, VecDeque::from([frames::ping()]));
        assert_eq!(s.deadline(), Some(t0 + INTERVAL + TIMEOUT));
    }

    #[test]
    fn pong_schedules_the_next_ping_one_interval_later() {
        let t0 = Instant::now();
        let mut s = state(t0, Transport::WebSocket);
        s.claim();
        s.on_timer(t0 + INTERVAL);
        let t1 = t0 + INTERVAL + Duration::from_millis(50);
        assert_eq!(s.receive(t1, Packet::Pong { probe: false }), Ok(None));
        assert_eq!(s.deadline(), Some(t1 + INTERVAL));
    }

    #[test]
    fn missing_pong_closes_after_ping_timeout() {
        let t0 = Instant::now();
        let mut s = state(t0, Transport::WebSocket);
        s.claim();
        s.on_timer(t0 + INTERVAL);
        assert_eq!(
            s.on_timer(t0 + INTERVAL + TIMEOUT),
            Some(CloseReason::PingTimeout)
        );
        assert!(s.close(CloseReason::PingTimeout));
        assert!(!s.close(CloseReason::PingTimeout));
        assert_eq!(s.deadline(), None);
    }

    #[test]
    fn unclaimed_session_closes_after_claim_timeout() {
        let t0 = Instant::now();
        let mut s = state(t0, Transport::WebSocket);
        let closed_at = loop {
            let now = s.deadline().unwrap();
            if let Some(reason) = s.on_timer(now) {
                assert_eq!(reason, CloseReason::ConnectTimeout);
                break now;
            }
            s.receive(now, Packet::Pong { probe: false }).unwrap();
        };
        assert_eq!(closed_at, t0 + Duration::from_millis(1000));
    }

    #[test]
    fn client_ping_and_stray_upgrade_are_protocol_errors() {
        let now = Instant::now();
        let mut s = state(now, Transport::Polling);
        assert_eq!(
            s.receive(now, Packet::Ping { probe: false }),
            Err(CloseReason::ParseError)
        );
        assert_eq!(
            s.receive(now, Packet::Upgrade),
            Err(CloseReason::ParseError)
        );
        assert_eq!(s.receive(now, Packet::Close), Err(CloseReason::ClientClose));
        let msg = Message::Text(Bytes::from_static(b"x"));
        assert_eq!(s.receive(now, Packet::Message(msg.clone())), Ok(Some(msg)));
    }

    #[test]
    fn second_concurrent_get_or_post_is_an_overlap() {
        let mut s = state(Instant::now(), Transport::Polling);
        assert_eq!(s.begin_get(), Ok(()));
        assert_eq!(s.begin_get(), Err(PollError::Overlap));
        assert_eq!(s.begin_post(), Ok(()));
        assert_eq!(s.begin_post(), Err(PollError::Overlap));
        s.end_get();
        s.end_post();
        assert_eq!(s.begin_get(), Ok(()));
    }

    #[test]
    fn pending_get_gets_close_on_server_close_and_noop_on_client_close() {
        let mut s = state(Instant::now(), Transport::Polling);
        s.push(frames::ping()).unwrap();
        s.close(CloseReason::TransportError);
        assert_eq!(s.take_poll(), Some(vec![frames::ping(), frames::close()]));

        let mut s = state(Instant::now(), Transport::Polling);
        s.close(CloseReason::ClientClose);
        assert_eq!(s.take_poll(), Some(vec![frames::noop()]));
        assert_eq!(s.begin_get(), Err(PollError::Closed));
    }

    #[test]
    fn upgrade_needs_probe_then_upgrade_and_ends_polling() {
        let mut s = state(Instant::now(), Transport::Polling);
        assert_eq!(s.take_poll(), None);
        s.begin_upgrade().unwrap();
        assert_eq!(s.begin_upgrade(), Err(UpgradeError::AlreadyUpgrading));
        assert_eq!(s.take_poll(), Some(vec![frames::noop()]));
        assert_eq!(
            s.probe_packet(&Packet::Upgrade),
            Err(UpgradeError::UnexpectedPacket)
        );
        s.abort_upgrade();
        s.begin_upgrade().unwrap();
        assert_eq!(
            s.probe_packet(&Packet::Ping { probe: true }),
            Ok(Some(frames::pong_probe()))
        );
        assert_eq!(s.probe_packet(&Packet::Upgrade), Ok(None));
        assert_eq!(s.transport(), Transport::WebSocket);
        assert_eq!(s.begin_get(), Err(PollError::Upgraded));
        assert_eq!(s.begin_upgrade(), Err(UpgradeError::NotPolling));
    }
}
