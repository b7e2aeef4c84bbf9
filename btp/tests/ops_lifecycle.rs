//! Operating `btp up` the way nginx + pm2 were operated, on the real binary: a crashed
//! worker comes back by itself without losing an acknowledged op; SIGTERM stops in order;
//! a reload validates first and never drops an open socket; a rolling restart and a
//! binary upgrade fail no request, and an unprivileged user cannot take the listeners in
//! one; both processes' metrics pass `promtool`.

mod ops;
mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use ops::{child_pids, get_ok, metric, serial, signal, End, Load, Sio, Stack};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_is_back_within_5s_and_no_acknowledged_op_is_lost() {
    let _serial = serial().await;
    let mut stack = Stack::start("").await;
    let token = stack.register().await;
    let applied = Arc::new(Mutex::new(HashSet::new()));

    let (client, url, tok, acked) = (
        stack.client.clone(),
        stack.url("/api/sync/push"),
        token.clone(),
        applied.clone(),
    );
    let load = Load::start(4, move |l, i| {
        let (client, url, tok, acked) = (client.clone(), url.clone(), tok.clone(), acked.clone());
        async move {
            let id = uuid::Uuid::new_v4().to_string();
            let body = json!({
                "client_id": format!("ops-{l}"),
                "session_id": format!("ops-{l}"),
                "ops": [{"op_id": uuid::Uuid::new_v4().to_string(), "kind": "create",
                         "id": id, "data": {"name": format!("load {l}-{i}")}}],
            });
            let resp = client
                .post(&url)
                .bearer_auth(&tok)
                .json(&body)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let reply: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
            if reply["acks"][0]["status"] == "applied" {
                acked.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
                Ok(())
            } else {
                Err(reply.to_string())
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;

    let workers = child_pids(stack.pid());
    assert_eq!(workers.len(), 1, "one api worker expected: {workers:?}");
    signal(workers[0], Signal::SIGKILL);
    let killed = Instant::now();
    // Back means: a new process, answering its health check through the gateway.
    let back = loop {
        let alive = child_pids(stack.pid());
        let healthy = get_ok(&stack.client, &stack.url("/api/health"), "")
            .await
            .is_ok();
        if healthy && !alive.is_empty() && !alive.contains(&workers[0]) {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "worker not back within 5 s; alive: {alive:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    let tally = load.stop().await;
    eprintln!(
        "worker back and healthy {back:?} after kill -9; pushes ok {} failed {} ({:?})",
        tally.ok, tally.failed, tally.errors
    );

    stack
        .wait_metric(
            "btp_gateway_worker_restarts_total{worker=\"0\"}",
            1.0,
            Duration::from_secs(5),
        )
        .await;
    assert!(stack
        .process
        .output()
        .contains("[SUPERVISOR] WORKER_EXITED"));

    let acked = applied.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(
        acked.len() > 20,
        "the load barely ran: {} acks",
        acked.len()
    );
    let present = stack.pull_ids(&token).await;
    let lost: Vec<&String> = acked.difference(&present).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged ops lost: {lost:?}",
        lost.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_sockets_in_order_and_restarts_no_worker() {
    let _serial = serial().await;
    let mut stack = Stack::start("").await;
    let token = stack.register().await;
    let mut socket = Sio::connect(stack.http, &token, "term")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let workers = child_pids(stack.pid());

    signal(stack.pid(), Signal::SIGTERM);
    let end = socket.wait_end(Duration::from_secs(5)).await;
    assert_eq!(end, End::Orderly, "the socket must get a close, not a cut");

    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(code) = stack.process.exited() {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "btp up did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(code, 0);
    for pid in workers {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "worker {pid} outlived the gateway"
        );
    }
    let log = stack.process.output();
    assert_eq!(
        log.matches("[SUPERVISOR] WORKER_STARTED").count(),
        1,
        "{log}"
    );
    assert!(!log.contains("WORKER_EXITED"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_with_a_broken_config_keeps_the_old_one_serving_and_reports_it() {
    let _serial = serial().await;
    let mut stack = Stack::start("public_url = \"https://old.example.ma\"").await;
    let broken = format!(
        "{}\n[bogus]\nkey = 1\n",
        stack.config_text("public_url = \"https://new.example.ma\"")
    );
    std::fs::write(&stack.config, broken).unwrap_or_else(|e| panic!("{e}"));

    // The command validates before it signals, like `nginx -t && nginx -s reload`.
    let (code, _, stderr) = support::run_btp(&["reload"], &stack.config);
    assert_ne!(code, 0);
    assert!(stderr.contains("config.toml:"), "{stderr}");

    // The process validates again on its own (a bare SIGHUP, as systemd may send).
    signal(stack.pid(), Signal::SIGHUP);
    stack
        .wait_metric(
            "btp_gateway_reloads_total{result=\"failed\"}",
            1.0,
            Duration::from_secs(10),
        )
        .await;
    let log = stack.process.output();
    let located = log
        .lines()
        .any(|l| l.contains("config.toml:") && l.contains("ERROR") && l.contains("bogus"));
    assert!(located, "no FILE:LINE:COL line in the log:\n{log}");
    assert!(log.contains("[RELOAD] FAILED"), "{log}");

    let config = ops::get_text(&stack.client, &stack.url("/config.json")).await;
    assert!(config.contains("https://old.example.ma"), "{config}");
    let index = ops::get_text(&stack.client, &stack.url("/")).await;
    assert!(index.contains("BTP index"), "{index}");
    assert_eq!(
        metric(
            &stack.metrics().await,
            "btp_gateway_reloads_total{result=\"ok\"}"
        ),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_serves_new_static_files_and_config_and_keeps_open_sockets_open() {
    let _serial = serial().await;
    let mut stack = Stack::start("").await;
    let token = stack.register().await;
    let mut socket = Sio::connect(stack.http, &token, "reload")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    socket
        .call("sync:pull", json!({"cursor": 0}))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let (client, api, page, tok) = (
        stack.client.clone(),
        stack.url("/api/projects"),
        stack.url("/app.css"),
        token.clone(),
    );
    let load = Load::start(4, move |l, _| {
        let (client, url, tok) = (
            client.clone(),
            if l % 2 == 0 {
                api.clone()
            } else {
                page.clone()
            },
            tok.clone(),
        );
        async move { get_ok(&client, &url, &tok).await }
    });

    // A kept-alive connection idle across the reload: its next request is served by the
    // new files, not by the ones current when it started waiting.
    let mut kept = tokio::net::TcpStream::connect(stack.http)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, before) = support::get_on(&mut kept, "/").await;
    assert!(before.contains("BTP index"), "{before}");
    let config = ops::get_text(&stack.client, &stack.url("/config.json")).await;
    let assets_before = assets_version(&config);

    stack.dir.write(
        "static/index.html",
        "<!doctype html><title>BTP</title><p>BTP reloaded</p>\n",
    );
    let text = stack.config_text("public_url = \"https://new.example.ma\"");
    std::fs::write(&stack.config, text).unwrap_or_else(|e| panic!("{e}"));
    let (code, out, err) = support::run_btp(&["reload"], &stack.config);
    assert_eq!(code, 0, "{out}{err}");
    stack
        .wait_metric(
            "btp_gateway_reloads_total{result=\"ok\"}",
            1.0,
            Duration::from_secs(20),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tally = load.stop().await;

    let index = ops::get_text(&stack.client, &stack.url("/")).await;
    assert!(index.contains("BTP reloaded"), "{index}");
    let (_, after) = support::get_on(&mut kept, "/").await;
    assert!(after.contains("BTP reloaded"), "{after}");
    let config = ops::get_text(&stack.client, &stack.url("/config.json")).await;
    assert!(config.contains("https://new.example.ma"), "{config}");
    // The web app changed: its service worker is registered under a new version.
    assert_ne!(assets_version(&config), assets_before, "{config}");

    // The socket opened before the reload still answers, and nothing closed it.
    let pulled = socket
        .call("sync:pull", json!({"cursor": 0}))
        .await
        .unwrap_or_else(|e| panic!("socket lost across the reload: {e}"));
    assert!(pulled["cursor"].is_number(), "{pulled}");
    assert_eq!(
        socket.wait_end(Duration::from_millis(300)).await,
        End::Silent
    );
    // It was handed to its worker (the default), so the gateway keeps no tunnel for it.
    let metrics = stack.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "btp_gateway_websocket_handoffs_total{result=\"ok\"}"
        ),
        Some(1.0)
    );
    assert_eq!(metric(&metrics, "btp_gateway_tunnels_open"), Some(0.0));
    assert_eq!(
        tally.failed, 0,
        "requests failed across the reload: {:?}",
        tally.errors
    );
    assert!(tally.ok > 20, "the load barely ran: {tally:?}");
    eprintln!(
        "reload under load: {} requests, {} failed",
        tally.ok, tally.failed
    );
}

/// The gateway's access-log lines of failed requests, and the supervisor's lines.
fn failed_lines(log: &str) -> String {
    log.lines()
        .map(strip_ansi)
        .filter(|l| l.contains("status=5") || l.contains("SUPERVISOR") || l.contains("[API]"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Pull through a socket from `cursor` to the end; the ids it saw upserted.
async fn socket_pull_ids(socket: &mut Sio, cursor: serde_json::Value) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut cursor = cursor;
    for _ in 0..1000 {
        let page = socket
            .call("sync:pull", json!({"cursor": cursor, "limit": 1000}))
            .await
            .unwrap_or_else(|e| panic!("pull: {e}"));
        for change in page["changes"].as_array().cloned().unwrap_or_default() {
            if change["kind"] != "delete" {
                ids.insert(change["id"].as_str().unwrap_or_default().to_string());
            }
        }
        cursor = page["cursor"].clone();
        if page["has_more"] != true {
            return ids;
        }
    }
    panic!("pull never ended");
}

type Applied = Arc<Mutex<HashSet<String>>>;

/// One push of a new project from session `session`; its id recorded once applied.
async fn push_one(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    session: &str,
    applied: &Applied,
) -> ops::Outcome {
    let id = uuid::Uuid::new_v4().to_string();
    let body = json!({
        "client_id": session, "session_id": session,
        "ops": [{"op_id": uuid::Uuid::new_v4().to_string(), "kind": "create",
                 "id": id, "data": {"name": "during the restart"}}],
    });
    let resp = client
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let reply: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
    if status == 200 && reply["acks"][0]["status"] == "applied" {
        applied.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
        Ok(())
    } else {
        Err(format!("{status}: {reply}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_load_fails_no_request_and_sockets_resync() {
    let _serial = serial().await;
    let mut stack = Stack::start("").await;
    let token = stack.register().await;
    let mut socket = Sio::connect(stack.http, &token, "device-a")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let first = socket
        .call("sync:pull", json!({"cursor": 0}))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let cursor = first["cursor"].clone();
    let before = child_pids(stack.pid());

    let applied: Applied = Arc::new(Mutex::new(HashSet::new()));
    let (client, list, push, tok, acked) = (
        stack.client.clone(),
        stack.url("/api/projects"),
        stack.url("/api/sync/push"),
        token.clone(),
        applied.clone(),
    );
    // Four readers and one writer (device B) for the whole restart.
    let load = Load::start(5, move |l, _| {
        let (client, list, push, tok, acked) = (
            client.clone(),
            list.clone(),
            push.clone(),
            tok.clone(),
            acked.clone(),
        );
        async move {
            if l == 4 {
                push_one(&client, &push, &tok, "device-b", &acked).await
            } else {
                get_ok(&client, &list, &tok).await
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (code, out, err) = support::run_btp(&["reload", "--restart-workers"], &stack.config);
    assert_eq!(code, 0, "{out}{err}");
    // Device A's worker is replaced: its socket is closed in order, and it reconnects.
    let end = socket.wait_end(Duration::from_secs(30)).await;
    assert_eq!(end, End::Orderly);
    let mut socket = Sio::connect(stack.http, &token, "device-a")
        .await
        .unwrap_or_else(|e| panic!("reconnect after the restart: {e}"));
    stack
        .wait_metric(
            "btp_gateway_rolling_restarts_total{result=\"ok\"}",
            1.0,
            Duration::from_secs(30),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tally = load.stop().await;
    eprintln!(
        "rolling restart under load: {} requests, {} failed",
        tally.ok, tally.failed
    );
    assert_eq!(
        tally.failed,
        0,
        "requests failed: {:?}\n{}",
        tally.errors,
        failed_lines(&stack.process.output())
    );
    assert!(tally.ok > 50, "the load barely ran: {tally:?}");

    let after = child_pids(stack.pid());
    assert_eq!(after.len(), 1);
    assert!(!before.contains(&after[0]), "the worker was not replaced");

    // Every change device B made, during the restart too, reaches device A by resync.
    let seen = socket_pull_ids(&mut socket, cursor).await;
    let acked = applied.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(!acked.is_empty());
    let missed: Vec<&String> = acked.difference(&seen).collect();
    assert!(missed.is_empty(), "device A missed {missed:?}");
}

const SOCKETS: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_upgrade_under_load_with_500_sockets_fails_no_request_and_sockets_reconnect() {
    let _serial = serial().await;
    let mut stack = Stack::start("").await;
    let token = stack.register().await;
    let old_workers = child_pids(stack.pid());

    // 500 Socket.IO clients, each: connect, wait for the end of its connection, reconnect.
    let connected = Arc::new(tokio::sync::Semaphore::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(50));
    let clients: Vec<_> = (0..SOCKETS)
        .map(|i| {
            let (addr, token, connected, gate) =
                (stack.http, token.clone(), connected.clone(), gate.clone());
            tokio::spawn(async move {
                let session = format!("fleet-{i}");
                let permit = gate.acquire().await;
                let mut socket = Sio::connect(addr, &token, &session).await?;
                drop(permit);
                connected.add_permits(1);
                let end = socket.wait_end(Duration::from_secs(60)).await;
                let permit = gate.acquire().await;
                let mut again = Sio::connect(addr, &token, &session)
                    .await
                    .map_err(|e| format!("reconnect: {e}"))?;
                drop(permit);
                again
                    .call("sync:pull", json!({"cursor": 0}))
                    .await
                    .map_err(|e| format!("pull after reconnect: {e}"))?;
                Ok::<End, String>(end)
            })
        })
        .collect();
    let all = u32::try_from(SOCKETS).unwrap_or(u32::MAX);
    tokio::time::timeout(Duration::from_secs(60), connected.acquire_many(all))
        .await
        .unwrap_or_else(|_| panic!("the {SOCKETS} sockets did not all connect"))
        .unwrap_or_else(|e| panic!("{e}"))
        .forget();

    let (client, list, tok) = (
        stack.client.clone(),
        stack.url("/api/projects"),
        token.clone(),
    );
    let load = Load::start(4, move |_, _| {
        let (client, list, tok) = (client.clone(), list.clone(), tok.clone());
        async move { get_ok(&client, &list, &tok).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The new binary starts, waits on the upgrade socket; SIGQUIT makes the old one hand
    // over its listeners (public, admin and the API workers' sockets) and leave.
    let upgrade_sock = stack.upgrade_sock();
    let _ = std::fs::remove_file(&upgrade_sock);
    let mut new = support::BtpProcess::spawn(&["up", "--upgrade"], &stack.config);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !upgrade_sock.exists() {
        new.assert_alive();
        assert!(
            Instant::now() < deadline,
            "the new process never opened {upgrade_sock:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let upgraded = Instant::now();
    signal(stack.pid(), Signal::SIGQUIT);
    let deadline = Instant::now() + Duration::from_secs(40);
    while stack.process.exited().is_none() {
        new.assert_alive();
        assert!(Instant::now() < deadline, "the old process did not leave");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let old_gone = upgraded.elapsed();

    let mut orderly = 0;
    let mut problems = Vec::new();
    for client in clients {
        match client.await {
            Ok(Ok(End::Orderly)) => orderly += 1,
            Ok(Ok(end)) => problems.push(format!("{end:?}")),
            Ok(Err(e)) => problems.push(e),
            Err(e) => problems.push(e.to_string()),
        }
    }
    let reconnected = upgraded.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tally = load.stop().await;
    eprintln!(
        "upgrade: old process gone after {old_gone:?}, {orderly}/{SOCKETS} sockets closed in order and resynced after {reconnected:?}; HTTP {} ok, {} failed",
        tally.ok, tally.failed
    );
    assert_eq!(
        tally.failed,
        0,
        "requests failed: {:?}\nold:\n{}\nnew:\n{}",
        tally.errors,
        failed_lines(&stack.process.output()),
        failed_lines(&new.output())
    );
    assert!(
        problems.is_empty(),
        "{} sockets: {:?}",
        problems.len(),
        &problems[..problems.len().min(10)]
    );
    assert_eq!(orderly, SOCKETS);

    let new_workers = child_pids(new.pid());
    assert_eq!(new_workers.len(), 1);
    assert!(!old_workers.contains(&new_workers[0]));
    assert!(get_ok(&stack.client, &stack.url("/api/health"), "")
        .await
        .is_ok());
    assert!(new.output().contains("[SUPERVISOR] SOCKET_INHERITED"));
}

/// `promtool check metrics` on one exposition: its complaints, or `None` without promtool.
fn promtool(text: &str) -> Option<String> {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let mut report = String::from_utf8_lossy(&out.stdout).into_owned();
    report.push_str(&String::from_utf8_lossy(&out.stderr));
    if !out.status.success() && report.is_empty() {
        report = format!("promtool failed with {}", out.status);
    }
    Some(report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_finds_nothing_to_report_in_either_process_metrics() {
    if std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing (Debian: apt-get install -y prometheus)"
        );
        eprintln!(
            "SKIPPED: promtool is not installed (apt-get install -y prometheus); CI fails here"
        );
        return;
    }
    let _serial = serial().await;
    let stack = Stack::start("").await;
    let token = stack.register().await;
    // Traffic on every path, so labelled series and histograms have samples.
    let applied: Applied = Arc::new(Mutex::new(HashSet::new()));
    push_one(
        &stack.client,
        &stack.url("/api/sync/push"),
        &token,
        "metrics",
        &applied,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let mut socket = Sio::connect(stack.http, &token, "metrics-socket")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    socket
        .call("sync:pull", json!({"cursor": 0}))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = get_ok(&stack.client, &stack.url("/app.css"), "").await;
    let _ = get_ok(&stack.client, &stack.url("/api/projects"), "not-a-token").await;

    let gateway = stack.metrics().await;
    let worker = ops::get_text(&stack.client, &format!("http://{}/metrics", stack.api)).await;
    for (name, text, must) in [
        (
            "gateway",
            &gateway,
            "btp_gateway_worker_restarts_total{worker=\"0\"}",
        ),
        ("api worker", &worker, "btp_api_sync_ops_total{"),
    ] {
        assert!(text.contains(must), "{name} lacks {must}:\n{text}");
        let report = promtool(text).unwrap_or_default();
        assert!(
            report.trim().is_empty(),
            "promtool on the {name}'s /metrics:\n{report}"
        );
    }
}

/// Run as `nobody`: listen on the upgrade socket's path and report how many sockets a
/// sender handed over.
const NOBODY_LISTENER: &str = r#"
import array, os, socket, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(1)
print("listening", flush=True)
s.settimeout(30)
conn, _ = s.accept()
conn.settimeout(10)
fds = array.array("i")
try:
    _, ancdata, _, _ = conn.recvmsg(4096, socket.CMSG_LEN(64 * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
except OSError:
    pass
print(f"received {len(fds)} sockets", flush=True)
"#;

/// `python3 -c <script> <args…>` as `nobody` (uid and gid 65534, no groups).
fn as_nobody(script: &str, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "/usr/bin/python3",
        "-c",
        script,
    ])
    .args(args)
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unprivileged_user_cannot_take_the_listeners_in_a_binary_upgrade() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::PermissionsExt;

    let _serial = serial().await;
    let stack = Stack::start("").await;
    let sock = stack.upgrade_sock();
    let dir = sock
        .parent()
        .unwrap_or_else(|| panic!("{sock:?}"))
        .to_path_buf();
    let mode = std::fs::metadata(&dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "{dir:?}");
    // The stack's temp dir is root's; let `nobody` reach the upgrade directory's door.
    std::fs::set_permissions(stack.dir.path(), std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("{e}"));

    // The private directory: `nobody` cannot even create the socket.
    let tried = as_nobody(
        "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])",
        &[&sock.display().to_string()],
    )
    .output()
    .unwrap_or_else(|e| panic!("setpriv: {e}"));
    assert!(!tried.status.success(), "nobody listened on {sock:?}");
    assert!(
        String::from_utf8_lossy(&tried.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&tried.stderr)
    );

    // The directory made public by mistake: `nobody` listens there, and the gateway,
    // told to hand over its sockets, finds another user at the other end and sends none.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut listener = as_nobody(NOBODY_LISTENER, &[&sock.display().to_string()])
        .spawn()
        .unwrap_or_else(|e| panic!("setpriv: {e}"));
    let mut out = BufReader::new(
        listener
            .stdout
            .take()
            .unwrap_or_else(|| panic!("no stdout")),
    );
    let mut line = String::new();
    out.read_line(&mut line).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(line.trim(), "listening");
    signal(stack.pid(), Signal::SIGQUIT);
    line.clear();
    out.read_line(&mut line).unwrap_or_else(|e| panic!("{e}"));
    let _ = listener.wait();
    assert_eq!(line.trim(), "received 0 sockets");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stack
        .process
        .output()
        .contains("it is listened on by another user")
    {
        assert!(
            Instant::now() < deadline,
            "the refusal was not logged:\n{}",
            stack.process.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/config.json`'s `assetsVersion`: non-empty, or the test fails.
fn assets_version(config: &str) -> String {
    let doc: serde_json::Value = serde_json::from_str(config).unwrap_or_default();
    let version = doc["assetsVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!version.is_empty(), "no assetsVersion in {config}");
    version
}
