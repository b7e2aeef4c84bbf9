//! How many client connections the gateway holds: at most `max_connections` in all and
//! `max_connections_per_ip` from one address (an IPv6 client: its /64).
//!
//! A connection is admitted with a [`Slot`], given back when the connection ends. When
//! the total is reached, a new client is still served: the connection that has waited
//! longest for its next request (an idle keep-alive connection) is told to close, and
//! the newcomer takes its place. Only when no connection is idle is a newcomer refused
//! (closed at once). An address at its own cap is refused whatever the total. Every
//! refusal and eviction is counted.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::metrics::Metrics;

/// An address as the per-address cap counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    V4(u32),
    /// The first 64 bits: one subscriber's block.
    V6(u64),
}

impl From<IpAddr> for Client {
    fn from(ip: IpAddr) -> Client {
        match ip {
            IpAddr::V4(v4) => Client::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Client::V4(u32::from(v4)),
                None => Client::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections` reached and no connection idle.
    Full,
    /// `max_connections_per_ip` reached for its address.
    PerIp,
}

impl Refused {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refused::Full => "max_connections",
            Refused::PerIp => "max_connections_per_ip",
        }
    }
}

#[derive(Default)]
struct State {
    per_client: HashMap<Client, usize>,
    /// Connections waiting for their next request, by when they began to wait: the
    /// longest waiting is told to close when a newcomer needs the room.
    idle: BTreeMap<u64, Arc<Notify>>,
}

pub struct Gate {
    open: AtomicUsize,
    /// Orders idle periods.
    next_idle: AtomicU64,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
}

impl Gate {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Gate> {
        Arc::new(Gate {
            open: AtomicUsize::new(0),
            next_idle: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            metrics,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections held now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Admit a connection from `ip` under the current limits.
    pub fn admit(self: &Arc<Gate>, ip: IpAddr, max: usize, per_ip: usize) -> Result<Slot, Refused> {
        let client = Client::from(ip);
        let mut state = self.state();
        let from_client = state.per_client.get(&client).copied().unwrap_or(0);
        if from_client >= per_ip {
            drop(state);
            self.metrics.connection_refused(Refused::PerIp.label());
            return Err(Refused::PerIp);
        }
        if self.open.load(Ordering::Relaxed) >= max {
            // The longest-idle connection makes room; it leaves the idle set now, so two
            // newcomers never evict the same one.
            match state.idle.pop_first() {
                Some((_, close)) => {
                    close.notify_one();
                    self.metrics.connection_evicted();
                }
                None => {
                    drop(state);
                    self.metrics.connection_refused(Refused::Full.label());
                    return Err(Refused::Full);
                }
            }
        }
        *state.per_client.entry(client).or_insert(0) += 1;
        drop(state);
        self.open.fetch_add(1, Ordering::Relaxed);
        self.metrics.connection_opened();
        Ok(Slot {
            gate: Arc::clone(self),
            client,
            close: Arc::new(Notify::new()),
        })
    }
}

/// One admitted connection; dropping it gives its place back.
pub struct Slot {
    gate: Arc<Gate>,
    client: Client,
    close: Arc<Notify>,
}

impl Slot {
    /// While the returned guard lives the connection is idle (waiting for a request):
    /// a newcomer may need its place, and [`Idle::evicted`] then resolves.
    pub fn idle(&self) -> Idle<'_> {
        let since = self.gate.next_idle.fetch_add(1, Ordering::Relaxed);
        self.gate
            .state()
            .idle
            .insert(since, Arc::clone(&self.close));
        Idle { slot: self, since }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.gate.state();
        if let Some(n) = state.per_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                state.per_client.remove(&self.client);
            }
        }
        drop(state);
        self.gate.open.fetch_sub(1, Ordering::Relaxed);
        self.gate.metrics.connection_closed();
    }
}

/// A connection waiting for its next request.
pub struct Idle<'a> {
    slot: &'a Slot,
    since: u64,
}

impl Idle<'_> {
    /// Resolves when the gate needs this connection's place.
    pub async fn evicted(&self) {
        self.slot.close.notified().await
    }
}

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        self.slot.gate.state().idle.remove(&self.since);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> Arc<Gate> {
        Gate::new(Arc::new(Metrics::new().unwrap_or_else(|e| panic!("{e}"))))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn an_address_at_its_cap_is_refused_and_others_are_not() {
        let g = gate();
        let held: Vec<Slot> = (0..3)
            .map(|_| g.admit(ip("10.0.0.1"), 100, 3).unwrap())
            .collect();
        assert_eq!(g.admit(ip("10.0.0.1"), 100, 3).err(), Some(Refused::PerIp));
        assert!(g.admit(ip("10.0.0.2"), 100, 3).is_ok());
        assert_eq!(g.open(), 3);
        drop(held);
        let again = g.admit(ip("10.0.0.1"), 100, 3);
        assert!(again.is_ok());
        assert_eq!(g.open(), 1);
    }

    #[test]
    fn an_ipv6_subscriber_is_one_address() {
        let g = gate();
        let _a = g.admit(ip("2001:db8:1:2::1"), 100, 2).unwrap();
        let _b = g.admit(ip("2001:db8:1:2::ffff"), 100, 2).unwrap();
        assert_eq!(
            g.admit(ip("2001:db8:1:2:3::9"), 100, 2).err(),
            Some(Refused::PerIp)
        );
        assert!(g.admit(ip("2001:db8:1:3::1"), 100, 2).is_ok());
        assert_eq!(
            Client::from(ip("::ffff:10.0.0.1")),
            Client::from(ip("10.0.0.1"))
        );
    }

    #[tokio::test]
    async fn when_full_the_longest_idle_connection_makes_room_and_a_busy_one_never_does() {
        let g = gate();
        let first = g.admit(ip("10.0.0.1"), 2, 10).unwrap();
        let second = g.admit(ip("10.0.0.2"), 2, 10).unwrap();
        // Both busy: a newcomer is refused.
        assert_eq!(g.admit(ip("10.0.0.3"), 2, 10).err(), Some(Refused::Full));
        let idle_second = second.idle();
        let idle_first = first.idle();
        // Both idle: the one idle longest is told to close.
        let newcomer = g.admit(ip("10.0.0.3"), 2, 10).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), idle_second.evicted())
            .await
            .unwrap_or_else(|_| panic!("the longest idle connection was not told"));
        // It no longer counts as idle: the next newcomer takes the other one.
        let later = g.admit(ip("10.0.0.4"), 2, 10).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), idle_first.evicted())
            .await
            .unwrap_or_else(|_| panic!("the other idle connection was not told"));
        drop((idle_first, idle_second));
        drop((first, second, newcomer, later));
        assert_eq!(g.open(), 0);
    }
}
