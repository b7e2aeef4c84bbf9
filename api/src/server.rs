//! Process lifecycle: open the state, bind the worker's loopback address (or take the
//! listening socket `btp up` hands down), serve until SIGTERM/SIGINT, then drain
//! connections and close the database.
//!
//! Under `btp up` the listening socket belongs to the supervisor and is shared by a worker
//! and its replacement, so a rolling restart or a binary upgrade never refuses a
//! connection: the old worker stops accepting the moment it is told to stop, the new one
//! keeps accepting from the same queue.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::serve::{Listener, ListenerExt};
use axum::Router;
use btp_config::Config;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

use crate::http;
use crate::metrics::MetricsError;
use crate::realtime::Realtime;
use crate::state::{AppState, Options};
use btp_sio::sniff::{sniff, Sniffed};

/// `btp api --worker N`: serve API worker `worker` on `config.api_worker_addr(worker)`
/// until SIGTERM/SIGINT; then close every realtime session in order (clients reconnect at
/// once), let in-flight requests finish and close the database.
pub async fn run(config: Config, worker: u16) -> anyhow::Result<()> {
    run_with(config, worker, Launch::default()).await
}

/// How a supervised worker is started: with the supervisor's listening socket, and a
/// callback that tells the supervisor the worker is serving (its health gate).
#[derive(Default)]
pub struct Launch {
    /// A listening socket inherited from the supervisor; `None` binds the worker address.
    pub listener: Option<std::net::TcpListener>,
    /// The worker's end of its slot's handoff channel (`btp_handoff`), when supervised.
    pub handoff: Option<std::os::fd::OwnedFd>,
    /// Called once the database is open and the listener is about to be served.
    pub ready: Option<Box<dyn FnOnce() + Send>>,
}

/// [`run`] with a [`Launch`].
pub async fn run_with(config: Config, worker: u16, launch: Launch) -> anyhow::Result<()> {
    let addr = config
        .api_worker_addr(worker)
        .with_context(|| format!("no address for API worker {worker} (api.listen)"))?;
    let state = AppState::open(config, Options::new(worker))
        .await
        .context("opening the database")?;
    let (app, realtime) = app(&state).context("starting the realtime layer")?;
    let listener = match launch.listener {
        Some(inherited) => inherited
            .set_nonblocking(true)
            .and_then(|()| TcpListener::from_std(inherited))
            .with_context(|| format!("using the inherited socket of API worker {worker}"))?,
        None => bind(addr).with_context(|| format!("binding API worker {worker} on {addr}"))?,
    };
    let handoffs = launch
        .handoff
        .map(btp_handoff::Receiver::new)
        .transpose()
        .with_context(|| format!("using the handoff channel of API worker {worker}"))?;
    tracing::info!(%addr, worker, db = ?state.store.dialect(), handoff = handoffs.is_some(), "[API] LISTENING");
    if let Some(ready) = launch.ready {
        ready();
    }
    let closing = realtime.clone();
    let stopping = async move {
        shutdown_signal().await;
        tracing::info!(worker, "[API] STOPPING");
    };
    // The sessions are closed in order (their tasks are awaited below) only once this
    // worker stopped accepting: a client told to reconnect does so at once, and must land
    // on the replacement accepting from the same socket, not on this closing worker.
    let stopped = move || {
        tokio::spawn(async move { closing.shutdown().await });
    };
    let inbound = Inbound { listener, handoffs };
    let served = serve(inbound, app, Some(realtime.clone()), stopping, stopped).await;
    realtime.shutdown().await;
    state.shutdown().await;
    served.context("serving HTTP")
}

/// The whole HTTP surface of a worker: the API routes, `/socket.io/`, the shared
/// fallbacks and layers; with the realtime handle for shutdown.
pub fn app(state: &AppState) -> Result<(Router, Realtime), MetricsError> {
    let realtime = Realtime::start(state)?;
    let routes = realtime.mount(http::router(state.clone()));
    Ok((http::finish(routes, state.clone()), realtime))
}

/// After a worker stops accepting, a connection it accepted just before may not have
/// delivered its first request yet; closing it then as idle would fail a request the
/// gateway has already sent. Connections get this long before idle ones are closed.
pub const SETTLE: Duration = Duration::from_millis(300);

/// Longest wait for the accept loop to close its socket once told to stop.
const STOP_ACK_LIMIT: Duration = Duration::from_millis(200);

/// Where a worker's connections come from: its listening socket, and under `btp up` the
/// WebSocket connections the gateway hands over (`btp_handoff`).
pub struct Inbound {
    pub listener: TcpListener,
    pub handoffs: Option<btp_handoff::Receiver>,
}

impl From<TcpListener> for Inbound {
    fn from(listener: TcpListener) -> Inbound {
        Inbound {
            listener,
            handoffs: None,
        }
    }
}

