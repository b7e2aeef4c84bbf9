//! Test support: a real API server on an ephemeral loopback port, over a fresh SQLite
//! file or a fresh database in a throw-away PostgreSQL 15 cluster, and a small client.
//!
//! The cluster is started once per test binary with `initdb` + `postgres` running as
//! the `postgres` user (or taken from `BTP_TEST_PG_URL`). It cannot outlive the binary:
//! it is stopped by an `atexit` hook, and the postmaster also gets SIGQUIT from the
//! kernel (`PR_SET_PDEATHSIG`) if the binary dies without running it. Without the
//! PostgreSQL binaries the PostgreSQL variants print a loud skip, or fail when
//! `BTP_REQUIRE_PG=1`.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use btp_api::auth::PasswordParams;
use btp_api::{AppState, Options};
use btp_config::Config;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::Connection;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One test's name-space: a unique number for dirs, databases and emails.
fn next_id() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

struct Cluster {
    url: String,
    pid: Option<i32>,
    dir: Option<PathBuf>,
}

static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();

extern "C" fn stop_cluster() {
    let Some(Some(cluster)) = CLUSTER.get() else {
        return;
    };
    if let Some(pid) = cluster.pid {
        // SIGQUIT = immediate shutdown: the data is throw-away.
        unsafe { libc::kill(pid, libc::SIGQUIT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if let Some(dir) = &cluster.dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn cluster() -> Option<&'static Cluster> {
    CLUSTER.get_or_init(start_cluster).as_ref()
}

fn start_cluster() -> Option<Cluster> {
    if let Ok(url) = std::env::var("BTP_TEST_PG_URL") {
        return Some(Cluster {
            url: url.trim_end_matches('/').to_string(),
            pid: None,
            dir: None,
        });
    }
    if !Path::new(PG_BIN).join("postgres").exists() {
        if std::env::var("BTP_REQUIRE_PG").as_deref() == Ok("1") {
            panic!("BTP_REQUIRE_PG=1 but PostgreSQL 15 binaries are missing in {PG_BIN}");
        }
        eprintln!(
            "\n!!!!!!!! SKIPPING PostgreSQL tests: no binaries in {PG_BIN} \
             (apt-get install postgresql) !!!!!!!!\n"
        );
        return None;
    }
    let (uid, gid) = postgres_user().expect("the postgres system user exists");
    let dir = std::env::temp_dir().join(format!("btp-api-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create cluster dir");
    chown(&dir, uid, gid);
    let data = dir.join("data");
    let status = Command::new(Path::new(PG_BIN).join("initdb"))
        .args(["-D"])
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .current_dir(&dir)
        .uid(uid)
        .gid(gid)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run initdb");
    assert!(
        status.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let port = free_port();
    let log = std::fs::File::create(dir.join("postgres.log")).expect("log file");
    chown(&dir.join("postgres.log"), uid, gid);
    let (tx, rx) = std::sync::mpsc::channel();
    let sock_dir = dir.clone();
    // PR_SET_PDEATHSIG fires when the spawning *thread* exits, so spawn from a thread
    // that lives as long as the process.
    std::thread::spawn(move || {
        let mut cmd = Command::new(Path::new(PG_BIN).join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(&sock_dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=400",
                "-c",
                "shared_buffers=64MB",
            ])
            .current_dir(&sock_dir)
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn postgres");
        let _ = tx.send(child.id() as i32);
        // Reap it when it stops; until then this thread (the death-signal parent) lives.
        let _ = child.wait();
    });
    let pid = rx.recv().expect("postgres pid");
    let cluster = Cluster {
        url: format!("postgres://postgres@127.0.0.1:{port}"),
        pid: Some(pid),
        dir: Some(dir.clone()),
    };
    unsafe { libc::atexit(stop_cluster) };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = Command::new(Path::new(PG_BIN).join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "postgres did not start; see {}",
            dir.join("postgres.log").display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(cluster)
}

fn postgres_user() -> Option<(u32, u32)> {
    let name = std::ffi::CString::new("postgres").ok()?;
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to postgres");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A fresh database URL for one test, or `None` when PostgreSQL tests are skipped.
pub async fn database_url(backend: Backend, dir: &Path) -> Option<String> {
    match backend {
        Backend::Sqlite => Some(format!("sqlite://{}/btp.db", dir.display())),
        Backend::Postgres => {
            let cluster = tokio::task::spawn_blocking(cluster).await.ok()??;
            let name = format!("t_{}_{}", std::process::id(), next_id());
            let mut conn = sqlx::PgConnection::connect(&format!("{}/postgres", cluster.url))
                .await
                .expect("connect to the test cluster");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .expect("create test database");
            Some(format!("{}/{}", cluster.url, name))
        }
    }
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("btp-api-test-{}-{}", std::process::id(), next_id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Server {
    pub base: String,
    pub http: reqwest::Client,
    pub state: AppState,
    pub config: Config,
    _shutdown: tokio::sync::oneshot::Sender<()>,
    _dir: TempDir,
}

/// Test config: a pool big enough for the concurrency tests.
pub fn test_config(url: &str, dir: &Path) -> Config {
    let mut config = Config {
        base_dir: dir.to_path_buf(),
        ..Config::default()
    };
    config.database.url = url.to_string();
    config.database.max_connections = 12;
    // Every test client registers from 127.0.0.1; tests of the limit set their own.
    config.auth.register_max_per_ip = 100_000;
    config
}

impl Server {
    pub async fn start(backend: Backend) -> Option<Server> {
        Server::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<Server> {
        let dir = TempDir::new();
        let url = database_url(backend, &dir.0).await?;
        let mut config = test_config(&url, &dir.0);
        tweak(&mut config);
        Some(Server::on(config, dir).await)
    }

    /// A server over an existing database (a second "process" on the same data).
    pub async fn on(config: Config, dir: TempDir) -> Server {
        let state = AppState::open(
            config.clone(),
            Options {
                worker: 0,
                password: PasswordParams::fast_insecure(),
                purge: false,
            },
        )
        .await
        .expect("open app state");
        let app = btp_api::http::finish(btp_api::http::router(state.clone()), state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(btp_api::serve(
            listener,
            app,
            None,
            async move {
                let _ = rx.await;
            },
            || {},
        ));
        Server {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            state,
            config,
            _shutdown: tx,
            _dir: dir,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req).await
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn register(&self, tag: &str) -> User {
        let email = format!("{tag}-{}@test.ma", next_id());
        let (status, body) = self
            .call(
                Method::POST,
                "/api/auth/register",
                None,
                Some(json!({"email": email, "password": "s3cret-pass", "name": tag})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        User {
            token: body["token"].as_str().expect("token").to_string(),
            id: body["user"]["id"].as_str().expect("id").to_string(),
            email,
        }
    }

    /// Set a token's expiry in the database (ms since the epoch), as time passing would.
    pub async fn expire_token(&self, token: &str, expires_at: i64) {
        let url = self.state.store.url();
        let mut conn = sqlx::AnyConnection::connect(url).await.expect("database");
        let updated = sqlx::query("UPDATE auth_tokens SET expires_at = $1 WHERE token_hash = $2")
            .bind(expires_at)
            .bind(btp_api::auth::token_hash(token))
            .execute(&mut conn)
            .await
            .expect("update")
            .rows_affected();
        assert_eq!(updated, 1, "token not found");
    }

    pub async fn push(&self, user: &User, session: &str, ops: Vec<Value>) -> Value {
        let (status, body) = self.push_raw(user, session, ops).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn push_raw(&self, user: &User, session: &str, ops: Vec<Value>) -> (u16, Value) {
        self.call(
            Method::POST,
            "/api/sync/push",
            Some(&user.token),
            Some(json!({"client_id": "test", "session_id": session, "ops": ops})),
        )
        .await
    }

    pub async fn pull(&self, user: &User, cursor: &Value, limit: Option<u32>) -> Value {
        let mut body = json!({ "cursor": cursor });
        if let Some(l) = limit {
            body["limit"] = json!(l);
        }
        let (status, resp) = self
            .call(
                Method::POST,
                "/api/sync/pull",
                Some(&user.token),
                Some(body),
            )
            .await;
        assert_eq!(status, 200, "{resp}");
        resp
    }

    /// The live set straight from the REST list: id → seq.
    pub async fn live(&self, user: &User) -> HashMap<String, i64> {
        let (status, body) = self
            .call(Method::GET, "/api/projects", Some(&user.token), None)
            .await;
        assert_eq!(status, 200, "{body}");
        body["projects"]
            .as_array()
            .expect("projects")
            .iter()
            .map(|p| {
                (
                    p["id"].as_str().expect("id").to_string(),
                    p["seq"].as_i64().expect("seq"),
                )
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub token: String,
    pub id: String,
    pub email: String,
}

pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub fn create(id: &str, name: &str) -> Value {
    json!({"op_id": uuid(), "kind": "create", "id": id, "data": {"name": name}})
}

pub fn update(id: &str, data: Value) -> Value {
    json!({"op_id": uuid(), "kind": "update", "id": id, "data": data})
}

pub fn delete(id: &str) -> Value {
    json!({"op_id": uuid(), "kind": "delete", "id": id})
}

/// The client-side checksum, computed from the definition in docs/SYNC.md (not from the
/// server's code): XOR of sha256("<id>:<seq>") over the live rows, hex.
pub fn checksum<'a>(rows: impl IntoIterator<Item = (&'a String, &'a i64)>) -> String {
    let mut acc = [0u8; 32];
    for (id, seq) in rows {
        let d = Sha256::digest(format!("{id}:{seq}").as_bytes());
        for (a, b) in acc.iter_mut().zip(d) {
            *a ^= b;
        }
    }
    hex::encode(acc)
}

/// A client replica following the protocol: pulls until `has_more` is false, replaces
/// its copy on `reset`, applies upserts and tombstones. Records every tombstone it was
/// sent so tests can check no delete was invented.
#[derive(Debug, Clone)]
pub struct Replica {
    pub cursor: Value,
    pub rows: HashMap<String, i64>,
    pub tombstones_seen: Vec<String>,
    pub last_count: i64,
    pub last_checksum: String,
}

impl Default for Replica {
    fn default() -> Self {
        Replica {
            cursor: json!(0),
            rows: HashMap::new(),
            tombstones_seen: Vec::new(),
            last_count: 0,
            last_checksum: String::new(),
        }
    }
}

impl Replica {
    /// Apply one pull response; returns whether the server has more.
    pub fn apply(&mut self, resp: &Value) -> bool {
        if resp["reset"].as_bool() == Some(true) {
            self.rows.clear();
        }
        for change in resp["changes"].as_array().expect("changes") {
            let id = change["id"].as_str().expect("id").to_string();
            let seq = change["seq"].as_i64().expect("seq");
            match change["kind"].as_str() {
                Some("upsert") => {
                    self.rows.insert(id, seq);
                }
                Some("delete") => {
                    self.rows.remove(&id);
                    self.tombstones_seen.push(id);
                }
                other => panic!("unknown change kind {other:?}"),
            }
        }
        self.cursor = resp["cursor"].clone();
        self.last_count = resp["count"].as_i64().expect("count");
        self.last_checksum = resp["checksum"].as_str().expect("checksum").to_string();
        resp["has_more"].as_bool().expect("has_more")
    }

    /// Pull until caught up (bounded).
    pub async fn sync(&mut self, server: &Server, user: &User, limit: Option<u32>) {
        for _ in 0..100_000 {
            let resp = server.pull(user, &self.cursor, limit).await;
            if !self.apply(&resp) {
                return;
            }
        }
        panic!("pull never caught up");
    }

    pub fn checksum(&self) -> String {
        checksum(self.rows.iter())
    }
}
