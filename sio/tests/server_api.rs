//! The application API on a real server over loopback: auth callback and CONNECT_ERROR,
//! rooms and broadcast with exclusion, async handlers that do not block the session,
//! metrics by transport, graceful shutdown, sid prefix, CORS allow-list.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use btp_sio::{Args, CloseReason, Config, ConnectError, Cors, DisconnectReason, Namespace, Server};
use support::*;

const SIO: &str = "/socket.io/";

struct User {
    id: String,
    client_session_id: String,
}

fn config() -> Config {
    Config {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        connect_timeout: Duration::from_millis(1000),
        sid_prefix: "0a".into(),
        cors: Cors::Origins(vec!["app://btp".into(), "null".into()]),
        ..Config::default()
    }
}

fn app(disconnects: Arc<AtomicUsize>) -> Server<User> {
    let ns = Namespace::new(|handshake| async move {
        // Stands in for a database lookup.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let token = handshake.auth["token"].as_str().unwrap_or_default();
        match token.strip_prefix("user-") {
            Some(id) => Ok(User {
                id: id.to_owned(),
                client_session_id: handshake.auth["clientSessionId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            }),
            None => Err(ConnectError::new("unauthorized")),
        }
    })
    .on_connection(|socket| socket.join(&format!("user:{}", socket.data().id)))
    .on("slow", |_socket, event| async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        if let Some(ack) = event.ack {
            let _ = ack.send(&Args::one(&"slow done").unwrap());
        }
    })
    .on("fast", |_socket, event| async move {
        if let Some(ack) = event.ack {
            let _ = ack.send(&Args::one(&"fast done").unwrap());
        }
    })
    .on("bye", |socket, _event| async move { socket.disconnect() })
    .on_disconnect(move |_socket, reason| {
        if reason == DisconnectReason::Closed(CloseReason::ServerShutdown) {
            disconnects.fetch_add(1, Ordering::SeqCst);
        }
    });
    Server::builder(config()).namespace("/", ns).build()
}

async fn connect(addr: &str, auth: &str) -> Ws {
    let (mut ws, _) = Ws::open_at(addr, SIO).await;
    ws.send(&format!("40{auth}")).await;
    let reply = ws.recv_data().await;
    assert!(reply.text().starts_with("40{\"sid\""), "{reply:?}");
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_callback_rejection_is_connect_error_unauthorized() {
    let addr = serve(app(Arc::default())).await;
    let (mut ws, _) = Ws::open_at(&addr, SIO).await;
    ws.send(r#"40{"token":"nope"}"#).await;
    assert_eq!(
        ws.recv_data().await.text(),
        r#"44{"message":"unauthorized"}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_the_users_other_sessions_never_the_origin_or_other_users() {
    let server = app(Arc::default());
    let addr = serve(server.clone()).await;
    let mut a = connect(&addr, r#"{"token":"user-42","clientSessionId":"A"}"#).await;
    let mut b = connect(&addr, r#"{"token":"user-42","clientSessionId":"B"}"#).await;
    let mut c = connect(&addr, r#"{"token":"user-7","clientSessionId":"C"}"#).await;
    let change = Args::one(&serde_json::json!({"from": 1, "to": 2, "changes": []})).unwrap();
    let sent = server.broadcast("/", Some("user:42"), "sync:changes", &change, |s| {
        s.data().client_session_id == "A"
    });
    assert_eq!(sent, 1);
    assert_eq!(server.room("/", "user:42").len(), 2);
    assert_eq!(
        b.recv_data().await.text(),
        r#"42["sync:changes",{"changes":[],"from":1,"to":2}]"#
    );
    for ws in [&mut a, &mut c] {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(400);
        while let Some(msg) = ws.recv_within(deadline - tokio::time::Instant::now()).await {
            assert_eq!(msg, Msg::Text("2".into()), "unexpected delivery");
            ws.send("3").await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handler_blocks_neither_heartbeat_nor_other_events() {
    let addr = serve(app(Arc::default())).await;
    let mut ws = connect(&addr, r#"{"token":"user-1"}"#).await;
    ws.send(r#"421["slow"]"#).await;
    ws.send(r#"422["fast"]"#).await;
    assert_eq!(ws.recv_data().await.text(), r#"432["fast done"]"#);
    // The slow handler outlasts ping interval + timeout; pongs keep the session alive.
    assert_eq!(ws.recv_data().await.text(), r#"431["slow done"]"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_sessions_by_transport_and_events() {
    let server = app(Arc::default());
    let addr = serve(server.clone()).await;
    let mut ws = connect(&addr, r#"{"token":"user-1"}"#).await;
    let open = request_to(
        &addr,
        "GET",
        &format!("{SIO}?EIO=4&transport=polling"),
        None,
        &[],
    )
    .await
    .unwrap();
    assert_eq!(open.status, 200);
    ws.send(r#"421["fast"]"#).await;
    ws.recv_data().await;
    let m = server.metrics();
    assert_eq!(m.websocket_sessions, 1);
    assert_eq!(m.polling_sessions, 1);
    assert_eq!(m.sockets, 1);
    assert_eq!(m.events_received_total, 1);
    assert!(m.events_sent_total >= 1);
    ws.send("1").await;
    assert!(ws.closed_within(PATIENCE).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.metrics().websocket_sessions, 0);
    assert_eq!(server.metrics().sockets, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_session_so_clients_reconnect() {
    let disconnects = Arc::new(AtomicUsize::new(0));
    let server = app(Arc::clone(&disconnects));
    let addr = serve(server.clone()).await;
    let mut ws = connect(&addr, r#"{"token":"user-1"}"#).await;
    let open = request_to(
        &addr,
        "GET",
        &format!("{SIO}?EIO=4&transport=polling"),
        None,
        &[],
    )
    .await
    .unwrap();
    let sid = open_sid(open.text());
    let poll_url = format!("{SIO}?EIO=4&transport=polling&sid={sid}");
    let post = request_to(
        &addr,
        "POST",
        &poll_url,
        Some(br#"40{"token":"user-2"}"#),
        &[],
    );
    assert_eq!(post.await.unwrap().status, 200);
    let first = request_to(&addr, "GET", &poll_url, None, &[])
        .await
        .unwrap();
    assert!(first.text().starts_with("40"), "{}", first.text());
    let pending = tokio::spawn({
        let addr = addr.clone();
        async move { request_to(&addr, "GET", &poll_url, None, &[]).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;

    tokio::time::timeout(PATIENCE, server.shutdown())
        .await
        .unwrap();

    assert!(ws.closed_within(PATIENCE).await);
    let pending = pending.await.unwrap().unwrap();
    assert_eq!(pending.status, 200);
    assert!(pending.text().ends_with('1'), "{}", pending.text());
    assert_eq!(disconnects.load(Ordering::SeqCst), 2);
    let refused = request_to(
        &addr,
        "GET",
        &format!("{SIO}?EIO=4&transport=polling"),
        None,
        &[],
    )
    .await
    .unwrap();
    assert_eq!(refused.status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_disconnect_sends_disconnect_packet() {
    let addr = serve(app(Arc::default())).await;
    let mut ws = connect(&addr, r#"{"token":"user-1"}"#).await;
    ws.send(r#"42["bye"]"#).await;
    assert_eq!(ws.recv_data().await.text(), "41");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sids_start_with_the_configured_prefix() {
    let addr = serve(app(Arc::default())).await;
    let open = request_to(
        &addr,
        "GET",
        &format!("{SIO}?EIO=4&transport=polling"),
        None,
        &[],
    )
    .await
    .unwrap();
    let sid = open_sid(open.text());
    assert!(sid.starts_with("0a"), "{sid}");
    assert!(sid.len() >= 22);
    assert!(sid[2..]
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allow_list_reflects_listed_origins_with_credentials_only() {
    let addr = serve(app(Arc::default())).await;
    let path = format!("{SIO}?EIO=4&transport=polling");
    for origin in ["app://btp", "null"] {
        let r = request_to(&addr, "GET", &path, None, &[("Origin", origin)])
            .await
            .unwrap();
        assert_eq!(r.headers["access-control-allow-origin"], origin);
        assert_eq!(r.headers["access-control-allow-credentials"], "true");
    }
    let r = request_to(
        &addr,
        "GET",
        &path,
        None,
        &[("Origin", "https://evil.example")],
    )
    .await
    .unwrap();
    assert!(r.headers.get("access-control-allow-origin").is_none());
    let preflight = request_to(
        &addr,
        "OPTIONS",
        &path,
        None,
        &[
            ("Origin", "app://btp"),
            ("Access-Control-Request-Method", "POST"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.headers["access-control-allow-origin"],
        "app://btp"
    );
    assert_eq!(
        preflight.headers["access-control-allow-credentials"],
        "true"
    );
}
