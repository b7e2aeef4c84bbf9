//! The Socket.IO server's counters (`btp_sio::MetricsSnapshot`) as Prometheus metrics,
//! read at scrape time. Every labelled family is exported with all its label values
//! from the first scrape.

use btp_sio::{CloseReason, Server};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

use super::Peer;
use crate::metrics::counter_vec;

pub(super) struct SocketCollector {
    server: Server<Peer>,
    sessions: IntGaugeVec,
    sockets: IntGauge,
    events_in: IntCounter,
    events_out: IntCounter,
    events_held: IntCounter,
    connects_ignored: IntCounter,
    closed: IntCounterVec,
    descs: Vec<Desc>,
}

impl SocketCollector {
    pub(super) fn new(server: Server<Peer>) -> Result<SocketCollector, prometheus::Error> {
        let sessions = IntGaugeVec::new(
            Opts::new("realtime_sessions", "Engine.IO sessions open, by transport"),
            &["transport"],
        )?;
        for transport in ["websocket", "polling"] {
            sessions.with_label_values(&[transport]);
        }
        let sockets = IntGauge::new("realtime_sockets", "Socket.IO sockets connected")?;
        let events_in = IntCounter::new(
            "realtime_events_received_total",
            "Socket.IO events received from clients",
        )?;
        let events_out = IntCounter::new(
            "realtime_events_sent_total",
            "Socket.IO events and acks queued to clients (a broadcast counts per recipient)",
        )?;
        let events_held = IntCounter::new(
            "realtime_events_held_total",
            "Events that waited because their socket had realtime.max_inflight_events handlers running",
        )?;
        let connects_ignored = IntCounter::new(
            "realtime_connects_ignored_total",
            "CONNECTs answered without a token lookup (one pending, connected or refused on the session)",
        )?;
        let reasons: Vec<&str> = CloseReason::ALL.iter().map(|r| r.as_str()).collect();
        let closed = counter_vec(
            "realtime_sessions_closed_total",
            "Engine.IO sessions ended, by reason (\"buffer full\": realtime.max_buffered_bytes)",
            &["reason"],
            &[&reasons],
        )?;
        let descs = [
            sessions.desc(),
            sockets.desc(),
            events_in.desc(),
            events_out.desc(),
            events_held.desc(),
            connects_ignored.desc(),
            closed.desc(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        Ok(SocketCollector {
            server,
            sessions,
            sockets,
            events_in,
            events_out,
            events_held,
            connects_ignored,
            closed,
            descs,
        })
    }
}

/// Moves a counter up to `total` (the server's counters only grow).
fn catch_up(counter: &IntCounter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

impl Collector for SocketCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let m = self.server.metrics();
        self.sessions
            .with_label_values(&["websocket"])
            .set(m.websocket_sessions as i64);
        self.sessions
            .with_label_values(&["polling"])
            .set(m.polling_sessions as i64);
        self.sockets.set(m.sockets as i64);
        catch_up(&self.events_in, m.events_received_total);
        catch_up(&self.events_out, m.events_sent_total);
        catch_up(&self.events_held, m.events_held_total);
        catch_up(&self.connects_ignored, m.connects_ignored_total);
        for (reason, total) in m.sessions_closed_total {
            catch_up(&self.closed.with_label_values(&[reason.as_str()]), total);
        }
        let mut families = self.sessions.collect();
        families.extend(self.sockets.collect());
        families.extend(self.events_in.collect());
        families.extend(self.events_out.collect());
        families.extend(self.events_held.collect());
        families.extend(self.connects_ignored.collect());
        families.extend(self.closed.collect());
        families
    }
}
