//! What a hostile or unlucky client can make a real `btp up` (gateway + API worker on
//! SQLite) hold, tried as the attacker would, with the worker's own memory, CPU and
//! metrics as the witness:
//! - a polling client that asks for 300 pulls of 1 MB and never polls is closed and
//!   costs the worker little, while other clients are served;
//! - 120 wrong passwords at once get at most `login_max_failures` password checks, and
//!   someone's failures never lock another account, or the owner elsewhere, out;
//! - 15,000 CONNECTs with a forged token in one body cost one token lookup;
//! - logout and logout-all close the sockets opened with those tokens, and a push sent
//!   on one afterwards is never applied; a token's sockets close when it expires.

mod ops;
mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ops::{child_pids, get_text, metric, serial, End, Sections, Sio, Stack};
use serde_json::{json, Value};

/// `VmRSS` or `VmHWM` of a process, in bytes.
fn memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Start measuring a process's peak memory from now (`/proc/PID/clear_refs`, 5).
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .unwrap_or_else(|e| panic!("reset the peak RSS of {pid}: {e}"));
}

/// User plus system CPU time a process has used.
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e}"));
    // Fields after the command (which may hold spaces), from field 3 on.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    Duration::from_millis(ticks * 1000 / per_second)
}

/// The stack's one API worker.
fn worker_pid(stack: &Stack) -> u32 {
    let children = child_pids(stack.pid());
    assert_eq!(children.len(), 1, "one worker expected: {children:?}");
    children[0]
}

/// One series of the worker's own `/metrics`.
async fn worker_metric(stack: &Stack, series: &str) -> f64 {
    let text = get_text(&stack.client, &format!("http://{}/metrics", stack.api)).await;
    metric(&text, series).unwrap_or_else(|| panic!("{series} missing from\n{text}"))
}

