//! Request smuggling: a table of ambiguous framings (CL.TE, TE.CL, Transfer-Encoding
//! obfuscations, duplicate, listed and signed lengths, obs-fold, bare CR and LF, NUL,
//! pipelined mixes of GET and POST, malformed chunks) sent to a real gateway whose worker
//! is written byte by byte.
//!
//! For every row, whatever it is: each request the worker reads (strictly, head and
//! whole body) was written by the gateway — it carries the gateway's request id and
//! forwarding header — so no client bytes ever reach the worker as a request of their
//! own; the client gets exactly one worker answer per request the worker read; and a
//! refusal is a 400 (or 413/417/431) after which the connection closes. Each row also
//! says what it must come to: refused at once, or so many requests forwarded.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use btp_h1::body::{Body, Framing};
use btp_h1::request::{self, BodyLength, Parsed};
use support::gateway::{Options, TestGateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a row must come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// The first answer is a refusal with this status, then the connection closes; the
    /// worker reads nothing.
    Refused(u16),
    /// This many requests reach the worker (and get its answer), then perhaps a refusal.
    Forwarded(usize),
}

const H: &str = "Host: btp.test\r\n";

/// Sent after every row: a connection that is still in step gets this answered and
/// closed at once, instead of being waited on.
const END: &str = "GET /api/end HTTP/1.1\r\nHost: btp.test\r\nConnection: close\r\n\r\n";

