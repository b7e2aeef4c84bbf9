//! What one client can make the server hold, on a real server over loopback: handlers in
//! flight per socket (the next event waits on that socket only, over WebSocket and over
//! a polling POST), auth decisions per namespace and session (a CONNECT flood reaches
//! the auth callback once), and the bytes queued for a client that never reads (its
//! session is closed, "buffer full", and nothing of it is kept).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use btp_sio::{Args, CloseReason, Config, ConnectError, DisconnectReason, Namespace, Server};
use support::*;
use tokio::sync::Semaphore;

const SIO: &str = "/socket.io/";
const MAX_INFLIGHT: usize = 3;
const MAX_BUFFERED: usize = 64 * 1024;

/// What the test application saw.
#[derive(Default)]
struct Seen {
    auth_calls: AtomicUsize,
    running: AtomicUsize,
    most_running: AtomicUsize,
    disconnects: Mutex<Vec<DisconnectReason>>,
}

/// `hold` runs until the test adds a permit to `gate`; `fast` answers at once; `big`
/// answers with 20 KB. Tokens `user-*` are accepted, anything else refused.
fn app(seen: Arc<Seen>, gate: Arc<Semaphore>) -> Server<String> {
    let auth_seen = Arc::clone(&seen);
    let hold_seen = Arc::clone(&seen);
    let ns = Namespace::new(move |handshake| {
        auth_seen.auth_calls.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            match handshake.auth["token"].as_str() {
                Some(t) if t.starts_with("user-") => Ok(t.to_owned()),
                _ => Err(ConnectError::new("unauthorized")),
            }
        }
    })
    .on("hold", move |_socket, event| {
        let seen = Arc::clone(&hold_seen);
        let gate = Arc::clone(&gate);
        async move {
            let now = seen.running.fetch_add(1, Ordering::SeqCst) + 1;
            seen.most_running.fetch_max(now, Ordering::SeqCst);
            if let Ok(permit) = gate.acquire().await {
                permit.forget();
            }
            seen.running.fetch_sub(1, Ordering::SeqCst);
            if let Some(ack) = event.ack {
                let _ = ack.send(&event.args);
            }
        }
    })
    .on("fast", |_socket, event| async move {
        if let Some(ack) = event.ack {
            let _ = ack.send(&Args::one(&"fast done").unwrap());
        }
    })
    .on("big", |_socket, event| async move {
        if let Some(ack) = event.ack {
            let _ = ack.send(&Args::one(&"x".repeat(20_000)).unwrap());
        }
    })
    .on_disconnect(move |_socket, reason| seen.disconnects.lock().unwrap().push(reason));
    let config = Config {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(2000),
        connect_timeout: Duration::from_millis(2000),
        max_inflight_events: MAX_INFLIGHT,
        max_buffered_bytes: MAX_BUFFERED,
        ..Config::default()
    };
    Server::builder(config).namespace("/", ns).build()
}

