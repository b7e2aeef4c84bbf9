//! Counters the application exports (the API turns them into Prometheus metrics; this
//! crate stays free of any metrics library). Plain relaxed atomics: they are read for
//! reporting only, never to make a protocol decision.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::session::{CloseReason, Transport};

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    websocket_sessions: AtomicU64,
    polling_sessions: AtomicU64,
    sessions_opened: AtomicU64,
    sockets: AtomicU64,
    events_received: AtomicU64,
    events_sent: AtomicU64,
    events_held: AtomicU64,
    connects_ignored: AtomicU64,
    closed: [AtomicU64; CloseReason::ALL.len()],
}

/// A reading of the server's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Engine.IO sessions currently on WebSocket.
    pub websocket_sessions: u64,
    /// Engine.IO sessions currently on long-polling (including those upgrading).
    pub polling_sessions: u64,
    /// Engine.IO sessions opened since start.
    pub sessions_opened_total: u64,
    /// Sockets (namespace connections) currently connected.
    pub sockets: u64,
    /// Socket.IO events received from clients since start.
    pub events_received_total: u64,
    /// Socket.IO events and acks queued to clients since start (a broadcast counts once
    /// per recipient).
    pub events_sent_total: u64,
    /// Events that waited because their socket had `max_inflight_events` handlers
    /// running.
    pub events_held_total: u64,
    /// CONNECTs answered without asking the application: one for the same namespace was
    /// pending or connected on the session (ignored), or had been refused (refused
    /// again).
    pub connects_ignored_total: u64,
    /// Sessions ended since start, by reason, in [`CloseReason::ALL`] order.
    pub sessions_closed_total: [(CloseReason, u64); CloseReason::ALL.len()],
}

impl Metrics {
    fn gauge(&self, transport: Transport) -> &AtomicU64 {
        match transport {
            Transport::WebSocket => &self.websocket_sessions,
            Transport::Polling => &self.polling_sessions,
        }
    }

    pub fn session_opened(&self, transport: Transport) {
        self.sessions_opened.fetch_add(1, Ordering::Relaxed);
        self.gauge(transport).fetch_add(1, Ordering::Relaxed);
    }

    pub fn session_closed(&self, transport: Transport, reason: CloseReason) {
        self.gauge(transport).fetch_sub(1, Ordering::Relaxed);
        self.closed[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn event_held(&self) {
        self.events_held.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connect_ignored(&self) {
        self.connects_ignored.fetch_add(1, Ordering::Relaxed);
    }

    pub fn session_upgraded(&self) {
        self.polling_sessions.fetch_sub(1, Ordering::Relaxed);
        self.websocket_sessions.fetch_add(1, Ordering::Relaxed);
    }

    pub fn socket_connected(&self) {
        self.sockets.fetch_add(1, Ordering::Relaxed);
    }

    pub fn socket_disconnected(&self) {
        self.sockets.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn event_received(&self) {
        self.events_received.fetch_add(1, Ordering::Relaxed);
    }

    pub fn events_sent(&self, n: u64) {
        self.events_sent.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            websocket_sessions: self.websocket_sessions.load(Ordering::Relaxed),
            polling_sessions: self.polling_sessions.load(Ordering::Relaxed),
            sessions_opened_total: self.sessions_opened.load(Ordering::Relaxed),
            sockets: self.sockets.load(Ordering::Relaxed),
            events_received_total: self.events_received.load(Ordering::Relaxed),
            events_sent_total: self.events_sent.load(Ordering::Relaxed),
            events_held_total: self.events_held.load(Ordering::Relaxed),
            connects_ignored_total: self.connects_ignored.load(Ordering::Relaxed),
            sessions_closed_total: CloseReason::ALL
                .map(|reason| (reason, self.closed[reason as usize].load(Ordering::Relaxed))),
        }
    }
}