/// Serve `app` on `inbound` until `shutdown` completes; then stop accepting at once (a
/// replacement may be accepting from the same socket and reading the same handoff
/// channel), call `stopped` once this worker's copy of the socket is closed, give fresh
/// connections [`SETTLE`] to deliver their request, and let in-flight requests finish.
/// Peer addresses are recorded for the login throttle's IP fallback. With `realtime`, a
/// connection that opens with a WebSocket upgrade on its path goes to it directly
/// ([`btp_sio::sniff`]), as do handed-over connections.
pub async fn serve(
    inbound: impl Into<Inbound>,
    app: Router,
    realtime: Option<Realtime>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    stopped: impl FnOnce() + Send + 'static,
) -> std::io::Result<()> {
    let Inbound { listener, handoffs } = inbound.into();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (closed_tx, closed_rx) = oneshot::channel();
    let draining = Draining {
        inner: Some(listener),
        handoffs,
        stop: stop_rx,
        closed: Some(closed_tx),
        sniffing: FuturesUnordered::new(),
        realtime,
    }
    // `tap_io` gives the listener axum's `ConnectInfo<SocketAddr>` support.
    .tap_io(|_| {});
    axum::serve(
        draining,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
        // The accept loop is polled continuously, so this is quick; bounded anyway.
        let _ = tokio::time::timeout(STOP_ACK_LIMIT, closed_rx).await;
        stopped();
        tokio::time::sleep(SETTLE).await;
    })
    .await
}

/// A listener that can stop accepting (and close its socket) before axum's graceful
/// shutdown begins, and that gives axum only the connections [`sniff`] leaves to HTTP.
struct Draining {
    inner: Option<TcpListener>,
    /// Read while `inner` is open; closed with it.
    handoffs: Option<btp_handoff::Receiver>,
    stop: watch::Receiver<bool>,
    /// Told when the socket has been closed.
    closed: Option<oneshot::Sender<()>>,
    /// Accepted connections whose first bytes are awaited. Polled here, in the accept
    /// loop (which axum polls continuously), so a look costs no task.
    sniffing: FuturesUnordered<BoxFuture<'static, Sniffed>>,
    realtime: Option<Realtime>,
}

/// What one turn of the accept loop produced.
enum Event {
    Accepted(std::io::Result<(TcpStream, SocketAddr)>),
    Handed(std::io::Result<Option<btp_handoff::Handoff>>),
    Sniffed(Sniffed),
    Stop,
}

impl Listener for Draining {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let sniffing = !self.sniffing.is_empty();
            let event = match &self.inner {
                Some(listener) => tokio::select! {
                    accepted = listener.accept() => Event::Accepted(accepted),
                    handed = handed(self.handoffs.as_ref()) => Event::Handed(handed),
                    Some(sniffed) = self.sniffing.next(), if sniffing => Event::Sniffed(sniffed),
                    _ = self.stop.wait_for(|stop| *stop) => Event::Stop,
                },
                // Stopped: what was accepted before still gets served.
                None if sniffing => match self.sniffing.next().await {
                    Some(sniffed) => Event::Sniffed(sniffed),
                    None => continue,
                },
                None => return std::future::pending().await,
            };
            match event {
                Event::Accepted(Ok((stream, peer))) => {
                    let Some(realtime) = self.realtime.clone() else {
                        return (stream, peer);
                    };
                    self.sniffing.push(Box::pin(async move {
                        sniff(stream, peer, |path| realtime.handles_path(path)).await
                    }));
                }
                Event::Accepted(Err(e)) => {
                    // Out of descriptors or a connection reset while queued: not fatal.
                    tracing::warn!(error = %e, "[API] ACCEPT failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Event::Handed(Ok(Some(handoff))) => match &self.realtime {
                    Some(realtime) => realtime.take_handoff(handoff),
                    None => tracing::warn!("[API] HANDOFF without a realtime server: closed"),
                },
                Event::Handed(Ok(None)) => {
                    // The gateway closed its end: it is gone, and this worker with it soon.
                    self.handoffs = None;
                }
                Event::Handed(Err(e)) => {
                    // A malformed message (its descriptors are closed) or a failed read;
                    // the channel stays in use.
                    tracing::warn!(error = %e, "[API] HANDOFF failed");
                    if e.kind() != std::io::ErrorKind::InvalidData {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                Event::Sniffed(Sniffed::Http(stream, peer)) => return (stream, peer),
                Event::Sniffed(Sniffed::WebSocket(stream, request)) => {
                    if let Some(realtime) = &self.realtime {
                        realtime.take_websocket(request, stream);
                    }
                }
                Event::Sniffed(Sniffed::Gone) => {}
                Event::Stop => {
                    self.inner = None;
                    self.handoffs = None;
                    if let Some(closed) = self.closed.take() {
                        let _ = closed.send(());
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.inner {
            Some(listener) => listener.local_addr(),
            None => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }
}

/// The next handoff, or never without a channel.
async fn handed(
    handoffs: Option<&btp_handoff::Receiver>,
) -> std::io::Result<Option<btp_handoff::Handoff>> {
    match handoffs {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot install signal handlers; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The worker's own socket (`btp api` alone), with the accept queue `btp up` gives it.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(btp_config::API_WORKER_BACKLOG)
}
