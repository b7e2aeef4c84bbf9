//! The fixture of the operations tests: a real `btp up` (gateway + supervised API worker
//! on SQLite) on loopback ephemeral ports, a raw Socket.IO client over fastwebsockets
//! (enough protocol to connect, call with acks and tell an orderly close from a dropped
//! connection), a bounded load generator, and small readers for `/proc` and `/metrics`.
//!
//! Each test file that declares `mod ops;` uses only part of it, hence the `dead_code`
//! allowance.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::support::gateway::pick_api_base;
use crate::support::{free_ports, loopback, write_static_site, BtpProcess, TempDir};

/// Heavy tests share two cores with everything else: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// A running `btp up`. Field order is drop order: the process dies before its dir goes.
pub struct Stack {
    pub process: BtpProcess,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub api: SocketAddr,
    pub config: PathBuf,
    pub client: reqwest::Client,
    pub dir: TempDir,
}

impl Stack {
    /// `extra_gateway` goes into `[gateway]`.
    pub async fn start(extra_gateway: &str) -> Stack {
        Stack::start_with(Sections {
            gateway: extra_gateway,
            ..Sections::default()
        })
        .await
    }

    /// A stack with extra lines in its sections.
    pub async fn start_with(sections: Sections<'_>) -> Stack {
        let extra_gateway = sections.gateway;
        raise_nofile();
        let dir = TempDir::new("ops");
        write_static_site(&dir, "static");
        let ports = free_ports(2);
        let (http, admin) = (loopback(ports[0]), loopback(ports[1]));
        let api = pick_api_base(1, &ports);
        let config = dir.join("config.toml");
        let stack_config = StackConfig {
            http,
            admin,
            api,
            extra_gateway: extra_gateway.to_string(),
            realtime: sections.realtime.to_string(),
            auth: sections.auth.to_string(),
        };
        std::fs::write(&config, stack_config.toml()).unwrap_or_else(|e| panic!("{e}"));
        let mut process = BtpProcess::spawn(&["up"], &config);
        process
            .wait_for_status(
                &format!("http://{admin}/readyz"),
                200,
                Duration::from_secs(90),
            )
            .await;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        Stack {
            process,
            http,
            admin,
            api,
            config,
            client,
            dir,
        }
    }