fn rows() -> Vec<(&'static str, String, Want)> {
    use Want::*;
    let post =
        |headers: &str, body: &str| format!("POST /api/x HTTP/1.1\r\n{H}{headers}\r\n{body}");
    let smuggled = "GET /api/smuggled HTTP/1.1\r\nHost: btp.test\r\n\r\n";
    vec![
        // CL.TE and TE.CL.
        ("cl.te", post("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", &format!("0\r\n\r\nG{smuggled}")), Refused(400)),
        ("te.cl", post("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", &format!("8\r\nSMUGGLED\r\n0\r\n\r\n{smuggled}")), Refused(400)),
        ("cl.te zero", post("Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"), Refused(400)),
        ("te.cl list", post("Transfer-Encoding: chunked\r\nContent-Length: 4, 4\r\n", "0\r\n\r\n"), Refused(400)),
        // Transfer-Encoding obfuscations.
        ("te xchunked", post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"), Refused(400)),
        ("te space before colon", post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n"), Refused(400)),
        ("te twice", post("Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n", "0\r\n\r\n"), Refused(400)),
        ("te chunked twice", post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"), Refused(400)),
        ("te chunked, identity", post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"), Refused(400)),
        ("te identity, chunked", post("Transfer-Encoding: identity, chunked\r\n", "0\r\n\r\n"), Refused(400)),
        ("te gzip, chunked", post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"), Refused(400)),
        ("te parameter", post("Transfer-Encoding: chunked;q=1\r\n", "0\r\n\r\n"), Refused(400)),
        ("te quoted", post("Transfer-Encoding: \"chunked\"\r\n", "0\r\n\r\n"), Refused(400)),
        ("te truncated", post("Transfer-Encoding: chunk\r\n", "0\r\n\r\n"), Refused(400)),
        ("te vertical tab", post("Transfer-Encoding: \x0bchunked\r\n", "0\r\n\r\n"), Refused(400)),
        ("te nul", post("Transfer-Encoding: chunked\0\r\n", "0\r\n\r\n"), Refused(400)),
        ("te obs-fold", post("X-A: b\r\n Transfer-Encoding: chunked\r\n", "0\r\n\r\n"), Refused(400)),
        ("te folded value", post("Transfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n"), Refused(400)),
        ("te name split", post("Transfer-Encoding\r\n: chunked\r\n", "0\r\n\r\n"), Refused(400)),
        ("te in http/1.0", "POST /api/x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(), Refused(400)),
        ("te upper case", post("Transfer-Encoding: CHUNKED\r\n", "5\r\nhello\r\n0\r\n\r\n"), Forwarded(1)),
        ("te tab", post("Transfer-Encoding:\tchunked\r\n", "5\r\nhello\r\n0\r\n\r\n"), Forwarded(1)),
        ("te underscore is another header", post("Transfer_Encoding: chunked\r\n", "0\r\n\r\n"), Forwarded(1)),
        // Content-Length variants.
        ("cl twice same", post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"), Refused(400)),
        ("cl twice different", post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"), Refused(400)),
        ("cl list", post("Content-Length: 5, 5\r\n", "hello"), Refused(400)),
        ("cl plus", post("Content-Length: +5\r\n", "hello"), Refused(400)),
        ("cl minus", post("Content-Length: -5\r\n", "hello"), Refused(400)),
        ("cl hex", post("Content-Length: 0x5\r\n", "hello"), Refused(400)),
        ("cl decimal", post("Content-Length: 5.0\r\n", "hello"), Refused(400)),
        ("cl spaced digits", post("Content-Length: 1 0\r\n", "hello"), Refused(400)),
        ("cl underscore", post("Content-Length: 1_0\r\n", "hello"), Refused(400)),
        ("cl empty", post("Content-Length: \r\n", "hello"), Refused(400)),
        ("cl overflow", post("Content-Length: 99999999999999999999\r\n", "hello"), Refused(400)),
        ("cl space before colon", post("Content-Length : 5\r\n", "hello"), Refused(400)),
        ("cl obs-fold", post("X-A: b\r\n Content-Length: 5\r\n", "hello"), Refused(400)),
        ("cl trailing space", post("Content-Length: 5 \r\n", "hello"), Forwarded(1)),
        ("cl leading zero", post("Content-Length: 005\r\n", "hello"), Forwarded(1)),
        ("cl no space", post("Content-Length:5\r\n", "hello"), Forwarded(1)),
        ("cl over max", post("Content-Length: 999999999\r\n", "hello"), Refused(413)),
        // Line ends and forbidden bytes.
        ("bare lf", "GET /api/x HTTP/1.1\nHost: btp.test\n\n".into(), Refused(400)),
        ("bare lf in headers", "GET /api/x HTTP/1.1\r\nHost: btp.test\nX: y\r\n\r\n".to_string(), Refused(400)),
        ("bare cr", format!("GET /api/x HTTP/1.1\r\n{H}X: a\rb\r\n\r\n"), Refused(400)),
        ("cr cr lf", format!("GET /api/x HTTP/1.1\r\r\n{H}\r\n"), Refused(400)),
        ("nul in a name", format!("GET /api/x HTTP/1.1\r\n{H}X\0Y: z\r\n\r\n"), Refused(400)),
        ("nul in a value", format!("GET /api/x HTTP/1.1\r\n{H}X: a\0b\r\n\r\n"), Refused(400)),
        ("nul in the target", format!("GET /api/\0x HTTP/1.1\r\n{H}\r\n"), Refused(400)),
        ("no colon", format!("GET /api/x HTTP/1.1\r\n{H}Nonsense\r\n\r\n"), Refused(400)),
        ("space in a name", format!("GET /api/x HTTP/1.1\r\n{H}X Y: z\r\n\r\n"), Refused(400)),
        ("obs-text value", format!("GET /api/x HTTP/1.1\r\n{H}X: caf\u{e9}\r\n\r\n"), Forwarded(1)),
        // Request lines.
        ("extra in the request line", format!("GET /api/x HTTP/1.1 x\r\n{H}\r\n"), Refused(400)),
        ("double space", format!("GET  /api/x HTTP/1.1\r\n{H}\r\n"), Refused(400)),
        ("http/2.0", format!("GET /api/x HTTP/2.0\r\n{H}\r\n"), Refused(400)),
        ("http/1.2", format!("GET /api/x HTTP/1.2\r\n{H}\r\n"), Refused(400)),
        ("no host", "GET /api/x HTTP/1.1\r\n\r\n".into(), Refused(400)),
        ("two hosts", format!("GET /api/x HTTP/1.1\r\n{H}{H}\r\n"), Refused(400)),
        ("absolute form", "GET http://evil.example/api/x HTTP/1.1\r\nHost: btp.test\r\n\r\n".into(), Forwarded(1)),
        ("expect other", format!("POST /api/x HTTP/1.1\r\n{H}Expect: 200-ok\r\nContent-Length: 1\r\n\r\nx"), Refused(417)),
        ("expect continue", format!("POST /api/x HTTP/1.1\r\n{H}Expect: 100-continue\r\nContent-Length: 5\r\n\r\nhello"), Forwarded(1)),
        // Pipelined mixes.
        ("get with a body that looks like a request", format!("GET /api/x HTTP/1.1\r\n{H}Content-Length: {}\r\n\r\n{smuggled}", smuggled.len()), Forwarded(1)),
        ("post then get", format!("{}{smuggled}", post("Content-Length: 5\r\n", "hello")), Forwarded(2)),
        ("short length leaves a request", post("Content-Length: 1\r\n", &format!("x{smuggled}")), Forwarded(2)),
        ("chunked then get", format!("{}{smuggled}", post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n")), Forwarded(2)),
        ("chunked with trailers then get", format!("{}{smuggled}", post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\nContent-Length: 99\r\nX: y\r\n\r\n")), Forwarded(2)),
        ("chunked extension", post("Transfer-Encoding: chunked\r\n", "5;a=b;c\r\nhello\r\n0\r\n\r\n"), Forwarded(1)),
        ("after the last chunk, garbage", format!("{}GARBAGE\r\n\r\n", post("Transfer-Encoding: chunked\r\n", "0\r\n\r\n")), Forwarded(1)),
        ("get, get, get", format!("GET /api/a HTTP/1.1\r\n{H}\r\nGET /api/b HTTP/1.1\r\n{H}\r\nGET /api/c HTTP/1.1\r\n{H}\r\n"), Forwarded(3)),
        ("get then cl.te", format!("GET /api/a HTTP/1.1\r\n{H}\r\n{}", post("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\nG")), Forwarded(1)),
        // Malformed chunks: the head went out, the request never completes at the worker.
        ("chunk size spaced", post("Transfer-Encoding: chunked\r\n", "5 \r\nhello\r\n0\r\n\r\n"), Forwarded(0)),
        ("chunk size overflow", post("Transfer-Encoding: chunked\r\n", "fffffffffffffffff\r\nx\r\n0\r\n\r\n"), Forwarded(0)),
        ("chunk size not hex", post("Transfer-Encoding: chunked\r\n", "g\r\nx\r\n0\r\n\r\n"), Forwarded(0)),
        ("chunk bare lf", post("Transfer-Encoding: chunked\r\n", "5\nhello\r\n0\r\n\r\n"), Forwarded(0)),
        ("chunk longer than its size", post("Transfer-Encoding: chunked\r\n", "3\r\nhello\r\n0\r\n\r\n"), Forwarded(0)),
        ("chunk extension too long", post("Transfer-Encoding: chunked\r\n", &format!("5;{}\r\nhello\r\n0\r\n\r\n", "a".repeat(5000))), Forwarded(0)),
    ]
}

/// A worker that reads requests strictly and records each one it read whole (its head),
/// answering each with a 200.
async fn worker(listener: TcpListener, seen: Arc<Mutex<Vec<String>>>) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(serve(stream, seen.clone()));
    }
}

async fn serve(mut stream: TcpStream, seen: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    loop {
        let mut fields = request::fields();
        let (head_text, len, framing, target) = match request::parse(&buf, &mut fields, 64 * 1024) {
            Parsed::Head(head) => {
                let framing = match head.body {
                    BodyLength::None => Framing::Empty,
                    BodyLength::Length(n) => Framing::Length(n),
                    BodyLength::Chunked => Framing::Chunked,
                };
                let text = String::from_utf8_lossy(&buf[..head.len]).into_owned();
                (text, head.len, framing, head.target.to_string())
            }
            Parsed::Partial => {
                if !read_more(&mut stream, &mut buf).await {
                    return;
                }
                continue;
            }
            Parsed::Refused(r) => {
                panic!("the gateway sent the worker a head it refuses ({r:?}): {buf:?}")
            }
        };
        buf.drain(..len);
        let mut body = Body::request(framing);
        loop {
            match body.feed(&buf, |_| {}) {
                Ok(fed) => {
                    buf.drain(..fed.used);
                    if fed.done || body.is_done() {
                        break;
                    }
                }
                Err(e) => panic!("the gateway sent the worker a body it cannot read: {e}"),
            }
            if !read_more(&mut stream, &mut buf).await {
                // Cut off: a request the worker never read whole.
                return;
            }
        }
        let answer: &[u8] = match target.as_str() {
            "/api/health" => b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nhealth",
            "/api/end" => b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nending",
            _ => {
                seen.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(head_text);
                b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nworker"
            }
        };
        if stream.write_all(answer).await.is_err() {
            return;
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    buf.reserve(4096);
    matches!(stream.read_buf(buf).await, Ok(n) if n > 0)
}

/// Every final answer on the connection (status, body) until it closes.
async fn answers(stream: &mut TcpStream) -> (Vec<(u16, String)>, bool) {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(len)) = resp.parse(&buf) {
            let status = resp.code.unwrap_or(0);
            let length: usize = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= len + length {
                let body = String::from_utf8_lossy(&buf[len..len + length]).into_owned();
                buf.drain(..len + length);
                if status >= 200 {
                    out.push((status, body));
                }
                continue;
            }
        }
        buf.reserve(4096);
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(_)) => {}
            Err(_) => return (out, false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framings_are_refused_or_forwarded_with_the_gateways_boundaries() {
    let gw = TestGateway::start(Options {
        upstreams: false,
        gateway: "header_timeout_ms = 2000".into(),
        ..Options::default()
    })
    .await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = TcpListener::bind(gw.api)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let task = tokio::spawn(worker(listener, seen.clone()));
    let mut process = gw.process;
    process
        .wait_for_status(
            &format!("http://{}/readyz", gw.admin),
            200,
            Duration::from_secs(30),
        )
        .await;

    let rows = rows();
    assert!(rows.len() >= 60, "{} rows", rows.len());
    let mut failures = Vec::new();
    for (name, bytes, want) in rows {
        seen.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let mut c = TcpStream::connect(gw.http)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        c.write_all(format!("{bytes}{END}").as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (mut got, closed) = answers(&mut c).await;
        // The end marker's answer, when the connection got that far.
        if got.last().is_some_and(|(s, b)| *s == 200 && b == "ending") {
            got.pop();
        }
        // Let the worker finish reading what it was sent.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let heads = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));
        let from_worker = got
            .iter()
            .filter(|(s, b)| *s == 200 && b == "worker")
            .count();
        let refusal = got.iter().position(|(s, _)| *s != 200);
        let mut problems = Vec::new();
        for head in &heads {
            let xff = head.matches("x-forwarded-for: 127.0.0.1\r\n").count();
            let id = head.lines().find_map(|l| l.strip_prefix("x-request-id: "));
            if xff != 1 || id.is_none_or(|id| id.len() != 32) {
                problems.push(format!(
                    "a request the gateway did not write reached the worker: {head:?}"
                ));
            }
        }
        if from_worker != heads.len() {
            problems.push(format!(
                "{} worker answers for {} requests",
                from_worker,
                heads.len()
            ));
        }
        if let Some(at) = refusal {
            if at + 1 != got.len() || !closed {
                problems.push(format!("the connection went on after a refusal: {got:?}"));
            }
        }
        match want {
            Want::Refused(status) => {
                if got.first().map(|(s, _)| *s) != Some(status) || !heads.is_empty() {
                    problems.push(format!(
                        "want a {status} refusal, got {got:?} and {} forwarded",
                        heads.len()
                    ));
                }
            }
            Want::Forwarded(n) => {
                if heads.len() != n {
                    problems.push(format!("want {n} forwarded, got {} ({got:?})", heads.len()));
                }
            }
        }
        if !problems.is_empty() {
            failures.push(format!("{name}: {}", problems.join("; ")));
        }
    }
    task.abort();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
