//! WebSocket through the gateway: upgrades pass through unbuffered, the tunnel's idle
//! limit is derived from the `[realtime]` heartbeat on both sides, and Pingora issue #946
//! (a tunnel closed right after its `101` when the upstream answers fast) does not happen.

mod support;

use std::time::{Duration, Instant};

use fastwebsockets::{Frame, OpCode, Payload};
use support::gateway::{Options, TestGateway};
use support::ws::{connect, Ws};

/// Send `text` and wait for its echo.
async fn echo(ws: &mut Ws, text: &str) -> Result<(), String> {
    ws.write_frame(Frame::text(Payload::Borrowed(text.as_bytes())))
        .await
        .map_err(|e| format!("write: {e}"))?;
    let frame = tokio::time::timeout(Duration::from_secs(10), ws.read_frame())
        .await
        .map_err(|_| "no echo within 10 s".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    match frame.opcode {
        OpCode::Text if frame.payload.as_ref() == text.as_bytes() => Ok(()),
        OpCode::Close => Err("closed instead of echoing".into()),
        other => Err(format!("unexpected {other:?} frame")),
    }
}

const WS_PATH: &str = "/socket.io/?EIO=4&transport=websocket";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_echoes_through_the_gateway() {
    let gw = TestGateway::start(Options::default()).await;
    let mut ws = connect(gw.http, WS_PATH)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    echo(&mut ws, "hello through pingora")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let big = "x".repeat(200_000);
    echo(&mut ws, &big).await.unwrap_or_else(|e| panic!("{e}"));

    let metrics = reqwest::get(gw.admin_url("/metrics"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    assert!(
        metrics.contains("btp_gateway_tunnels_open 1"),
        "one open tunnel expected in:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgraded_stream_outlives_the_heartbeat_while_traffic_flows_and_closes_when_it_stops() {
    // Heartbeat 300 + 200 ms: the derived tunnel idle limit is that plus the margin.
    let gw = TestGateway::start(Options {
        realtime: "ping_interval_ms = 300\nping_timeout_ms = 200\n".into(),
        ..Options::default()
    })
    .await;
    let mut ws = connect(gw.http, WS_PATH)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // Traffic for well past one heartbeat cycle and past the idle limit itself.
    let flowing = Instant::now();
    let mut n = 0;
    while flowing.elapsed() < Duration::from_secs(5) {
        echo(&mut ws, &format!("tick {n}"))
            .await
            .unwrap_or_else(|e| {
                panic!("tunnel broke after {:?} of traffic: {e}", flowing.elapsed())
            });
        n += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Silence: the gateway must cut the tunnel, not hold it forever.
    let silent = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match ws.read_frame().await {
                Ok(frame) if frame.opcode == OpCode::Close => return,
                Ok(_) => continue,
                Err(_) => return,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "idle tunnel still open after 30 s");
    let lived = silent.elapsed();
    assert!(
        lived >= Duration::from_secs(1),
        "idle tunnel cut after {lived:?}, before a heartbeat cycle plus margin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_sequential_handshakes_never_close_right_after_101() {
    let gw = TestGateway::start(Options::default()).await;
    let mut failures = Vec::new();
    for i in 0..2_000 {
        let result = async {
            let mut ws = connect(gw.http, WS_PATH).await?;
            echo(&mut ws, &format!("handshake {i}")).await
        }
        .await;
        if let Err(e) = result {
            failures.push(format!("#{i}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 2000 tunnels failed, first ones: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}