    /// The configuration this stack started with, with other `[gateway]` lines.
    pub fn config_text(&self, extra_gateway: &str) -> String {
        StackConfig {
            http: self.http,
            admin: self.admin,
            api: self.api,
            extra_gateway: extra_gateway.to_string(),
            realtime: String::new(),
            auth: String::new(),
        }
        .toml()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Where the binary upgrade's socket lives: `upgrade/` beside the pid file.
    pub fn upgrade_sock(&self) -> PathBuf {
        self.dir
            .join("upgrade")
            .join(format!("{}.sock", self.http.port()))
    }

    pub async fn metrics(&self) -> String {
        get_text(&self.client, &format!("http://{}/metrics", self.admin)).await
    }

    /// Wait until `series` reads `value` on the gateway's `/metrics`.
    pub async fn wait_metric(&mut self, series: &str, value: f64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            self.process.assert_alive();
            let text = self.metrics().await;
            if metric(&text, series) == Some(value) {
                return;
            }
            if Instant::now() > deadline {
                panic!("{series} never reached {value}; metrics:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Register a fresh user through the gateway; its bearer token.
    pub async fn register(&self) -> String {
        let email = format!("ops-{}@example.ma", uuid::Uuid::new_v4());
        let resp = self
            .client
            .post(self.url("/api/auth/register"))
            .json(&json!({"email": email, "password": "correct horse battery", "name": "Ops"}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("register: {e}"));
        assert_eq!(resp.status().as_u16(), 201, "register failed");
        let body: Value = resp.json().await.unwrap_or_default();
        body["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {body}"))
            .to_string()
    }

    /// Every live project id of the token's user, by paging a pull from `cursor`.
    pub async fn pull_ids(&self, token: &str) -> std::collections::HashSet<String> {
        let mut ids = std::collections::HashSet::new();
        let mut cursor = json!(0);
        for _ in 0..1000 {
            let body: Value = self
                .client
                .post(self.url("/api/sync/pull"))
                .bearer_auth(token)
                .json(&json!({"cursor": cursor, "limit": 1000}))
                .send()
                .await
                .unwrap_or_else(|e| panic!("pull: {e}"))
                .json()
                .await
                .unwrap_or_default();
            for change in body["changes"].as_array().cloned().unwrap_or_default() {
                let id = change["id"].as_str().unwrap_or_default().to_string();
                if change["kind"] == "delete" {
                    ids.remove(&id);
                } else {
                    ids.insert(id);
                }
            }
            cursor = body["cursor"].clone();
            if body["has_more"] != true {
                return ids;
            }
        }
        panic!("pull never ended");
    }
}

/// Extra lines for a stack's config sections.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sections<'a> {
    pub gateway: &'a str,
    pub realtime: &'a str,
    /// Besides `register_max_per_ip = 100000` (every test registers from 127.0.0.1).
    pub auth: &'a str,
}

struct StackConfig {
    http: SocketAddr,
    admin: SocketAddr,
    api: SocketAddr,
    extra_gateway: String,
    realtime: String,
    auth: String,
}

impl StackConfig {
    fn toml(&self) -> String {
        format!(
            "[gateway]\nlisten = \"{}\"\nadmin_listen = \"{}\"\npid_file = \"btp.pid\"\n\
             health_check_interval_ms = 200\n{}\n\n\
             [static]\nroot = \"static\"\n\n\
             [api]\nlisten = \"{}\"\nworkers = 1\n\n\
             [database]\nurl = \"sqlite://data/btp.db\"\n\n\
             [realtime]\n{}\n\n\
             [auth]\nregister_max_per_ip = 100000\n{}\n",
            self.http, self.admin, self.extra_gateway, self.api, self.realtime, self.auth
        )
    }
}

pub async fn get_text(client: &reqwest::Client, url: &str) -> String {
    match client.get(url).send().await {
        Ok(resp) => resp.text().await.unwrap_or_default(),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// The value of one series (`name{labels}` exactly as exported) in a text exposition.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The children of process `pid` (every thread's), from `/proc`.
pub fn child_pids(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            children
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    out.sort_unstable();
    out.dedup();
    out
}

pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
    nix::sys::signal::kill(pid, signal).unwrap_or_else(|e| panic!("kill {pid} {signal}: {e}"));
}

/// Hundreds of sockets need more descriptors than a default soft limit of 1024.
pub fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// What one iteration of a load loop reports.
pub type Outcome = Result<(), String>;

/// Concurrent request loops, bounded in count and time, tallying failures.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Tally>>,
}

#[derive(Debug, Default)]
pub struct Tally {
    pub ok: u64,
    pub failed: u64,
    pub errors: Vec<String>,
}

const LOAD_MAX_ITERATIONS: u64 = 50_000;
const LOAD_MAX_TIME: Duration = Duration::from_secs(120);
const LOAD_PAUSE: Duration = Duration::from_millis(5);

impl Load {
    pub fn start<F, Fut>(loops: usize, work: F) -> Load
    where
        F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Outcome> + Send,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..loops)
            .map(|l| {
                let stop = stop.clone();
                let work = work.clone();
                tokio::spawn(async move {
                    let mut tally = Tally::default();
                    let started = Instant::now();
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed)
                        && i < LOAD_MAX_ITERATIONS
                        && started.elapsed() < LOAD_MAX_TIME
                    {
                        match work(l, i).await {
                            Ok(()) => tally.ok += 1,
                            Err(e) => {
                                tally.failed += 1;
                                if tally.errors.len() < 10 {
                                    tally.errors.push(e);
                                }
                            }
                        }
                        i += 1;
                        tokio::time::sleep(LOAD_PAUSE).await;
                    }
                    tally
                })
            })
            .collect();
        Load { stop, tasks }
    }

    pub async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Tally::default();
        for task in self.tasks {
            if let Ok(t) = task.await {
                total.ok += t.ok;
                total.failed += t.failed;
                total.errors.extend(t.errors);
            }
        }
        total
    }
}

