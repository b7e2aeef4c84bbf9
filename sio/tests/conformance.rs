//! Conformance suite written from the Engine.IO v4 and Socket.IO v5 protocol
//! specifications, speaking raw HTTP and WebSocket. Run against the in-process harness
//! by default, or against any server running the standard harness with
//! `SIO_CONFORMANCE_URL=http://127.0.0.1:PORT` (see `support`).

mod support;

use std::time::{Duration, Instant};

use support::*;

const SIO: &str = "/socket.io/";
const EIO: &str = "/engine.io/";

/// Whether the target serves the bare Engine.IO echo endpoint.
async fn engine_endpoint() -> bool {
    let available = request("GET", &format!("{EIO}?EIO=4&transport=polling"), None, &[])
        .await
        .is_ok_and(|r| r.status == 200);
    if !available {
        eprintln!("target has no {EIO}; skipping");
    }
    available
}

fn url(base: &str, sid: &str, transport: &str) -> String {
    format!("{base}?EIO=4&transport={transport}&sid={sid}")
}

// ---------------------------------------------------------------- handshake

#[tokio::test]
async fn polling_handshake_is_an_open_packet_with_sid_upgrades_and_timing() {
    let response = get(&format!("{SIO}?EIO=4&transport=polling")).await;
    assert_eq!(response.status, 200);
    let text = response.text();
    assert!(text.starts_with('0'));
    let value: serde_json::Value = serde_json::from_str(&text[1..]).unwrap();
    let mut keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "maxPayload",
            "pingInterval",
            "pingTimeout",
            "sid",
            "upgrades"
        ]
    );
    assert!(value["sid"].as_str().unwrap().len() >= 20);
    assert_eq!(value["upgrades"], serde_json::json!(["websocket"]));
    assert_eq!(value["pingInterval"], 300);
    assert_eq!(value["pingTimeout"], 200);
    assert_eq!(value["maxPayload"], 1_000_000);
}

#[tokio::test]
async fn websocket_handshake_is_an_open_packet_without_upgrades() {
    let (_ws, open) = Ws::open(SIO).await;
    let value: serde_json::Value = serde_json::from_str(&open[1..]).unwrap();
    assert_eq!(value["upgrades"], serde_json::json!([]));
    assert_eq!(value["pingInterval"], 300);
    assert_eq!(value["pingTimeout"], 200);
    assert_eq!(value["maxPayload"], 1_000_000);
    assert!(value["sid"].is_string());
}

#[tokio::test]
async fn missing_or_unsupported_eio_is_400_code_5() {
    for query in [
        "transport=polling",
        "EIO=abc&transport=polling",
        "EIO=3&transport=polling",
    ] {
        let response = get(&format!("{SIO}?{query}")).await;
        assert_eq!(response.status, 400, "{query}");
        assert_eq!(response.json()["code"], 5, "{query}");
        assert_eq!(response.json()["message"], "Unsupported protocol version");
    }
}

#[tokio::test]
async fn missing_or_unknown_transport_is_400_code_0() {
    for query in ["EIO=4", "EIO=4&transport=abc"] {
        let response = get(&format!("{SIO}?{query}")).await;
        assert_eq!(response.status, 400, "{query}");
        assert_eq!(response.json()["code"], 0);
        assert_eq!(response.json()["message"], "Transport unknown");
    }
}

#[tokio::test]
async fn handshake_with_another_method_than_get_is_400_code_2() {
    for method in ["POST", "PUT"] {
        let response = request(
            method,
            &format!("{SIO}?EIO=4&transport=polling"),
            Some(b""),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(response.status, 400, "{method}");
        assert_eq!(response.json()["code"], 2);
    }
}

#[tokio::test]
async fn unknown_sid_is_400_code_1() {
    let response = get(&url(SIO, "doesnotexist", "polling")).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["code"], 1);
    assert_eq!(response.json()["message"], "Session ID unknown");
    assert!(ws_connect(&url(SIO, "doesnotexist", "websocket"))
        .await
        .is_err());
}

