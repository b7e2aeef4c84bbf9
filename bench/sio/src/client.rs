//! One Socket.IO client over a raw WebSocket: the HTTP upgrade, the Engine.IO open, the
//! namespace CONNECT with the product's auth, then a reader task that answers pings and
//! records broadcasts for the whole run.
//!
//! The handshake runs on the unsplit socket (strictly request → answer); afterwards the
//! socket is split so the reader task can own the read half for its whole life while the
//! write half sits behind a mutex shared by the reader (pongs) and, for the publisher,
//! the benchmark driver (pushes). Reading is never raced against anything else, because
//! a WebSocket read cancelled mid-frame would lose bytes.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fastwebsockets::{
    FragmentCollectorRead, Frame, OpCode, Payload, WebSocket, WebSocketError, WebSocketWrite,
};
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::WriteHalf;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;

use crate::protocol::{self, Incoming};

const PATH: &str = "/socket.io/?EIO=4&transport=websocket";

type Stream = TokioIo<Upgraded>;
pub type Writer = Arc<tokio::sync::Mutex<WebSocketWrite<WriteHalf<Stream>>>>;

/// Where and as whom clients connect.
pub struct Target {
    pub addr: SocketAddr,
    pub token: String,
}

/// What every reader task reports into, read by the driver.
pub struct Recorder {
    /// The instant all timestamps are measured from.
    pub base: Instant,
    /// Per round: when its push was written (nanoseconds since `base`), 0 before.
    sent_at: Vec<AtomicU64>,
    /// Per round: distinct receivers that got its broadcast.
    delivered: Vec<AtomicU64>,
    /// Delivery latencies in nanoseconds, all rounds.
    latencies: Mutex<Vec<u64>>,
    /// A receiver got the same round twice.
    pub duplicates: AtomicU64,
    /// The publisher got its own broadcast (the no-echo rule broken).
    pub echoes: AtomicU64,
    /// A `sync:changes` that was not for a round in flight.
    pub stray: AtomicU64,
    /// Sockets the server closed after they had connected.
    pub closed: AtomicU64,
}

