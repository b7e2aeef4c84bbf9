//! The public listeners: the accept loops, the connection limits and the TLS handshake,
//! so that every connection is counted and under a deadline from its first instant.
//!
//! Each accepted connection is admitted by the [`Gate`] (`max_connections`,
//! `max_connections_per_ip`) or closed at once; a TLS connection must finish its
//! handshake within `header_timeout_ms` (Pingora's own listener allowed 60 s); then the
//! [`Edge`] serves it, HTTP/1 itself and HTTP/2 through Pingora. The listening sockets
//! are Pingora's to hand over in a binary upgrade, under the same keys Pingora's own
//! listeners used (the address), so an upgrade from a gateway that still had them works.
//!
//! Thread per core: `gateway.threads` shards, each an OS thread with its own
//! single-threaded runtime accepting on its own copy of every listening socket. A
//! connection lives on the shard that accepted it, with everything it waits on — its
//! socket, its upstream connections (pooled per shard: see `upstream::conns`), its
//! timers — so a proxied request is served by one thread from accept to answer, without
//! the cross-thread wake-ups of a shared work-stealing runtime (measured: bench/README).

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream};
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::{ServiceReadyNotifier, ServiceWithDependents};
use tokio::net::{TcpListener, TcpStream};

use super::gate::Gate;
use super::Edge;
use crate::live::Live;
use crate::metrics::Metrics;

/// Pending connections the kernel holds per listener (Pingora's own value).
const BACKLOG: u32 = 65535;

/// After `accept` fails for lack of descriptors, the next try waits this long (a failing
/// accept returns at once, and would spin).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The public listening sockets and what serves their connections.
pub struct Listen<A> {
    pub edge: Arc<Edge<A>>,
    pub plain: SocketAddr,
    pub tls: Option<(SocketAddr, Arc<Acceptor>)>,
    pub live: Live,
    pub gate: Arc<Gate>,
    pub metrics: Arc<Metrics>,
    pub threads: usize,
}

impl<A> Listen<A> {
    fn addresses(&self) -> Vec<SocketAddr> {
        std::iter::once(self.plain)
            .chain(self.tls.as_ref().map(|(addr, _)| *addr))
            .collect()
    }
}

/// The socket for `addr`: inherited from the previous process in a binary upgrade, else
/// bound now; either way recorded in Pingora's table for the next upgrade.
fn listener(addr: SocketAddr, fds: Option<&ListenFds>) -> std::io::Result<std::net::TcpListener> {
    let key = addr.to_string();
    if let Some(fd) = fds.and_then(|fds| fds.lock().get(&key).copied()) {
        tracing::info!(%addr, "listening socket inherited");
        // SAFETY: the descriptor arrived from the previous process through Pingora's
        // upgrade socket under our key; nothing else here owns it.
        return Ok(unsafe { std::net::TcpListener::from_raw_fd(fd) });
    }
    let listener = bind(addr, BACKLOG)?;
    if let Some(fds) = fds {
        fds.lock().add(key, listener.as_raw_fd());
    }
    Ok(listener)
}

#[async_trait]
impl<A> ServiceWithDependents for Listen<A>
where
    A: ServerApp + Send + Sync + 'static,
{
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        mut shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
        ready_notifier: ServiceReadyNotifier,
    ) {
        let mut sockets = Vec::new();
        for (addr, tls) in
            std::iter::once((self.plain, None)).chain(self.tls.clone().map(|(a, t)| (a, Some(t))))
        {
            match listener(addr, fds.as_ref()).and_then(|l| {
                l.set_nonblocking(true)?;
                Ok(l)
            }) {
                Ok(listener) => sockets.push((listener, tls)),
                Err(e) => {
                    // The addresses were checked at start: this is a lost race for one.
                    tracing::error!(%addr, error = %e, "cannot listen");
                    std::process::exit(1);
                }
            }
        }
        for shard in 0..self.threads.max(1) {
            if let Err(e) = self.start_shard(shard, &sockets, &shutdown) {
                tracing::error!(shard, error = %format!("{e:#}"), "cannot start a gateway thread");
                std::process::exit(1);
            }
        }
        ready_notifier.notify_ready();
        // The shards stop accepting on the same signal; their connections carry on until
        // the process exits, after Pingora's grace period, as they did on its runtime.
        while !*shutdown.borrow_and_update() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        self.edge.cleanup().await;
    }

    fn name(&self) -> &str {
        "btp public"
    }

    fn threads(&self) -> Option<usize> {
        // Only this service's start: connections are served by its shards.
        Some(1)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        // Claims the sockets in an upgrade, so Pingora keeps them open for us.
        Some(self.addresses().iter().map(|a| a.to_string()).collect())
    }
}