/// Register `email` through the gateway; its token.
async fn register(stack: &Stack, email: &str) -> String {
    let resp = stack
        .client
        .post(stack.url("/api/auth/register"))
        .json(&json!({"email": email, "password": "correct horse battery", "name": "Abuse"}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("register: {e}"));
    assert_eq!(resp.status().as_u16(), 201);
    let body: Value = resp.json().await.unwrap_or_default();
    body["token"].as_str().unwrap_or_default().to_string()
}

/// A client whose connections come from `ip` (any 127.0.0.0/8 address is loopback).
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(ip))
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn login(stack: &Stack, client: &reqwest::Client, email: &str, password: &str) -> u16 {
    client
        .post(stack.url("/api/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or_else(|e| panic!("login: {e}"))
}

/// A long-polling session through the gateway, connected to `/` with `token`: its URL.
async fn polling_session(stack: &Stack, token: &str) -> String {
    let open = get_text(
        &stack.client,
        &stack.url("/socket.io/?EIO=4&transport=polling"),
    )
    .await;
    let handshake: Value = serde_json::from_str(open.trim_start_matches('0'))
        .unwrap_or_else(|e| panic!("open packet {open:?}: {e}"));
    let sid = handshake["sid"].as_str().unwrap_or_default();
    let url = stack.url(&format!("/socket.io/?EIO=4&transport=polling&sid={sid}"));
    let posted = post_text(stack, &url, format!(r#"40{{"token":"{token}"}}"#)).await;
    assert_eq!(posted, (200, "ok".to_string()));
    let connected = get_text(&stack.client, &url).await;
    assert!(connected.starts_with("40"), "{connected}");
    url
}

async fn post_text(stack: &Stack, url: &str, body: String) -> (u16, String) {
    let resp = stack
        .client
        .post(url)
        .header("content-type", "text/plain;charset=UTF-8")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_asks_and_never_reads_is_closed_and_costs_the_worker_little() {
    let _serial = serial().await;
    let stack = Stack::start("").await;
    let worker = worker_pid(&stack);
    let token = register(
        &stack,
        &format!("hoarder-{}@example.ma", uuid::Uuid::new_v4()),
    )
    .await;
    // 100 projects of 10 KB: every pull answers about 1 MB.
    let ops: Vec<Value> = (0..100)
        .map(|i| {
            json!({"op_id": uuid::Uuid::new_v4().to_string(), "kind": "create",
                   "id": uuid::Uuid::new_v4().to_string(),
                   "data": {"name": format!("Chantier {i}"), "notes": "n".repeat(10_000)}})
        })
        .collect();
    let pushed = stack
        .client
        .post(stack.url("/api/sync/push"))
        .bearer_auth(&token)
        .json(&json!({"session_id": "seed", "ops": ops}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("push: {e}"));
    assert_eq!(pushed.status().as_u16(), 200);
    let bystander = stack.register().await;
    let url = polling_session(&stack, &token).await;
    // The start is a worker that has served this data to 16 devices at once, as on any
    // morning: its database connections and their page caches are open, so what is
    // measured is what the attack adds.
    let pulls = (0..16).map(|_| {
        stack
            .client
            .post(stack.url("/api/sync/pull"))
            .bearer_auth(&token)
            .json(&json!({"cursor": 0}))
            .send()
    });
    for pulled in futures::future::join_all(pulls).await {
        let pulled = pulled.unwrap_or_else(|e| panic!("pull: {e}"));
        assert_eq!(pulled.status().as_u16(), 200);
        pulled
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("pull body: {e}"));
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = memory(worker, "VmRSS");
    reset_peak(worker);
    let pulls: Vec<String> = (0..300)
        .map(|i| format!(r#"42{i}["sync:pull",{{"cursor":0}}]"#))
        .collect();
    let body = pulls.join("\u{1e}");
    // As the attacker did: three such bodies, and never a GET.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(post_text(&stack, &url, body.clone()).await.0);
        // Others are served meanwhile.
        ops::get_ok(&stack.client, &stack.url("/api/projects"), &bystander)
            .await
            .unwrap_or_else(|e| panic!("another client was not served: {e}"));
    }
    let closed = r#"btp_api_realtime_sessions_closed_total{reason="buffer full",worker="0"}"#;
    let deadline = Instant::now() + Duration::from_secs(20);
    while worker_metric(&stack, closed).await < 1.0 {
        assert!(Instant::now() < deadline, "the session was never closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let peak = memory(worker, "VmHWM");
    eprintln!(
        "worker RSS {} KiB at the start, peak {} KiB; POSTs answered {statuses:?}",
        start >> 10,
        peak >> 10
    );
    assert!(
        peak < start + 50 * 1024 * 1024,
        "the worker grew from {} to {} MiB",
        start >> 20,
        peak >> 20
    );
    assert_eq!(statuses[0], 200);
    assert_eq!(statuses[2], 400, "the session is gone: {statuses:?}");
    let after = get_text(&stack.client, &url).await;
    assert!(after.contains("Session ID unknown"), "{after}");
    let held = worker_metric(&stack, r#"btp_api_realtime_events_held_total{worker="0"}"#).await;
    assert!(held >= 1.0, "no event ever waited for a handler slot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_at_once_get_at_most_the_allowed_checks_and_lock_out_no_one_else() {
    let _serial = serial().await;
    let stack = Stack::start("").await;
    let worker = worker_pid(&stack);
    let tag = uuid::Uuid::new_v4();
    let (a, b) = (format!("a-{tag}@example.ma"), format!("b-{tag}@example.ma"));
    register(&stack, &a).await;
    register(&stack, &b).await;
    let verify = r#"btp_api_password_hashes_total{op="verify",worker="0"}"#;
    let before = worker_metric(&stack, verify).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    reset_peak(worker);

    let office = client_from([127, 0, 0, 2]);
    let attempts = (0..120).map(|_| login(&stack, &office, &b, "wrong password"));
    let statuses = futures::future::join_all(attempts).await;
    let checks = worker_metric(&stack, verify).await - before;
    let peak = memory(worker, "VmHWM");
    let wrong = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    eprintln!(
        "120 wrong logins: {wrong} × 401, {limited} × 429, {checks} password checks, worker peak {} KiB",
        peak >> 10
    );
    assert_eq!((wrong, limited), (10, 110), "{statuses:?}");
    assert!(checks <= 10.0, "{checks} password checks");
    assert!(
        peak < 200 * 1024 * 1024,
        "worker peak RSS {} MiB",
        peak >> 20
    );

    // The same office's other account, and the owner of B from elsewhere, sign in.
    assert_eq!(
        login(&stack, &office, &a, "correct horse battery").await,
        200
    );
    let elsewhere = client_from([127, 0, 0, 3]);
    assert_eq!(
        login(&stack, &elsewhere, &b, "correct horse battery").await,
        200
    );
    assert_eq!(
        login(&stack, &office, &b, "correct horse battery").await,
        429
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_forged_connects_costs_one_token_lookup() {
    let _serial = serial().await;
    let stack = Stack::start("").await;
    let worker = worker_pid(&stack);
    let open = get_text(
        &stack.client,
        &stack.url("/socket.io/?EIO=4&transport=polling"),
    )
    .await;
    let handshake: Value = serde_json::from_str(open.trim_start_matches('0')).unwrap_or_default();
    let sid = handshake["sid"].as_str().unwrap_or_default();
    let url = stack.url(&format!("/socket.io/?EIO=4&transport=polling&sid={sid}"));
    let forged = format!(r#"40{{"token":"btp_{}"}}"#, "A".repeat(43));
    let body = vec![forged.as_str(); 15_000].join("\u{1e}");
    assert!(body.len() < 1_000_000, "{} bytes", body.len());
    let lookups = r#"btp_api_token_checks_total{result="refused",worker="0"}"#;
    let before = worker_metric(&stack, lookups).await;

    let used = cpu(worker);
    let posted = post_text(&stack, &url, body).await;
    let answer = get_text(&stack.client, &url).await;
    let spent = cpu(worker) - used;
    eprintln!("15,000 forged CONNECTs: {spent:?} of worker CPU");
    assert_eq!(posted, (200, "ok".to_string()));
    assert_eq!(answer, r#"44{"message":"unauthorized"}"#);
    assert_eq!(worker_metric(&stack, lookups).await - before, 1.0);
    assert!(
        spent < Duration::from_millis(50),
        "the flood cost {spent:?} of CPU"
    );
    let ignored = worker_metric(
        &stack,
        r#"btp_api_realtime_connects_ignored_total{worker="0"}"#,
    );
    assert_eq!(ignored.await, 14_999.0);
}

/// Connect a raw Socket.IO client through the gateway.
async fn socket(stack: &Stack, token: &str, session: &str) -> Sio {
    Sio::connect(stack.http, token, session)
        .await
        .unwrap_or_else(|e| panic!("socket {session}: {e}"))
}

/// A create op for a fresh project; (op, project id).
fn create_op(name: &str) -> (Value, String) {
    let id = uuid::Uuid::new_v4().to_string();
    let op = json!({"op_id": uuid::Uuid::new_v4().to_string(), "kind": "create", "id": id,
                    "data": {"name": name}});
    (op, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_and_logout_all_close_the_tokens_sockets_and_nothing_after_is_applied() {
    let _serial = serial().await;
    let stack = Stack::start("").await;
    let email = format!("many-{}@example.ma", uuid::Uuid::new_v4());
    let first = register(&stack, &email).await;
    let second: Value = stack
        .client
        .post(stack.url("/api/auth/login"))
        .json(&json!({"email": email, "password": "correct horse battery"}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("login: {e}"))
        .json()
        .await
        .unwrap_or_default();
    let second = second["token"].as_str().unwrap_or_default().to_string();
    let stranger = stack.register().await;
    let mut phone = socket(&stack, &first, "phone").await;
    let mut tablet = socket(&stack, &first, "tablet").await;
    let mut laptop = socket(&stack, &second, "laptop").await;
    let mut other = socket(&stack, &stranger, "other").await;

    let logout = stack
        .client
        .post(stack.url("/api/auth/logout"))
        .bearer_auth(&first)
        .send()
        .await
        .unwrap_or_else(|e| panic!("logout: {e}"));
    assert_eq!(logout.status().as_u16(), 204);
    let logged_out = Instant::now();
    // Sent at once on the revoked socket: never applied, whatever reaches the worker.
    let (late, late_id) = create_op("after logout");
    let _ = phone
        .send_event("sync:push", json!({"session_id": "phone", "ops": [late]}))
        .await;
    for s in [&mut phone, &mut tablet] {
        assert_eq!(s.wait_end(Duration::from_secs(1)).await, End::Orderly);
    }
    eprintln!(
        "both sockets closed {:?} after the logout answered",
        logged_out.elapsed()
    );
    assert!(logged_out.elapsed() < Duration::from_secs(1));
    let pull = json!({"cursor": 0});
    assert!(laptop.call("sync:pull", pull.clone()).await.is_ok());
    assert!(other.call("sync:pull", pull.clone()).await.is_ok());
    assert!(!stack.pull_ids(&second).await.contains(&late_id));

    let revoked = r#"btp_api_realtime_sockets_revoked_total{reason="logout",worker="0"}"#;
    assert_eq!(worker_metric(&stack, revoked).await, 2.0);

    let all = stack
        .client
        .post(stack.url("/api/auth/logout-all"))
        .bearer_auth(&second)
        .send()
        .await
        .unwrap_or_else(|e| panic!("logout-all: {e}"));
    assert_eq!(all.status().as_u16(), 204);
    assert_eq!(laptop.wait_end(Duration::from_secs(1)).await, End::Orderly);
    let ack = other.call("sync:pull", pull).await;
    assert!(
        ack.is_ok_and(|a| a["count"] == 0),
        "the other user's socket is untouched"
    );
    let revoked = r#"btp_api_realtime_sockets_revoked_total{reason="logout_all",worker="0"}"#;
    assert_eq!(worker_metric(&stack, revoked).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_closes_when_its_token_expires() {
    let _serial = serial().await;
    let stack = Stack::start_with(Sections::default()).await;
    let token = stack.register().await;
    let expires_at = chrono_millis() + 1_500;
    let db = format!("sqlite://{}", stack.dir.join("data/btp.db").display());
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db)
        .await
        .unwrap_or_else(|e| panic!("{db}: {e}"));
    let hash = btp_api::auth::token_hash(&token);
    sqlx::query("UPDATE auth_tokens SET expires_at = $1 WHERE token_hash = $2")
        .bind(expires_at)
        .bind(&hash)
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut s = socket(&stack, &token, "brief").await;
    assert!(s.call("sync:pull", json!({"cursor": 0})).await.is_ok());
    let end = s.wait_end(Duration::from_secs(5)).await;
    let closed_at = chrono_millis();
    eprintln!(
        "closed {} ms after the token's expiry",
        closed_at - expires_at
    );
    assert_eq!(end, End::Orderly);
    assert!(
        (expires_at..expires_at + 1_000).contains(&closed_at),
        "closed {} ms after the expiry",
        closed_at - expires_at
    );
    let revoked = r#"btp_api_realtime_sockets_revoked_total{reason="expired",worker="0"}"#;
    assert_eq!(worker_metric(&stack, revoked).await, 1.0);
}

fn chrono_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