impl Recorder {
    pub fn new(rounds: usize) -> Recorder {
        Recorder {
            base: Instant::now(),
            sent_at: (0..rounds).map(|_| AtomicU64::new(0)).collect(),
            delivered: (0..rounds).map(|_| AtomicU64::new(0)).collect(),
            latencies: Mutex::new(Vec::new()),
            duplicates: AtomicU64::new(0),
            echoes: AtomicU64::new(0),
            stray: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        // Never 0, which means "not sent yet".
        (self.base.elapsed().as_nanos() as u64).max(1)
    }

    /// Stamp the send time of `round` right before its push is written.
    pub fn mark_sent(&self, round: usize) {
        if let Some(slot) = self.sent_at.get(round) {
            slot.store(self.now(), Ordering::Release);
        }
    }

    pub fn delivered(&self, round: usize) -> u64 {
        self.delivered
            .get(round)
            .map_or(0, |d| d.load(Ordering::Acquire))
    }

    pub fn total_delivered(&self) -> u64 {
        self.delivered
            .iter()
            .map(|d| d.load(Ordering::Acquire))
            .sum()
    }

    pub fn take_latencies(&self) -> Vec<u64> {
        match self.latencies.lock() {
            Ok(mut l) => std::mem::take(&mut *l),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    fn record(&self, round: usize, seen: &mut [bool]) {
        let received = self.now();
        let sent = self
            .sent_at
            .get(round)
            .map_or(0, |s| s.load(Ordering::Acquire));
        let Some(already) = seen.get_mut(round).filter(|_| sent != 0) else {
            self.stray.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if *already {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *already = true;
        let latency = received.saturating_sub(sent);
        match self.latencies.lock() {
            Ok(mut l) => l.push(latency),
            Err(poisoned) => poisoned.into_inner().push(latency),
        }
        self.delivered[round].fetch_add(1, Ordering::Release);
    }
}

/// A connected client: the write half, and for the publisher its acks.
pub struct Client {
    pub writer: Writer,
    pub acks: Option<mpsc::UnboundedReceiver<(u64, String)>>,
}

#[derive(Debug)]
pub enum ConnectError {
    Tcp(std::io::Error),
    Upgrade(WebSocketError),
    Refused(String),
    Closed,
    Timeout,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Tcp(e) => write!(f, "tcp connect: {e}"),
            ConnectError::Upgrade(e) => write!(f, "websocket upgrade: {e}"),
            ConnectError::Refused(payload) => write!(f, "CONNECT_ERROR {payload}"),
            ConnectError::Closed => write!(f, "closed during the handshake"),
            ConnectError::Timeout => write!(f, "handshake timed out"),
        }
    }
}

struct SpawnExecutor;

impl<Fut> hyper::rt::Executor<Fut> for SpawnExecutor
where
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    fn execute(&self, fut: Fut) {
        tokio::spawn(fut);
    }
}

/// Open one client up to a connected Socket.IO socket and start its reader task.
/// `publisher` clients get their acks forwarded and must never receive a broadcast.
pub async fn connect(
    target: &Target,
    source: Option<IpAddr>,
    client_session_id: &str,
    publisher: bool,
    recorder: Arc<Recorder>,
    timeout: Duration,
) -> Result<Client, ConnectError> {
    let mut ws = tokio::time::timeout(timeout, handshake(target, source, client_session_id))
        .await
        .map_err(|_| ConnectError::Timeout)??;
    ws.set_auto_close(true);
    ws.set_auto_pong(true);
    let (read, write) = ws.split(tokio::io::split);
    let writer: Writer = Arc::new(tokio::sync::Mutex::new(write));
    let (ack_tx, acks) = if publisher {
        let (tx, rx) = mpsc::unbounded_channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let rounds = recorder.sent_at.len();
    tokio::spawn(read_loop(
        FragmentCollectorRead::new(read),
        writer.clone(),
        recorder,
        ack_tx,
        rounds,
    ));
    Ok(Client { writer, acks })
}

async fn handshake(
    target: &Target,
    source: Option<IpAddr>,
    client_session_id: &str,
) -> Result<WebSocket<Stream>, ConnectError> {
    let stream = match source {
        Some(ip) => {
            let socket = TcpSocket::new_v4().map_err(ConnectError::Tcp)?;
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(ConnectError::Tcp)?;
            socket
                .connect(target.addr)
                .await
                .map_err(ConnectError::Tcp)?
        }
        None => TcpStream::connect(target.addr)
            .await
            .map_err(ConnectError::Tcp)?,
    };
    stream.set_nodelay(true).map_err(ConnectError::Tcp)?;
    let request = hyper::Request::builder()
        .method("GET")
        .uri(PATH)
        .header("host", target.addr.to_string())
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header(
            "sec-websocket-key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("sec-websocket-version", "13")
        .body(Empty::<Bytes>::new())
        .map_err(|e| ConnectError::Refused(format!("bad request: {e}")))?;
    let (mut ws, _) = fastwebsockets::handshake::client(&SpawnExecutor, request, stream)
        .await
        .map_err(ConnectError::Upgrade)?;
    loop {
        let frame = ws.read_frame().await.map_err(ConnectError::Upgrade)?;
        match frame.opcode {
            OpCode::Text => {}
            OpCode::Close => return Err(ConnectError::Closed),
            _ => continue,
        }
        let text = String::from_utf8_lossy(&frame.payload).into_owned();
        let reply = match protocol::decode(&text) {
            Incoming::Open => protocol::connect(&target.token, client_session_id),
            Incoming::Ping => protocol::PONG.to_owned(),
            Incoming::Connected => return Ok(ws),
            Incoming::ConnectError(payload) => return Err(ConnectError::Refused(payload.into())),
            Incoming::Closed => return Err(ConnectError::Closed),
            _ => continue,
        };
        ws.write_frame(Frame::text(Payload::Owned(reply.into_bytes())))
            .await
            .map_err(ConnectError::Upgrade)?;
    }
}

/// Write one text frame through the shared write half.
pub async fn send_text(writer: &Writer, text: String) -> Result<(), WebSocketError> {
    writer
        .lock()
        .await
        .write_frame(Frame::text(Payload::Owned(text.into_bytes())))
        .await
}

async fn read_loop(
    mut read: FragmentCollectorRead<tokio::io::ReadHalf<Stream>>,
    writer: Writer,
    recorder: Arc<Recorder>,
    acks: Option<mpsc::UnboundedSender<(u64, String)>>,
    rounds: usize,
) {
    let publisher = acks.is_some();
    let mut seen = vec![false; rounds];
    let control_writer = writer.clone();
    let mut send_control = move |frame: Frame<'static>| {
        let writer = control_writer.clone();
        async move { writer.lock().await.write_frame(frame).await }
    };
    loop {
        let frame = match read.read_frame(&mut send_control).await {
            Ok(frame) => frame,
            Err(_) => break,
        };
        match frame.opcode {
            OpCode::Text => {}
            OpCode::Close => break,
            _ => continue,
        }
        let Ok(text) = std::str::from_utf8(&frame.payload) else {
            continue;
        };
        match protocol::decode(text) {
            Incoming::Ping => {
                if send_text(&writer, protocol::PONG.to_owned()).await.is_err() {
                    break;
                }
            }
            Incoming::Changes { .. } if publisher => {
                recorder.echoes.fetch_add(1, Ordering::Relaxed);
            }
            Incoming::Changes { round: Some(round) } => recorder.record(round, &mut seen),
            Incoming::Changes { round: None } => {
                recorder.stray.fetch_add(1, Ordering::Relaxed);
            }
            Incoming::Ack { id, args } => {
                if let Some(acks) = &acks {
                    let _ = acks.send((id, args.to_owned()));
                }
            }
            Incoming::Closed => break,
            Incoming::Open | Incoming::Connected | Incoming::ConnectError(_) | Incoming::Other => {}
        }
    }
    recorder.closed.fetch_add(1, Ordering::Relaxed);
}