impl<A> Listen<A>
where
    A: ServerApp + Send + Sync + 'static,
{
    /// Start shard `shard`: a thread with its own runtime, accepting on its own copy of
    /// each of `sockets` until `shutdown`.
    fn start_shard(
        &self,
        shard: usize,
        sockets: &[(std::net::TcpListener, Option<Arc<Acceptor>>)],
        shutdown: &ShutdownWatch,
    ) -> anyhow::Result<()> {
        let copies = sockets
            .iter()
            .map(|(socket, tls)| Ok((socket.try_clone()?, tls.clone())))
            .collect::<std::io::Result<Vec<_>>>()
            .context("copying a listening socket")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building its runtime")?;
        let accepts: Vec<_> = copies
            .into_iter()
            .map(|(socket, tls)| {
                let accept = Accept {
                    edge: self.edge.clone(),
                    tls,
                    live: self.live.clone(),
                    gate: self.gate.clone(),
                    metrics: self.metrics.clone(),
                };
                (accept, socket, shutdown.clone())
            })
            .collect();
        std::thread::Builder::new()
            .name(format!("btp-edge-{shard}"))
            .spawn(move || {
                crate::upstream::conns::enter_shard(shard);
                runtime.block_on(async move {
                    for (accept, socket, shutdown) in accepts {
                        match TcpListener::from_std(socket) {
                            Ok(listener) => {
                                tokio::spawn(accept.run(listener, shutdown));
                            }
                            Err(e) => {
                                tracing::error!(shard, error = %e, "cannot accept");
                                std::process::exit(1);
                            }
                        }
                    }
                    // Serve the accepted connections until the process exits.
                    std::future::pending::<()>().await
                })
            })
            .context("starting its thread")?;
        Ok(())
    }
}

/// One listener's accept loop.
struct Accept<A> {
    edge: Arc<Edge<A>>,
    tls: Option<Arc<Acceptor>>,
    live: Live,
    gate: Arc<Gate>,
    metrics: Arc<Metrics>,
}

impl<A> Accept<A>
where
    A: ServerApp + Send + Sync + 'static,
{
    /// Accept until the server shuts down.
    async fn run(self, listener: TcpListener, mut shutdown: ShutdownWatch) {
        let this = Arc::new(self);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return;
                    }
                    continue;
                }
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let settings = &this.live.load().settings;
            let slot = match this.gate.admit(
                peer.ip(),
                settings.max_connections,
                settings.max_connections_per_ip,
            ) {
                Ok(slot) => slot,
                Err(refused) => {
                    tracing::debug!(%peer, limit = refused.label(), "connection refused");
                    continue;
                }
            };
            let handshake_limit = settings.header_timeout;
            let this = this.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let Some(io) = this.open(tcp, peer, handshake_limit).await else {
                    return;
                };
                this.edge.serve(io, &shutdown, &slot).await;
                drop(slot);
            });
        }
    }

    /// The connection as a stream for the edge: plain, or TLS once its handshake is
    /// done within `limit`.
    async fn open(&self, tcp: TcpStream, peer: SocketAddr, limit: Duration) -> Option<Stream> {
        // Requests and frames are small and latency-bound.
        let _ = tcp.set_nodelay(true);
        let mut l4 = L4Stream::from(tcp);
        let digest = SocketDigest::from_raw_fd(l4.as_raw_fd());
        let _ = digest.peer_addr.set(Some(PeerAddr::Inet(peer)));
        l4.set_socket_digest(digest);
        let Some(acceptor) = &self.tls else {
            return Some(Box::new(l4));
        };
        match tokio::time::timeout(limit, acceptor.tls_handshake(l4)).await {
            Ok(Ok(tls)) => Some(Box::new(tls)),
            Ok(Err(e)) => {
                self.metrics.tls_handshake_failed("error");
                tracing::debug!(%peer, error = %e, "tls handshake failed");
                None
            }
            Err(_) => {
                self.metrics.tls_handshake_failed("timeout");
                tracing::debug!(%peer, "tls handshake timed out");
                None
            }
        }
    }
}

/// A listening socket on `addr`, reusing the address, with `backlog`.
pub(crate) fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)?.into_std()
}
