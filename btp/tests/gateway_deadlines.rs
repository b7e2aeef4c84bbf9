//! A deadline on every state of an HTTP/1 connection, on every path: idle kept-alive
//! connections after an `/api/` request, a static file or over TLS are closed after
//! `keepalive_timeout_ms` while new clients are served at once; a body trickled past
//! `body_timeout_ms` gets 408; a head trickled byte by byte gets 431 at
//! `max_header_bytes`, for little CPU.

mod support;

use std::time::{Duration, Instant};

use support::gateway::{Options, TestGateway};
use support::h2::h2_tls;
use support::ws::{header, read_head};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connections per kind held idle at once (bounded: each is one descriptor here and one
/// in the gateway).
const IDLE: usize = 1000;

fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// User plus system CPU time a process has used.
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    Duration::from_millis(ticks * 1000 / per_second)
}

/// One request's answer: its head and body (`content-length` framed).
async fn answer<S: AsyncRead + Unpin>(stream: &mut S) -> (String, Vec<u8>) {
    let head = read_head(stream).await.unwrap_or_else(|e| panic!("{e}"));
    let len: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut body))
        .await
        .unwrap_or_else(|_| panic!("no body"))
        .unwrap_or_else(|e| panic!("{e}"));
    (head, body)
}

/// Wait until the server closes `stream`; when, from `since`.
async fn closed_after<S: AsyncRead + Unpin>(
    stream: &mut S,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    let mut rest = Vec::new();
    match tokio::time::timeout(limit, stream.read_to_end(&mut rest)).await {
        Ok(_) => Some(since.elapsed()),
        Err(_) => None,
    }
}

/// Watch `stream` from now on, on a task of its own so that a close is timed when it
/// happens: how long after `since` the server closed it (`None`: not within `limit`).
fn watch_close<S>(
    mut stream: S,
    since: Instant,
    limit: Duration,
) -> tokio::task::JoinHandle<Option<Duration>>
where
    S: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move { closed_after(&mut stream, since, limit).await })
}

/// The watched connections' close times; panics with `what` unless every one closed
/// between `earliest` and `latest`.
async fn all_closed_between(
    watches: Vec<tokio::task::JoinHandle<Option<Duration>>>,
    earliest: Duration,
    latest: Duration,
    what: &str,
) {
    let closed = futures::future::join_all(watches).await;
    let total = closed.len();
    let outside = closed
        .iter()
        .filter(|c| !matches!(c, Ok(Some(after)) if (earliest..=latest).contains(after)))
        .count();
    assert_eq!(
        outside, 0,
        "{outside} of {total} {what} not closed between {earliest:?} and {latest:?}"
    );
}

/// The time a fresh client waits for `GET /api/health`, median of five.
async fn fresh_client_latency(gw: &TestGateway) -> Duration {
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let mut c = TcpStream::connect(gw.http)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        c.write_all(b"GET /api/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (head, _) = answer(&mut c).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        times.push(started.elapsed());
    }
    times.sort();
    times[2]
}

