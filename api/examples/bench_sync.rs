//! Sync benchmark (not a test): push throughput in batches of 100 ops and the time to
//! serve the initial snapshot of a 10,000-project account, through the real HTTP server
//! on loopback. SQLite always; PostgreSQL when `BTP_BENCH_PG_URL` points at a database
//! (bench/api/run.sh starts a throw-away cluster for it).
//!
//! `cargo run --release -p btp-api --example bench_sync`

use std::time::{Duration, Instant};

use anyhow::Context;
use btp_api::auth::{now_millis, token_hash, PasswordParams};
use btp_api::store::Caller;
use btp_api::sync::pull::Cursor;
use btp_api::{AppState, Options};
use btp_config::Config;
use serde_json::{json, Value};

const PROJECTS: usize = 10_000;
const BATCH: usize = 100;
const SNAPSHOT_RUNS: usize = 15;
const CONCURRENT_CLIENTS: usize = 4;

struct Bench {
    base: String,
    http: reqwest::Client,
}

impl Bench {
    async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> anyhow::Result<Value> {
        let mut req = self.http.post(format!("{}{}", self.base, path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        anyhow::ensure!(
            status.is_success(),
            "{path}: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// Register a user: (token, user id).
    async fn user(&self, tag: &str) -> anyhow::Result<(String, String)> {
        let body = json!({"email": format!("{tag}-{}@bench.ma", uuid::Uuid::new_v4()),
                          "password": "bench-password", "name": tag});
        let v = self.post("/api/auth/register", None, &body).await?;
        let token = v["token"].as_str().context("token")?;
        let id = v["user"]["id"].as_str().context("user id")?;
        Ok((token.to_string(), id.to_string()))
    }

    /// Push `count` ops for one user in batches of BATCH: creates, then every fifth
    /// batch updates of rows already created, each based on the row's seq as the last
    /// ack said (`base_seq`, as the web app sends it). Returns the ops pushed.
    async fn push_many(&self, token: &str, count: usize) -> anyhow::Result<usize> {
        let mut ids: Vec<String> = Vec::new();
        let mut seqs: std::collections::HashMap<String, i64> = Default::default();
        let mut pushed = 0;
        let mut b = 0;
        while pushed < count {
            let ops: Vec<Value> = (0..BATCH.min(count - pushed))
                .map(|i| {
                    if b % 5 == 4 && !ids.is_empty() {
                        let id = &ids[(b * 31 + i * 7) % ids.len()];
                        json!({"op_id": uuid::Uuid::new_v4().to_string(), "kind": "update", "id": id,
                               "base_seq": seqs.get(id).copied().unwrap_or(0),
                               "data": {"progress": (b + i) % 101}})
                    } else {
                        let id = uuid::Uuid::new_v4().to_string();
                        ids.push(id.clone());
                        json!({"op_id": uuid::Uuid::new_v4().to_string(), "kind": "create", "id": id,
                               "data": {"name": format!("Chantier {b}-{i}"), "city": "Casablanca",
                                        "client": "Bench SARL", "budget_centimes": 12_500_000,
                                        "status": "active", "start_date": "2024-01-15",
                                        "end_date": "2025-06-30", "progress": 10,
                                        "notes": "Gros oeuvre, second oeuvre, finitions."}})
                    }
                })
                .collect();
            pushed += ops.len();
            let ids_sent: Vec<String> = ops
                .iter()
                .map(|op| op["id"].as_str().unwrap_or_default().to_string())
                .collect();
            let resp = self
                .post(
                    "/api/sync/push",
                    Some(token),
                    &json!({"client_id": "bench", "session_id": "bench", "ops": ops}),
                )
                .await?;
            let acks = resp["acks"].as_array().context("acks")?;
            for (id, ack) in ids_sent.into_iter().zip(acks) {
                anyhow::ensure!(ack["status"] == "applied", "not applied: {ack}");
                if let Some(seq) = ack["seq"].as_i64() {
                    seqs.insert(id, seq);
                }
            }
            b += 1;
        }
        Ok(pushed)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn run(label: &str, url: String, dir: &std::path::Path) -> anyhow::Result<()> {
    let mut config = Config {
        base_dir: dir.to_path_buf(),
        ..Config::default()
    };
    config.database.url = url;
    let state = AppState::open(
        config,
        Options {
            worker: 0,
            password: PasswordParams::fast_insecure(),
            purge: false,
        },
    )
    .await?;
    let app = btp_api::http::finish(btp_api::http::router(state.clone()), state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(btp_api::serve(
        listener,
        app,
        None,
        async move {
            let _ = stopped.await;
        },
        || {},
    ));
    let bench = Bench {
        base,
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(120))
            .build()?,
    };

    // 1. One client, 10,000 ops in batches of 100 (this also builds the 10k account).
    let (token, user_id) = bench.user("big").await?;
    let started = Instant::now();
    let pushed = bench.push_many(&token, PROJECTS + PROJECTS / 4).await?;
    let one = started.elapsed();
    let push_hist = &state.metrics.push_seconds;
    let server_ms_per_batch =
        push_hist.get_sample_sum() / push_hist.get_sample_count().max(1) as f64 * 1e3;
    let snapshot = bench
        .post(
            "/api/sync/pull",
            Some(&token),
            &json!({"cursor": 0, "limit": 1}),
        )
        .await?;
    let live = snapshot["count"].as_i64().unwrap_or_default();

    // 2. Several clients (users) pushing at once.
    let mut tokens = Vec::new();
    for i in 0..CONCURRENT_CLIENTS {
        tokens.push(bench.user(&format!("c{i}")).await?.0);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in tokens {
        let b = Bench {
            base: bench.base.clone(),
            http: bench.http.clone(),
        };
        tasks.push(tokio::spawn(async move { b.push_many(&t, 2_500).await }));
    }
    let mut concurrent_ops = 0;
    for t in tasks {
        concurrent_ops += t.await??;
    }
    let many = started.elapsed();

    // 3. Initial snapshot of the 10k account, one page.
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..SNAPSHOT_RUNS {
        let started = Instant::now();
        let resp = bench
            .http
            .post(format!("{}/api/sync/pull", bench.base))
            .bearer_auth(&token)
            .json(&json!({"cursor": 0, "limit": 10_000}))
            .send()
            .await?;
        let body = resp.bytes().await?;
        times.push(started.elapsed());
        bytes = body.len();
    }
    times.sort();

    // Where the snapshot time goes: the store (query + rows) and the JSON encoding.
    let caller = Caller {
        user_id: user_id.clone(),
        token_hash: token_hash(&token),
    };
    let mut store_times = Vec::new();
    let mut encode_times = Vec::new();
    for _ in 0..SNAPSHOT_RUNS {
        let started = Instant::now();
        let resp = state
            .store
            .pull(&caller, Cursor::Seq(0), 10_000, now_millis())
            .await?;
        store_times.push(started.elapsed());
        let started = Instant::now();
        let encoded = serde_json::to_vec(&resp)?;
        encode_times.push(started.elapsed());
        anyhow::ensure!(encoded.len() > 1000);
    }
    store_times.sort();
    encode_times.sort();

    println!("## {label}");
    println!(
        "push, 1 client, batches of {BATCH}: {pushed} ops in {:.2} s = {:.0} ops/s ({} live projects)",
        one.as_secs_f64(),
        pushed as f64 / one.as_secs_f64(),
        live
    );
    println!("  of which: {server_ms_per_batch:.1} ms per batch in the store transaction");
    println!(
        "push, {CONCURRENT_CLIENTS} clients at once, batches of {BATCH}: {concurrent_ops} ops in {:.2} s = {:.0} ops/s",
        many.as_secs_f64(),
        concurrent_ops as f64 / many.as_secs_f64()
    );
    println!(
        "snapshot of {live} projects ({:.1} MB JSON), {SNAPSHOT_RUNS} runs: min {:.1} ms, median {:.1} ms, p90 {:.1} ms",
        bytes as f64 / 1e6,
        times[0].as_secs_f64() * 1e3,
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.9).as_secs_f64() * 1e3,
    );
    println!(
        "  of which: store read {:.1} ms, JSON encode {:.1} ms (medians, in process)",
        percentile(&store_times, 0.5).as_secs_f64() * 1e3,
        percentile(&encode_times, 0.5).as_secs_f64() * 1e3,
    );
    let _ = stop.send(());
    let _ = server.await;
    state.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("btp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sqlite = format!("sqlite://{}/bench.db", dir.display());
    let result = run("SQLite (WAL, file on local disk)", sqlite, &dir).await;
    if result.is_ok() {
        if let Ok(pg) = std::env::var("BTP_BENCH_PG_URL") {
            run("PostgreSQL 15 (loopback TCP)", pg, &dir).await?;
        } else {
            println!("(PostgreSQL skipped: set BTP_BENCH_PG_URL, or use bench/api/run.sh)");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}