#[tokio::test]
async fn websocket_with_bad_eio_or_transport_is_refused() {
    for query in [
        "transport=websocket",
        "EIO=abc&transport=websocket",
        "EIO=4",
        "EIO=4&transport=abc",
    ] {
        assert!(
            ws_connect(&format!("{SIO}?{query}")).await.is_err(),
            "{query}"
        );
    }
}

#[tokio::test]
async fn cors_any_answers_star_without_credentials_and_preflight_succeeds() {
    let origin = [("Origin", "https://app.example")];
    let response = request(
        "GET",
        &format!("{SIO}?EIO=4&transport=polling"),
        None,
        &origin,
    )
    .await
    .unwrap();
    assert_eq!(response.headers["access-control-allow-origin"], "*");
    assert!(response
        .headers
        .get("access-control-allow-credentials")
        .is_none());
    let preflight = request(
        "OPTIONS",
        &format!("{SIO}?EIO=4&transport=polling"),
        None,
        &[
            ("Origin", "https://app.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
    )
    .await
    .unwrap();
    assert!(preflight.status == 204 || preflight.status == 200);
    assert_eq!(preflight.headers["access-control-allow-origin"], "*");
}

// ---------------------------------------------------------------- heartbeat

#[tokio::test]
async fn websocket_first_ping_comes_about_one_interval_after_handshake() {
    let (mut ws, _) = Ws::open(SIO).await;
    let opened = Instant::now();
    assert_eq!(ws.recv().await, Msg::Text("2".into()));
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "ping after {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(2000),
        "ping after {waited:?}"
    );
}

#[tokio::test]
async fn polling_first_ping_comes_about_one_interval_after_handshake() {
    let opened = Instant::now();
    let sid = polling_session(SIO).await;
    let response = get(&url(SIO, &sid, "polling")).await;
    let waited = opened.elapsed();
    assert_eq!((response.status, response.text()), (200, "2"));
    assert!(
        waited >= Duration::from_millis(250),
        "ping after {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(2000),
        "ping after {waited:?}"
    );
}

#[tokio::test]
async fn websocket_heartbeat_keeps_the_session_alive() {
    let (mut ws, _) = Ws::open(SIO).await;
    for _ in 0..3 {
        assert_eq!(ws.recv().await, Msg::Text("2".into()));
        ws.send("3").await;
    }
}

#[tokio::test]
async fn polling_heartbeat_keeps_the_session_alive() {
    let sid = polling_session(SIO).await;
    for _ in 0..3 {
        let poll = get(&url(SIO, &sid, "polling")).await;
        assert_eq!((poll.status, poll.text()), (200, "2"));
        let pong = post(&url(SIO, &sid, "polling"), b"3").await;
        assert_eq!((pong.status, pong.text()), (200, "ok"));
    }
}

#[tokio::test]
async fn polling_session_closes_after_ping_timeout() {
    let sid = polling_session(SIO).await;
    tokio::time::sleep(PING_INTERVAL + PING_TIMEOUT + Duration::from_millis(300)).await;
    let poll = get(&url(SIO, &sid, "polling")).await;
    assert!(
        poll.status == 400 || (poll.status == 200 && poll.text().ends_with('1')),
        "{} {}",
        poll.status,
        poll.text()
    );
    let again = get(&url(SIO, &sid, "polling")).await;
    assert_eq!(again.status, 400);
}

#[tokio::test]
async fn websocket_session_closes_after_ping_timeout() {
    let (mut ws, _) = Ws::open(SIO).await;
    let opened = Instant::now();
    loop {
        match ws.recv().await {
            Msg::Closed => break,
            Msg::Text(t) if t == "2" => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_millis(450),
        "closed after {waited:?}"
    );
}

#[tokio::test]
async fn client_ping_is_a_protocol_error_in_v4() {
    let (mut ws, _) = Ws::open(SIO).await;
    ws.send("2").await;
    assert!(ws.closed_within(PATIENCE).await);
}

// ---------------------------------------------------------------- messages

#[tokio::test]
async fn polling_echoes_text_and_base64_binary_in_one_payload() {
    if !engine_endpoint().await {
        return;
    }
    let sid = polling_session(EIO).await;
    let pushed = post(&url(EIO, &sid, "polling"), b"4hello\x1ebAQIDBA==\x1e4world").await;
    assert_eq!((pushed.status, pushed.text()), (200, "ok"));
    let poll = get(&url(EIO, &sid, "polling")).await;
    assert_eq!(poll.status, 200);
    assert_eq!(poll.text(), "4hello\x1ebAQIDBA==\x1e4world");
    assert!(poll.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
}

#[tokio::test]
async fn websocket_echoes_text_and_binary() {
    if !engine_endpoint().await {
        return;
    }
    let (mut ws, _) = Ws::open(EIO).await;
    ws.send("4hello").await;
    assert_eq!(ws.recv_data().await, Msg::Text("4hello".into()));
    ws.send_binary(&[1, 2, 3, 4]).await;
    assert_eq!(ws.recv_data().await, Msg::Binary(vec![1, 2, 3, 4]));
}

#[tokio::test]
async fn polling_invalid_packet_closes_the_session() {
    let sid = polling_session(SIO).await;
    let pushed = post(&url(SIO, &sid, "polling"), b"abc").await;
    assert_eq!(pushed.status, 400);
    let poll = get(&url(SIO, &sid, "polling")).await;
    assert_eq!(poll.status, 400);
}

#[tokio::test]
async fn websocket_invalid_packet_closes_the_session() {
    let (mut ws, _) = Ws::open(SIO).await;
    ws.send("abc").await;
    assert!(ws.closed_within(PATIENCE).await);
}

#[tokio::test]
async fn concurrent_polling_get_closes_the_session() {
    let sid = polling_session(SIO).await;
    let first = tokio::spawn({
        let u = url(SIO, &sid, "polling");
        async move { get(&u).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = get(&url(SIO, &sid, "polling")).await;
    assert_eq!(second.status, 400);
    let first = first.await.unwrap();
    assert_eq!((first.status, first.text()), (200, "1"));
    let after = get(&url(SIO, &sid, "polling")).await;
    assert_eq!(after.status, 400);
}

#[tokio::test]
async fn polling_client_close_answers_pending_get_with_noop() {
    let sid = polling_session(SIO).await;
    let pending = tokio::spawn({
        let u = url(SIO, &sid, "polling");
        async move { get(&u).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let closed = post(&url(SIO, &sid, "polling"), b"1").await;
    assert_eq!(closed.status, 200);
    let pending = pending.await.unwrap();
    assert_eq!((pending.status, pending.text()), (200, "6"));
    assert_eq!(get(&url(SIO, &sid, "polling")).await.status, 400);
}

#[tokio::test]
async fn websocket_client_close_packet_closes_the_connection() {
    let (mut ws, _) = Ws::open(SIO).await;
    ws.send("1").await;
    assert!(ws.closed_within(PATIENCE).await);
}

#[tokio::test]
async fn polling_post_over_max_payload_is_refused_and_closes() {
    let sid = polling_session(SIO).await;
    let big = vec![b'x'; 1_000_100];
    let mut body = b"4".to_vec();
    body.extend_from_slice(&big);
    let response = request("POST", &url(SIO, &sid, "polling"), Some(&body), &[]).await;
    if let Ok(response) = response {
        assert_eq!(response.status, 413);
    }
    assert_eq!(get(&url(SIO, &sid, "polling")).await.status, 400);
}

#[tokio::test]
async fn websocket_message_over_max_payload_closes() {
    let (mut ws, _) = Ws::open(SIO).await;
    let mut text = String::from("4");
    text.push_str(&"x".repeat(1_000_100));
    ws.send(&text).await;
    assert!(ws.closed_within(PATIENCE).await);
}

#[tokio::test]
async fn websocket_carries_a_message_near_max_payload_then_a_burst_of_small_ones() {
    let mut ws = sio_socket(SIO).await;
    // One frame far larger than a server's initial read buffer, just under maxPayload.
    let big = "y".repeat(999_000);
    let packet = format!(r#"42["message","{big}"]"#);
    assert!(packet.len() < 1_000_000);
    ws.send(&packet).await;
    assert_eq!(
        ws.recv_data().await.text(),
        format!(r#"42["message-back","{big}"]"#)
    );
    // Small frames written back to back, so that one read holds many of them.
    for i in 0..200 {
        ws.send(&format!(r#"42["message",{i}]"#)).await;
    }
    for i in 0..200 {
        assert_eq!(
            ws.recv_data().await.text(),
            format!(r#"42["message-back",{i}]"#)
        );
    }
}

// ---------------------------------------------------------------- upgrade

#[tokio::test]
async fn upgrade_probe_noops_the_pending_poll_then_moves_to_websocket() {
    let sid = polling_session(SIO).await;
    let pending = tokio::spawn({
        let u = url(SIO, &sid, "polling");
        async move { get(&u).await }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut ws = ws_connect(&url(SIO, &sid, "websocket")).await.unwrap();
    ws.send("2probe").await;
    assert_eq!(ws.recv().await, Msg::Text("3probe".into()));
    let pending = pending.await.unwrap();
    assert_eq!(pending.status, 200);
    assert!(pending.text() == "6" || pending.text().ends_with("\x1e6") || pending.text() == "2");
    ws.send("5").await;
    // The session now lives on the WebSocket: Socket.IO works there, heartbeat included.
    ws.send("40").await;
    assert!(ws.recv_data().await.text().starts_with("40{\"sid\":"));
    assert_eq!(ws.recv_data().await.text(), r#"42["auth",{}]"#);
    ws.send(r#"42["message","after upgrade"]"#).await;
    assert_eq!(
        ws.recv_data().await.text(),
        r#"42["message-back","after upgrade"]"#
    );
}

#[tokio::test]
async fn polling_during_upgrade_gets_noop() {
    let sid = polling_session(SIO).await;
    let mut ws = ws_connect(&url(SIO, &sid, "websocket")).await.unwrap();
    for _ in 0..3 {
        let poll = get(&url(SIO, &sid, "polling")).await;
        assert_eq!(poll.status, 200);
        assert!(
            poll.text().ends_with('6') || poll.text() == "2",
            "{}",
            poll.text()
        );
    }
    ws.send("2probe").await;
    assert_eq!(ws.recv().await, Msg::Text("3probe".into()));
}

#[tokio::test]
async fn polling_after_upgrade_is_400() {
    let sid = polling_session(SIO).await;
    let mut ws = ws_connect(&url(SIO, &sid, "websocket")).await.unwrap();
    ws.send("2probe").await;
    assert_eq!(ws.recv().await, Msg::Text("3probe".into()));
    ws.send("5").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let poll = get(&url(SIO, &sid, "polling")).await;
    assert_eq!(poll.status, 400);
    assert_eq!(poll.json()["code"], 3);
}

/// The reference server completes the handshake of a second WebSocket for a session
/// that is on WebSocket or upgrading already, then closes it; the session goes on.
#[tokio::test]
async fn second_websocket_with_the_same_sid_is_opened_then_closed_and_the_first_goes_on() {
    let sid = polling_session(SIO).await;
    let mut ws = ws_connect(&url(SIO, &sid, "websocket")).await.unwrap();
    ws.send("2probe").await;
    assert_eq!(ws.recv().await, Msg::Text("3probe".into()));

    // While the first is upgrading.
    let mut during = ws_connect(&url(SIO, &sid, "websocket"))
        .await
        .expect("101 while upgrading");
    assert!(during.closed_within(Duration::from_secs(2)).await);

    ws.send("5").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Once upgraded.
    let mut after = ws_connect(&url(SIO, &sid, "websocket"))
        .await
        .expect("101 once upgraded");
    assert!(after.closed_within(Duration::from_secs(2)).await);

    ws.send("40").await;
    assert!(ws.recv_data().await.text().starts_with("40{"));
    assert_eq!(ws.recv_data().await.text(), r#"42["auth",{}]"#);
    ws.send(r#"42["message","still here"]"#).await;
    assert_eq!(
        ws.recv_data().await.text(),
        r#"42["message-back","still here"]"#
    );
}

#[tokio::test]
async fn websocket_for_an_unknown_sid_is_refused() {
    assert!(ws_connect(&url(SIO, "00unknown-session-id", "websocket"))
        .await
        .is_err());
}

// ---------------------------------------------------------------- Socket.IO connect

#[tokio::test]
async fn connect_to_main_namespace_answers_sid_then_auth_event() {
    let (mut ws, open) = Ws::open(SIO).await;
    let engine_sid = open_sid(&open);
    ws.send("40").await;
    let connect = ws.recv_data().await;
    let connect = connect.text();
    assert!(connect.starts_with("40"));
    let data: serde_json::Value = serde_json::from_str(&connect[2..]).unwrap();
    assert_eq!(
        data.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["sid"]
    );
    let socket_id = data["sid"].as_str().unwrap();
    assert_ne!(
        socket_id, engine_sid,
        "the Engine.IO sid must not be reused"
    );
    assert_eq!(ws.recv_data().await.text(), r#"42["auth",{}]"#);
}

#[tokio::test]
async fn connect_with_auth_payload_is_passed_to_the_namespace() {
    let (mut ws, _) = Ws::open(SIO).await;
    ws.send(r#"40{"token":"123"}"#).await;
    assert!(ws.recv_data().await.text().starts_with("40{"));
    assert_eq!(ws.recv_data().await.text(), r#"42["auth",{"token":"123"}]"#);
}

#[tokio::test]
async fn connect_to_custom_namespace_with_and_without_payload() {
    let (mut ws, _) = Ws::open(SIO).await;
    ws.send("40/custom,").await;
    assert!(ws
        .recv_data()
        .await
        .text()
        .starts_with("40/custom,{\"sid\":"));
    assert_eq!(ws.recv_data().await.text(), r#"42/custom,["auth",{}]"#);

    let (mut ws, _) = Ws::open(SIO).await;
    ws.send(r#"40/custom,{"token":"abc"}"#).await;
    assert!(ws
        .recv_data()
        .await
        .text()
        .starts_with("40/custom,{\"sid\":"));
    assert_eq!(
        ws.recv_data().await.text(),
        r#"42/custom,["auth",{"token":"abc"}]"#
    );
}

#[tokio::test]
async fn unknown_namespace_gets_connect_error_invalid_namespace() {
    let (mut ws, _) = Ws::open(SIO).await;
    ws.send("40/random").await;
    assert_eq!(
        ws.recv_data().await.text(),
        r#"44/random,{"message":"Invalid namespace"}"#
    );
}

#[tokio::test]
async fn invalid_socketio_handshake_closes_the_session() {
    let (mut ws, _) = Ws::open(SIO).await;
    ws.send("4abc").await;
    assert!(ws.closed_within(PATIENCE).await);
}

#[tokio::test]
async fn session_without_namespace_closes_after_connect_timeout() {
    let (mut ws, _) = Ws::open(SIO).await;
    let opened = Instant::now();
    assert!(ws.closed_within(Duration::from_secs(5)).await);
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}"
    );
}

#[tokio::test]
async fn connected_session_outlives_connect_timeout() {
    let mut ws = sio_socket(SIO).await;
    assert!(!ws.closed_within(Duration::from_millis(1600)).await);
    ws.send(r#"42["message","still here"]"#).await;
    assert_eq!(
        ws.recv_data().await.text(),
        r#"42["message-back","still here"]"#
    );
}

// ---------------------------------------------------------------- Socket.IO disconnect

#[tokio::test]
async fn disconnect_from_main_namespace_keeps_the_engine_session() {
    let mut ws = sio_socket(SIO).await;
    ws.send("41").await;
    assert_eq!(ws.recv().await, Msg::Text("2".into()));
    ws.send("3").await;
    ws.send(r#"42["message","ignored"]"#).await;
    assert_eq!(ws.recv_within(Duration::from_millis(200)).await, None);
}

#[tokio::test]
async fn disconnect_from_custom_namespace_leaves_main_working() {
    let mut ws = sio_socket(SIO).await;
    ws.send("40/custom").await;
    assert!(ws.recv_data().await.text().starts_with("40/custom,"));
    assert_eq!(ws.recv_data().await.text(), r#"42/custom,["auth",{}]"#);
    ws.send("41/custom").await;
    ws.send(r#"42["message","message to main namespace",1,2]"#)
        .await;
    assert_eq!(
        ws.recv_data().await.text(),
        r#"42["message-back","message to main namespace",1,2]"#
    );
}

// ---------------------------------------------------------------- Socket.IO events

#[tokio::test]
async fn event_arguments_come_back_unchanged() {
    let mut ws = sio_socket(SIO).await;
    ws.send(r#"42["message",1,"2",{"3":[true],"b":1,"a":2}]"#)
        .await;
    assert_eq!(
        ws.recv_data().await.text(),
        r#"42["message-back",1,"2",{"3":[true],"b":1,"a":2}]"#
    );
}

#[tokio::test]
async fn binary_event_comes_back_with_its_attachments() {
    let mut ws = sio_socket(SIO).await;
    ws.send(r#"452-["message",1,{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
        .await;
    ws.send_binary(&[1, 2, 3]).await;
    ws.send_binary(&[4, 5, 6]).await;
    assert_eq!(
        ws.recv_data().await.text(),
        r#"452-["message-back",1,{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#
    );
    assert_eq!(ws.recv_data().await, Msg::Binary(vec![1, 2, 3]));
    assert_eq!(ws.recv_data().await, Msg::Binary(vec![4, 5, 6]));
}

#[tokio::test]
async fn event_with_ack_id_is_acknowledged_with_its_arguments() {
    let mut ws = sio_socket(SIO).await;
    ws.send(r#"42456["message-with-ack",1,"2",{"3":[false]}]"#)
        .await;
    assert_eq!(ws.recv_data().await.text(), r#"43456[1,"2",{"3":[false]}]"#);
}

#[tokio::test]
async fn binary_event_with_ack_gets_binary_ack() {
    let mut ws = sio_socket(SIO).await;
    ws.send(r#"452-789["message-with-ack",1,{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
        .await;
    ws.send_binary(&[1, 2, 3]).await;
    ws.send_binary(&[4, 5, 6]).await;
    assert_eq!(
        ws.recv_data().await.text(),
        r#"462-789[1,{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#
    );
    assert_eq!(ws.recv_data().await, Msg::Binary(vec![1, 2, 3]));
    assert_eq!(ws.recv_data().await, Msg::Binary(vec![4, 5, 6]));
}

#[tokio::test]
async fn server_emit_with_ack_resolves_with_client_ack() {
    let mut ws = sio_socket(SIO).await;
    ws.send(r#"42["emit-with-ack",1,"2",{"3":[true]}]"#).await;
    let request = ws.recv_data().await;
    let request = request.text();
    let rest = request.strip_prefix("42").unwrap();
    let id: String = rest.chars().take_while(char::is_ascii_digit).collect();
    assert!(!id.is_empty(), "{request}");
    assert_eq!(&rest[id.len()..], r#"["emit-with-ack",1,"2",{"3":[true]}]"#);
    ws.send(&format!(r#"43{id}[1,"2",{{"3":[true]}}]"#)).await;
    assert_eq!(
        ws.recv_data().await.text(),
        r#"42["emit-with-ack",1,"2",{"3":[true]}]"#
    );
}

#[tokio::test]
async fn server_emit_with_binary_ack_resolves_with_attachments() {
    let mut ws = sio_socket(SIO).await;
    let data = r#"{"_placeholder":true,"num":0},{"_placeholder":true,"num":1},"test""#;
    ws.send(&format!(r#"452-["emit-with-ack",{data}]"#)).await;
    ws.send_binary(&[1, 2, 3]).await;
    ws.send_binary(&[4, 5, 6]).await;
    let request = ws.recv_data().await;
    let request = request.text().to_owned();
    let rest = request.strip_prefix("452-").unwrap();
    let id: String = rest.chars().take_while(char::is_ascii_digit).collect();
    assert_eq!(&rest[id.len()..], format!(r#"["emit-with-ack",{data}]"#));
    assert_eq!(ws.recv_data().await, Msg::Binary(vec![1, 2, 3]));
    assert_eq!(ws.recv_data().await, Msg::Binary(vec![4, 5, 6]));
    ws.send(&format!("462-{id}[{data}]")).await;
    ws.send_binary(&[1, 2, 3]).await;
    ws.send_binary(&[4, 5, 6]).await;
    assert_eq!(
        ws.recv_data().await.text(),
        format!(r#"452-["emit-with-ack",{data}]"#)
    );
    assert_eq!(ws.recv_data().await, Msg::Binary(vec![1, 2, 3]));
    assert_eq!(ws.recv_data().await, Msg::Binary(vec![4, 5, 6]));
}

#[tokio::test]
async fn malformed_socketio_packets_close_the_session() {
    for bad in [
        "4abc",
        "42{}",
        r#"42abc["message-with-ack",1,"2",{"3":[false]}]"#,
        r#"42["connect"]"#,
        r#"43[1]"#,
    ] {
        let mut ws = sio_socket(SIO).await;
        ws.send(bad).await;
        assert!(ws.closed_within(PATIENCE).await, "{bad} did not close");
    }
}

#[tokio::test]
async fn binary_attachment_without_packet_closes_the_session() {
    let mut ws = sio_socket(SIO).await;
    ws.send_binary(&[1, 2, 3]).await;
    assert!(ws.closed_within(PATIENCE).await);
}

#[tokio::test]
async fn malformed_packet_closes_only_that_session() {
    let mut bad = sio_socket(SIO).await;
    let mut good = sio_socket(SIO).await;
    bad.send("42{}").await;
    assert!(bad.closed_within(PATIENCE).await);
    good.send(r#"42["message","fine"]"#).await;
    assert_eq!(
        good.recv_data().await.text(),
        r#"42["message-back","fine"]"#
    );
}

#[tokio::test]
async fn socketio_over_polling_connects_emits_and_acks() {
    let sid = polling_session(SIO).await;
    let u = url(SIO, &sid, "polling");
    assert_eq!(post(&u, br#"40{"token":"p"}"#).await.text(), "ok");
    let mut received = String::new();
    while !received.contains("auth") {
        let poll = get(&u).await;
        assert_eq!(poll.status, 200);
        received.push_str(poll.text());
        received.push('\x1e');
    }
    assert!(received.contains("40{\"sid\":"), "{received}");
    assert!(
        received.contains(r#"42["auth",{"token":"p"}]"#),
        "{received}"
    );
    let body = "42[\"message\",\"a\"]\x1e421[\"message-with-ack\",\"b\"]";
    assert_eq!(post(&u, body.as_bytes()).await.text(), "ok");
    let mut received = String::new();
    while !(received.contains("message-back") && received.contains("431")) {
        let poll = get(&u).await;
        assert_eq!(poll.status, 200);
        for packet in poll.text().split('\x1e') {
            if packet == "2" {
                post(&u, b"3").await;
            }
        }
        received.push_str(poll.text());
        received.push('\x1e');
    }
    assert!(received.contains(r#"42["message-back","a"]"#), "{received}");
    assert!(received.contains(r#"431["b"]"#), "{received}");
}

#[tokio::test]
async fn polling_binary_event_uses_base64_records() {
    let sid = polling_session(SIO).await;
    let u = url(SIO, &sid, "polling");
    post(&u, b"40").await;
    let mut received = String::new();
    while !received.contains("auth") {
        received.push_str(get(&u).await.text());
    }
    let body = "451-[\"message\",{\"_placeholder\":true,\"num\":0}]\x1ebAQID";
    assert_eq!(post(&u, body.as_bytes()).await.text(), "ok");
    let mut received = String::new();
    while !received.contains("bAQID") {
        let poll = get(&u).await;
        assert_eq!(poll.status, 200);
        received.push_str(poll.text());
        received.push('\x1e');
    }
    assert!(
        received.contains("451-[\"message-back\",{\"_placeholder\":true,\"num\":0}]\x1ebAQID"),
        "{received:?}"
    );
}
