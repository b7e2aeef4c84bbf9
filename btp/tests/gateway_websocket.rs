//! WebSocket through the gateway: upgrades pass through unbuffered, the tunnel's idle
//! limit is derived from the `[realtime]` heartbeat on both sides, and a tunnel is not
//! closed right after its `101` when the upstream answers fast (Pingora issue #946, which
//! the old proxy path had to patch).

mod support;

use std::time::{Duration, Instant};

use fastwebsockets::OpCode;
use support::gateway::{Options, TestGateway};
use support::ws::{connect, echo};

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

    assert_eq!(gw.tunnels_open().await, Some(1), "one open tunnel expected");
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