/// `GET path` with the bearer token; anything but a 200 is a failure.
pub async fn get_ok(client: &reqwest::Client, url: &str, token: &str) -> Outcome {
    match client.get(url).bearer_auth(token).send().await {
        Ok(resp) if resp.status().as_u16() == 200 => {
            resp.bytes().await.map_err(|e| format!("body: {e}"))?;
            Ok(())
        }
        Ok(resp) => Err(format!(
            "status {}: {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        )),
        Err(e) => Err(format!("{e:?}")),
    }
}

/// How a socket's connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// A WebSocket close frame, an Engine.IO `close` or a Socket.IO `disconnect`.
    Orderly,
    /// The connection broke (EOF or error without a close).
    Dropped(String),
    /// Nothing happened in time.
    Silent,
}

/// A Socket.IO v5 client over a raw WebSocket (Engine.IO v4), through the gateway.
pub struct Sio {
    ws: FragmentCollector<TokioIo<Upgraded>>,
    next_ack: u64,
}

impl Sio {
    /// Connect to `/` with `auth: {token, clientSessionId}`.
    pub async fn connect(addr: SocketAddr, token: &str, session: &str) -> Result<Sio, String> {
        let ws = crate::support::ws::connect(addr, "/socket.io/?EIO=4&transport=websocket").await?;
        let mut sio = Sio {
            ws: FragmentCollector::new(ws),
            next_ack: 0,
        };
        let open = sio.next_text(Duration::from_secs(20)).await?;
        if !open.starts_with('0') {
            return Err(format!("expected an Engine.IO open, got {open:?}"));
        }
        let auth = json!({"token": token, "clientSessionId": session});
        sio.send(&format!("40{auth}")).await?;
        loop {
            let packet = sio.next_text(Duration::from_secs(20)).await?;
            if packet.starts_with("40") {
                return Ok(sio);
            }
            if packet.starts_with("44") {
                return Err(format!("connect refused: {packet}"));
            }
        }
    }

    async fn send(&mut self, text: &str) -> Result<(), String> {
        self.ws
            .write_frame(Frame::text(Payload::Owned(text.as_bytes().to_vec())))
            .await
            .map_err(|e| format!("write: {e}"))
    }

    /// The next Engine.IO packet that is not a ping (pings are answered).
    async fn next_text(&mut self, within: Duration) -> Result<String, String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.read_frame())
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| format!("read: {e}"))?;
            match frame.opcode {
                OpCode::Text => {
                    let text = String::from_utf8_lossy(&frame.payload).into_owned();
                    if text == "2" {
                        self.send("3").await?;
                        continue;
                    }
                    return Ok(text);
                }
                OpCode::Close => return Err("closed".into()),
                _ => continue,
            }
        }
    }

    /// Emit `event` with `payload`, asking for an ack, without waiting for it.
    pub async fn send_event(&mut self, event: &str, payload: Value) -> Result<(), String> {
        let id = self.next_ack;
        self.next_ack += 1;
        self.send(&format!("42{id}{}", json!([event, payload])))
            .await
    }

    /// Emit `event` with `payload` and wait for its ack's first argument.
    pub async fn call(&mut self, event: &str, payload: Value) -> Result<Value, String> {
        let id = self.next_ack;
        self.next_ack += 1;
        self.send(&format!("42{id}{}", json!([event, payload])))
            .await?;
        let prefix = format!("43{id}");
        loop {
            let packet = self.next_text(Duration::from_secs(20)).await?;
            if let Some(rest) = packet.strip_prefix(&prefix) {
                let args: Value =
                    serde_json::from_str(rest).map_err(|e| format!("ack {rest:?}: {e}"))?;
                return Ok(args[0].clone());
            }
        }
    }

    /// Read until the connection ends, answering pings.
    pub async fn wait_end(&mut self, within: Duration) -> End {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.ws.read_frame()).await {
                Err(_) => return End::Silent,
                Ok(Err(e)) => return End::Dropped(e.to_string()),
                Ok(Ok(frame)) => frame,
            };
            match frame.opcode {
                OpCode::Close => return End::Orderly,
                OpCode::Text => {
                    let text = String::from_utf8_lossy(&frame.payload).into_owned();
                    match text.as_str() {
                        "2" if self.send("3").await.is_err() => {
                            return End::Dropped("write failed".into());
                        }
                        "1" | "41" => return End::Orderly,
                        _ => {}
                    }
                }
                _ => {}
            }
        }
    }
}