async fn connect(addr: &str, token: &str) -> Ws {
    let (mut ws, _) = Ws::open_at(addr, SIO).await;
    ws.send(&format!(r#"40{{"token":"{token}"}}"#)).await;
    let reply = ws.recv_data().await;
    assert!(reply.text().starts_with("40{\"sid\""), "{reply:?}");
    ws
}

/// A polling session connected to `/`; its poll URL.
async fn polling(addr: &str, token: &str) -> String {
    let url = polling_url(addr, SIO).await;
    let body = format!(r#"40{{"token":"{token}"}}"#);
    let posted = request_to(addr, "POST", &url, Some(body.as_bytes()), &[]).await;
    assert_eq!(posted.unwrap().status, 200);
    let connected = request_to(addr, "GET", &url, None, &[]).await.unwrap();
    assert!(connected.text().starts_with("40"), "{}", connected.text());
    url
}

async fn wait_until(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_runs_at_most_max_inflight_handlers_and_only_it_waits() {
    let seen = Arc::new(Seen::default());
    let gate = Arc::new(Semaphore::new(0));
    let addr = serve(app(Arc::clone(&seen), Arc::clone(&gate))).await;
    let mut busy = connect(&addr, "user-1").await;
    let mut other = connect(&addr, "user-1").await;

    for i in 0..8 {
        busy.send(&format!(r#"42{i}["hold",{i}]"#)).await;
    }
    wait_until("the slots to fill", || {
        seen.running.load(Ordering::SeqCst) == MAX_INFLIGHT
    })
    .await;
    // Another socket of the same user is not held up.
    other.send(r#"420["fast"]"#).await;
    assert_eq!(other.recv_data().await.text(), r#"430["fast done"]"#);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(seen.running.load(Ordering::SeqCst), MAX_INFLIGHT);

    gate.add_permits(8);
    let mut acks = Vec::new();
    for _ in 0..8 {
        acks.push(busy.recv_data().await.text().to_owned());
    }
    acks.sort();
    let want: Vec<String> = (0..8).map(|i| format!("43{i}[{i}]")).collect();
    assert_eq!(acks, want);
    assert_eq!(seen.most_running.load(Ordering::SeqCst), MAX_INFLIGHT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_post_of_many_events_is_answered_once_its_events_have_slots() {
    let seen = Arc::new(Seen::default());
    let gate = Arc::new(Semaphore::new(0));
    let server = app(Arc::clone(&seen), Arc::clone(&gate));
    let addr = serve(server.clone()).await;
    let url = polling(&addr, "user-2").await;
    let mut other = connect(&addr, "user-2").await;

    let body: Vec<String> = (0..6).map(|i| format!(r#"42{i}["hold",{i}]"#)).collect();
    let body = body.join("\u{1e}");
    let post = tokio::spawn({
        let (addr, url) = (addr.clone(), url.clone());
        async move { request_to(&addr, "POST", &url, Some(body.as_bytes()), &[]).await }
    });
    wait_until("the slots to fill", || {
        seen.running.load(Ordering::SeqCst) == MAX_INFLIGHT
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!post.is_finished(), "the POST waits for its events' slots");
    assert_eq!(server.metrics().events_held_total, 1);
    other.send(r#"420["fast"]"#).await;
    assert_eq!(other.recv_data().await.text(), r#"430["fast done"]"#);

    gate.add_permits(6);
    let answered = post.await.unwrap().unwrap();
    assert_eq!((answered.status, answered.text()), (200, "ok"));
    wait_until("every handler to end", || {
        seen.running.load(Ordering::SeqCst) == 0
    })
    .await;
    let polled = request_to(&addr, "GET", &url, None, &[]).await.unwrap();
    for i in 0..6 {
        assert!(
            polled.text().contains(&format!("43{i}[{i}]")),
            "{}",
            polled.text()
        );
    }
    assert_eq!(seen.most_running.load(Ordering::SeqCst), MAX_INFLIGHT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connects_reaches_the_auth_callback_once_per_namespace() {
    let seen = Arc::new(Seen::default());
    let server = app(Arc::clone(&seen), Arc::new(Semaphore::new(0)));
    let addr = serve(server.clone()).await;
    let url = polling_url(&addr, SIO).await;
    let body = vec![r#"40{"token":"forged"}"#; 2000].join("\u{1e}");
    let posted = request_to(&addr, "POST", &url, Some(body.as_bytes()), &[]).await;
    assert_eq!(posted.unwrap().status, 200);
    let answered = request_to(&addr, "GET", &url, None, &[]).await.unwrap();
    assert_eq!(answered.text(), r#"44{"message":"unauthorized"}"#);
    assert_eq!(seen.auth_calls.load(Ordering::SeqCst), 1);
    assert_eq!(server.metrics().connects_ignored_total, 1999);

    // Once refused, a CONNECT gets the same refusal without a second decision.
    let again = request_to(&addr, "POST", &url, Some(br#"40{"token":"user-3"}"#), &[]).await;
    assert_eq!(again.unwrap().status, 200);
    let answered = request_to(&addr, "GET", &url, None, &[]).await.unwrap();
    assert_eq!(answered.text(), r#"44{"message":"unauthorized"}"#);
    assert_eq!(seen.auth_calls.load(Ordering::SeqCst), 1);

    // A connected socket ignores a second CONNECT.
    let mut ws = connect(&addr, "user-3").await;
    ws.send(r#"40{"token":"user-3"}"#).await;
    ws.send(r#"420["fast"]"#).await;
    assert_eq!(ws.recv_data().await.text(), r#"430["fast done"]"#);
    assert_eq!(seen.auth_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_polls_is_closed_once_its_answers_pass_the_bound() {
    let seen = Arc::new(Seen::default());
    let server = app(Arc::clone(&seen), Arc::new(Semaphore::new(0)));
    let addr = serve(server.clone()).await;
    let url = polling(&addr, "user-4").await;
    // Ten 20 KB answers: the fourth would take the queue past 64 KiB.
    let body: Vec<String> = (0..10).map(|i| format!(r#"42{i}["big"]"#)).collect();
    let posted = request_to(
        &addr,
        "POST",
        &url,
        Some(body.join("\u{1e}").as_bytes()),
        &[],
    )
    .await;
    assert_eq!(posted.unwrap().status, 200);
    wait_until("the session to close", || {
        !seen.disconnects.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(
        seen.disconnects.lock().unwrap().as_slice(),
        [DisconnectReason::Closed(CloseReason::BufferFull)]
    );
    assert_eq!(
        DisconnectReason::Closed(CloseReason::BufferFull).as_str(),
        "buffer full"
    );
    let closed = server
        .metrics()
        .sessions_closed_total
        .iter()
        .find(|(reason, _)| *reason == CloseReason::BufferFull)
        .map(|(_, n)| *n);
    assert_eq!(closed, Some(1));
    assert_eq!(server.metrics().polling_sessions, 0);
    // The session is gone, and what was queued with it.
    let after = request_to(&addr, "GET", &url, None, &[]).await.unwrap();
    assert_eq!(after.status, 400);

    // A client that reads its answers as they come is never closed.
    let mut ws = connect(&addr, "user-5").await;
    for i in 0..10 {
        ws.send(&format!(r#"42{i}["big"]"#)).await;
        assert!(ws.recv_data().await.text().starts_with(&format!("43{i}[")));
    }
    assert_eq!(seen.disconnects.lock().unwrap().len(), 1);
}
