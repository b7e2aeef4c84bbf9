//! A worker written byte by byte, for tests of what the gateway does with every answer a
//! worker may give.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::gateway::{Options, TestGateway};
use super::ws::read_head;

/// A worker written byte by byte, so a test chooses exactly what the gateway gets back:
/// by path, a sized, chunked or unsized answer, one that never comes, a broken one, or
/// (`/api/flaky`) a connection closed when it carries a second request, (`/api/cut`)
/// a body that breaks off, or (`/api/pause`) a sized answer after 300 ms.
pub struct RawWorker {
    task: JoinHandle<()>,
    /// Requests served, health checks left out.
    pub requests: Arc<AtomicUsize>,
    /// The most requests (health checks left out) it had at once.
    pub most_at_once: Arc<AtomicUsize>,
}

/// Counts a request in flight while it lives.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for RawWorker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const SIZED: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}";

pub const CHUNKED_BODY: &[u8] = b"5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 11\r\n\r\n";

impl RawWorker {
    pub async fn start(gw: &mut TestGateway) -> RawWorker {
        let listener = TcpListener::bind(gw.api)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let requests = Arc::new(AtomicUsize::new(0));
        let most_at_once = Arc::new(AtomicUsize::new(0));
        let counters = (
            requests.clone(),
            Arc::new(AtomicUsize::new(0)),
            most_at_once.clone(),
        );
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(serve(stream, counters.clone()));
            }
        });
        let ready = gw.admin_url("/readyz");
        gw.process
            .wait_for_status(&ready, 200, Duration::from_secs(30))
            .await;
        RawWorker {
            task,
            requests,
            most_at_once,
        }
    }
}

type Counters = (Arc<AtomicUsize>, Arc<AtomicUsize>, Arc<AtomicUsize>);

async fn serve(mut stream: TcpStream, (requests, in_flight, most): Counters) {
    for served in 0.. {
        let Ok(head) = read_head(&mut stream).await else {
            return;
        };
        let path = head.split_whitespace().nth(1).unwrap_or_default();
        let _counted = (path != "/api/health").then(|| {
            requests.fetch_add(1, Ordering::SeqCst);
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            InFlight(in_flight.clone())
        });
        let reply: Vec<u8> = match path {
            "/api/chunked" => {
                let mut r = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
                r.extend_from_slice(CHUNKED_BODY);
                r
            }
            "/api/unsized" => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end")
                    .await;
                return;
            }
            "/api/slow" => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                return;
            }
            "/api/garbage" => {
                let _ = stream.write_all(b"HTTP/1.1 abc\r\n\r\n").await;
                return;
            }
            "/api/flaky" if served > 0 => return,
            "/api/pause" => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                SIZED.to_vec()
            }
            "/api/cut" => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b")
                    .await;
                return;
            }
            _ => SIZED.to_vec(),
        };
        if stream.write_all(&reply).await.is_err() {
            return;
        }
    }
}

pub fn raw_options() -> Options {
    Options {
        upstreams: false,
        gateway: "upstream_read_timeout_ms = 500".into(),
        ..Options::default()
    }
}