/// Hold `IDLE` connections idle after one request each to `path`; all are closed by the
/// server within the keep-alive timeout and a second, while new clients are served.
async fn idle_connections_close<S, F, Fut>(gw: &TestGateway, path: &str, open: F)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    let mut held = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        let mut c = open().await;
        c.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (head, _) = answer(&mut c).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        held.push(watch_close(c, Instant::now(), Duration::from_secs(8)));
    }
    let latency = fresh_client_latency(gw).await;
    assert!(
        latency < Duration::from_millis(100),
        "a new client waited {latency:?}"
    );
    let what = format!("idle connections after {path}");
    all_closed_between(
        held,
        Duration::from_millis(1900),
        Duration::from_secs(3),
        &what,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_kept_alive_connections_close_on_every_http1_path_while_new_clients_are_served() {
    raise_nofile();
    let gw = TestGateway::start(Options {
        // Every connection comes from 127.0.0.1 here.
        gateway: "keepalive_timeout_ms = 2000\nmax_connections_per_ip = 5000\n".into(),
        tls: true,
        ..Options::default()
    })
    .await;
    let http = gw.http;
    idle_connections_close(&gw, "/api/health", || async move {
        TcpStream::connect(http)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    })
    .await;
    idle_connections_close(&gw, "/app.css", || async move {
        TcpStream::connect(http)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    })
    .await;
    let tls = gw.tls.unwrap_or_else(|| panic!("no TLS listener"));
    let connector = tls_connector(&gw);
    idle_connections_close(&gw, "/api/health", || {
        let connector = connector.clone();
        async move {
            let tcp = TcpStream::connect(tls)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let name = rustls::pki_types::ServerName::try_from("localhost")
                .unwrap_or_else(|e| panic!("{e}"));
            connector
                .connect(name, tcp)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    })
    .await;
}

/// A client of the gateway's TLS listener that trusts its dev certificate and speaks
/// HTTP/1.1 only.
fn tls_connector(gw: &TestGateway) -> tokio_rustls::TlsConnector {
    let pem = std::fs::read(gw.dir.join("certs/dev.crt")).unwrap_or_else(|e| panic!("{e}"));
    support::tls_connector(&pem, b"http/1.1").unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_trickled_past_the_body_timeout_gets_408() {
    let gw = TestGateway::start(Options {
        gateway: "body_timeout_ms = 1000\n".into(),
        ..Options::default()
    })
    .await;
    // A small body (read whole first), a large one (streamed) and a chunked one.
    for (framing, first) in [
        ("Content-Length: 100\r\n", "a"),
        ("Content-Length: 200000\r\n", "a"),
        ("Transfer-Encoding: chunked\r\n", "1\r\na\r\n"),
    ] {
        let c = TcpStream::connect(gw.http)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (mut read, mut write) = c.into_split();
        let head = format!("POST /api/echo HTTP/1.1\r\nHost: t\r\n{framing}\r\n{first}");
        write
            .write_all(head.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let started = Instant::now();
        // A byte every 200 ms: each read is quick, only the whole body is late.
        let trickle = tokio::spawn(async move {
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let byte: &[u8] = if framing.starts_with("Transfer") {
                    b"1\r\nb\r\n"
                } else {
                    b"b"
                };
                if write.write_all(byte).await.is_err() {
                    return;
                }
            }
        });
        let (head, body) = tokio::time::timeout(Duration::from_secs(5), answer(&mut read))
            .await
            .unwrap_or_else(|_| panic!("{framing}: no answer within 5 s"));
        trickle.abort();
        assert!(head.starts_with("HTTP/1.1 408"), "{framing}: {head}");
        assert!(
            String::from_utf8_lossy(&body).contains("request_timeout"),
            "{framing}"
        );
        let after = started.elapsed();
        assert!(
            after >= Duration::from_millis(900),
            "{framing}: cut after {after:?}"
        );
        assert_eq!(header(&head, "connection"), Some("close"), "{framing}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_trickled_byte_by_byte_gets_431_at_the_limit_for_little_cpu() {
    let gw = TestGateway::start(Options::default()).await;
    let mut c = TcpStream::connect(gw.http)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    c.set_nodelay(true).unwrap_or_else(|e| panic!("{e}"));
    let used = cpu(gw.process.pid());
    let mut sent = 0usize;
    let line = b"GET /api/health HTTP/1.1\r\nHost: t\r\nX-Pad: ";
    c.write_all(line).await.unwrap_or_else(|e| panic!("{e}"));
    sent += line.len();
    // Up to a megabyte, one byte per write, until the gateway answers.
    let mut answer_head = None;
    while sent < 1 << 20 {
        if c.write_all(b"a").await.is_err() {
            break;
        }
        sent += 1;
        if sent.is_multiple_of(1024) {
            let mut probe = [0u8; 1];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(1), c.peek(&mut probe)).await
            {
                if n > 0 {
                    answer_head = Some(read_head(&mut c).await.unwrap_or_else(|e| panic!("{e}")));
                    break;
                }
            }
        }
    }
    let head = match answer_head {
        Some(head) => head,
        None => read_head(&mut c).await.unwrap_or_else(|e| panic!("{e}")),
    };
    let spent = cpu(gw.process.pid()) - used;
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    assert!(sent <= 16 * 1024 + 2048, "answered only after {sent} bytes");
    assert!(
        spent < Duration::from_millis(500),
        "the trickle cost the gateway {spent:?}"
    );
}

/// A frame header and payload (RFC 9113 §4.1) on stream `stream`.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// `GET /api/health` as the first stream of a fresh HTTP/2 connection, by hand (a small
/// client, so that a thousand of them load the test less than the gateway): returns once
/// the answer has ended.
async fn h2_get_health<S: AsyncRead + AsyncWrite + Unpin>(c: &mut S) {
    let mut block = vec![0x82, 0x87]; // :method GET, :scheme https
    block.push(0x44); // :path, literal value
    block.push(11);
    block.extend_from_slice(b"/api/health");
    block.push(0x41); // :authority, literal value
    block.push(9);
    block.extend_from_slice(b"localhost");
    let mut out = PREFACE.to_vec();
    out.extend(h2_frame(0x4, 0, 0, &[]));
    out.extend(h2_frame(0x1, 0x5, 1, &block)); // END_STREAM | END_HEADERS
    c.write_all(&out).await.unwrap_or_else(|e| panic!("{e}"));
    let mut buf = Vec::new();
    loop {
        // Frames as they come; the answer ends with END_STREAM on stream 1.
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let stream = u32::from_be_bytes([buf[5] & 0x7f, buf[6], buf[7], buf[8]]);
            if kind == 0x4 && flags & 0x1 == 0 {
                c.write_all(&h2_frame(0x4, 0x1, 0, &[]))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            buf.drain(..9 + len);
            if stream == 1 && matches!(kind, 0x0 | 0x1) && flags & 0x1 != 0 {
                return;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), c.read_buf(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no HTTP/2 answer within 10 s"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(n > 0, "the connection closed before the answer");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_close_with_or_without_a_preface_and_a_stalled_header_block_at_the_header_timeout(
) {
    raise_nofile();
    let gw = TestGateway::start(Options {
        gateway: "keepalive_timeout_ms = 2000\nheader_timeout_ms = 10000\nmax_connections_per_ip = 5000\n".into(),
        tls: true,
        ..Options::default()
    })
    .await;

    // Without a preface.
    let mut silent = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        silent.push(watch_close(
            h2_tls(&gw).await,
            Instant::now(),
            Duration::from_secs(8),
        ));
    }
    let latency = fresh_client_latency(&gw).await;
    assert!(
        latency < Duration::from_millis(100),
        "a new client waited {latency:?}"
    );
    all_closed_between(
        silent,
        Duration::from_millis(1900),
        Duration::from_secs(3),
        "silent HTTP/2 connections",
    )
    .await;

    // After a request, answered: idle from then on.
    let mut after_request = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        let mut c = h2_tls(&gw).await;
        h2_get_health(&mut c).await;
        after_request.push(watch_close(c, Instant::now(), Duration::from_secs(8)));
    }
    all_closed_between(
        after_request,
        Duration::from_millis(1900),
        Duration::from_secs(3),
        "HTTP/2 connections idle after a request",
    )
    .await;

    // A header block left unfinished: cut at the header timeout, not the keep-alive one.
    let gw = TestGateway::start(Options {
        gateway: "keepalive_timeout_ms = 10000\nheader_timeout_ms = 1000\n".into(),
        tls: true,
        ..Options::default()
    })
    .await;
    let mut c = h2_tls(&gw).await;
    let mut opening = PREFACE.to_vec();
    opening.extend(h2_frame(0x4, 0, 0, &[]));
    // HEADERS for stream 1 without END_HEADERS: `:method: GET` (static index 2), then nothing.
    opening.extend(h2_frame(0x1, 0, 1, &[0x82]));
    c.write_all(&opening)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stalled = Instant::now();
    let after = closed_after(&mut c, stalled, Duration::from_secs(8))
        .await
        .unwrap_or_else(|| panic!("a stalled header block was still open after 8 s"));
    assert!(
        (Duration::from_millis(900)..Duration::from_millis(3000)).contains(&after),
        "cut after {after:?}"
    );
}
