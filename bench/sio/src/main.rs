//! `btp-bench-sio`: the realtime load benchmark. Opens N Socket.IO v5 clients over
//! WebSocket against one server (the `btp up` gateway, or the Node baseline), all as the
//! same user with distinct `clientSessionId`s, and measures
//!
//! - connect rate: clients fully connected (upgrade, Engine.IO open, namespace CONNECT
//!   accepted) per second, with a bounded number of handshakes in flight;
//! - memory per connection: resident memory the server's process tree gained while the
//!   clients connected, divided by N;
//! - broadcast latency: client 0 pushes one op per round with `sync:push`; every other
//!   client must receive `sync:changes` for it exactly once, and the publisher never.
//!   Latency is receive time minus the instant the push was written, over all receivers
//!   and rounds;
//! - CPU per round: what the server's process tree and this tool ran from each push to
//!   its last delivery. They share the machine's cores, so their sum over the cores is a
//!   floor under the last delivery's latency that no scheduling can beat.
//!
//! Prints one markdown table row on stdout (see `bench/sio/run.sh`) and details on
//! stderr. Every phase is bounded in time; the process exits when done, closing every
//! socket.

mod client;
mod protocol;
mod report;
mod rss;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use tokio::sync::Semaphore;

use client::{Client, Recorder, Target};
use report::{Figures, RoundCpu};

#[derive(Parser)]
#[command(
    about = "Socket.IO load benchmark: connect rate, memory per connection, broadcast latency"
)]
struct Args {
    /// Server address (the gateway's public port, or the baseline's), loopback only.
    #[arg(long)]
    addr: SocketAddr,
    /// Register a fresh user with `POST <register-url>/api/auth/register` and use its token.
    #[arg(long, conflicts_with = "token")]
    register_url: Option<String>,
    /// Use this token instead of registering.
    #[arg(long)]
    token: Option<String>,
    /// Clients to open, the publisher included.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Broadcast rounds (one pushed op each).
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Loopback source addresses to spread clients over (127.0.0.1, .2, ...), for more
    /// connections than one address has ephemeral ports.
    #[arg(long, default_value_t = 1)]
    source_ips: u8,
    /// A server process to measure (with its descendants); repeatable.
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// The server's name in the table.
    #[arg(long, default_value = "server")]
    label: String,
    /// Longest wait for one client's handshake.
    #[arg(long, default_value_t = 60_000)]
    connect_timeout_ms: u64,
    /// Longest wait for one round's ack and deliveries.
    #[arg(long, default_value_t = 15_000)]
    round_timeout_ms: u64,
    /// Pause after connecting (before reading memory) and between rounds, so each round
    /// starts from a quiet server.
    #[arg(long, default_value_t = 2_000)]
    settle_ms: u64,
    #[arg(long, default_value_t = 200)]
    gap_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.addr.ip().is_loopback() {
        bail!("the benchmark runs on loopback only, not {}", args.addr);
    }
    if args.clients < 2 || args.rounds == 0 || args.concurrency == 0 || args.source_ips == 0 {
        bail!("need at least 2 clients, 1 round, a concurrency and a source address");
    }
    raise_nofile(args.clients)?;
    let token = match (&args.register_url, &args.token) {
        (Some(url), _) => register(url).await?,
        (None, Some(token)) => token.clone(),
        (None, None) => bail!("give --register-url or --token"),
    };
    let target = Arc::new(Target {
        addr: args.addr,
        token,
    });
    let recorder = Arc::new(Recorder::new(args.rounds));
    let run = format!("{:08x}", rand_tag());

    let (rss_before, _) = rss::tree_rss(&args.server_pids);
    let started = Instant::now();
    let (clients, failures) = connect_all(&args, &target, &recorder, &run).await;
    let connect_time = started.elapsed();
    let mut clients = clients.into_iter();
    let Some(mut publisher) = clients.next() else {
        bail!(
            "the publisher could not connect: {}",
            failures.first().map_or("", String::as_str)
        );
    };
    let receivers: Vec<Client> = clients.collect();
    let connected = receivers.len() + 1;
    eprintln!(
        "{}: {connected}/{} connected in {:.2} s",
        args.label,
        args.clients,
        connect_time.as_secs_f64()
    );

    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    let (rss_connected, processes) = rss::tree_rss(&args.server_pids);

    let expected_per_round = receivers.len() as u64;
    let cpu = broadcast_rounds(&args, &mut publisher, &recorder, &run, expected_per_round).await?;
    let (rss_after, _) = rss::tree_rss(&args.server_pids);

    let figures = Figures {
        label: args.label.clone(),
        requested: args.clients,
        connected,
        connect_time,
        rss_before,
        rss_connected,
        rss_after,
        processes,
        rounds: args.rounds,
        latencies: recorder.take_latencies(),
        expected: expected_per_round * args.rounds as u64,
        delivered: recorder.total_delivered(),
        duplicates: recorder.duplicates.load(Ordering::Relaxed),
        echoes: recorder.echoes.load(Ordering::Relaxed),
        stray: recorder.stray.load(Ordering::Relaxed),
        closed: recorder.closed.load(Ordering::Relaxed),
        connect_failures: failures,
        cpu,
    };
    eprintln!("{}", figures.details());
    println!("{}", figures.row());
    drop(receivers);
    Ok(())
}

/// Connect the publisher first (it must exist for the run to mean anything), then the
/// others with at most `concurrency` handshakes in flight. Returns the clients, the
/// publisher first, and one message per failed client.
async fn connect_all(
    args: &Args,
    target: &Arc<Target>,
    recorder: &Arc<Recorder>,
    run: &str,
) -> (Vec<Client>, Vec<String>) {
    let timeout = Duration::from_millis(args.connect_timeout_ms);
    let source = |i: usize| {
        (args.source_ips > 1).then(|| {
            IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                0,
                1 + (i % args.source_ips as usize) as u8,
            ))
        })
    };
    let mut clients = Vec::with_capacity(args.clients);
    let mut failures = Vec::new();
    let publisher_session = format!("bench-{run}-0");
    match client::connect(
        target,
        source(0),
        &publisher_session,
        true,
        recorder.clone(),
        timeout,
    )
    .await
    {
        Ok(c) => clients.push(c),
        Err(e) => {
            failures.push(e.to_string());
            return (clients, failures);
        }
    }

    let permits = Arc::new(Semaphore::new(args.concurrency));
    let mut tasks = Vec::with_capacity(args.clients - 1);
    for i in 1..args.clients {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let target = target.clone();
        let recorder = recorder.clone();
        let session = format!("bench-{run}-{i}");
        let source = source(i);
        tasks.push(tokio::spawn(async move {
            let result = client::connect(&target, source, &session, false, recorder, timeout).await;
            drop(permit);
            result
        }));
    }
    for task in tasks {
        match task.await {
            Ok(Ok(c)) => clients.push(c),
            Ok(Err(e)) => failures.push(e.to_string()),
            Err(e) => failures.push(format!("client task failed: {e}")),
        }
    }
    (clients, failures)
}

/// Push one op per round from the publisher and wait (bounded) for its ack and for every
/// receiver to get the broadcast before the next round. Returns the CPU time the server
/// and this tool ran from each push until its last delivery, summed over the rounds.
async fn broadcast_rounds(
    args: &Args,
    publisher: &mut Client,
    recorder: &Recorder,
    run: &str,
    expected: u64,
) -> anyhow::Result<RoundCpu> {
    let mut cpu = RoundCpu::default();
    let me = [std::process::id()];
    let session = format!("bench-{run}-0");
    let round_timeout = Duration::from_millis(args.round_timeout_ms);
    let Some(acks) = publisher.acks.as_mut() else {
        bail!("the publisher has no ack channel");
    };
    for round in 0..args.rounds {
        let ack_id = round as u64;
        let text = protocol::push(ack_id, &session, round);
        let deadline = Instant::now() + round_timeout;
        let (server_before, tool_before) =
            (rss::tree_cpu_ns(&args.server_pids), rss::tree_cpu_ns(&me));
        recorder.mark_sent(round);
        client::send_text(&publisher.writer, text)
            .await
            .with_context(|| format!("round {round}: the push could not be written"))?;
        let (id, ack) = tokio::time::timeout_at(deadline.into(), acks.recv())
            .await
            .map_err(|_| anyhow::anyhow!("round {round}: no ack within {round_timeout:?}"))?
            .with_context(|| format!("round {round}: the publisher's socket closed"))?;
        if id != ack_id {
            bail!("round {round}: ack {id} answered push {ack_id}");
        }
        if let Some(problem) = protocol::push_ack_problem(&ack) {
            bail!("round {round}: {problem}");
        }
        while recorder.delivered(round) < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        cpu.server_ns += rss::tree_cpu_ns(&args.server_pids).saturating_sub(server_before);
        cpu.tool_ns += rss::tree_cpu_ns(&me).saturating_sub(tool_before);
        if recorder.delivered(round) < expected {
            eprintln!(
                "{}: round {round}: {}/{expected} delivered within {round_timeout:?}",
                args.label,
                recorder.delivered(round)
            );
        }
        tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;
    }
    Ok(cpu)
}

/// Register a throw-away user; its token authenticates every client.
async fn register(base: &str) -> anyhow::Result<String> {
    let email = format!("bench-{:08x}@bench.invalid", rand_tag());
    let response = reqwest::Client::new()
        .post(format!("{}/api/auth/register", base.trim_end_matches('/')))
        .json(&serde_json::json!({"email": email, "password": "bench-password-1", "name": "Bench"}))
        .send()
        .await
        .context("register request failed")?;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .context("register answer is not JSON")?;
    match body.get("token").and_then(serde_json::Value::as_str) {
        Some(token) if status.is_success() => Ok(token.to_owned()),
        _ => bail!("register answered {status}: {body}"),
    }
}

/// A per-run tag so client session ids and emails never collide across runs.
fn rand_tag() -> u32 {
    let id = uuid::Uuid::new_v4();
    let b = id.as_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Each client is one descriptor here; raise the soft limit to the hard one and check it
/// is enough.
fn raise_nofile(clients: usize) -> anyhow::Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit")?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("setrlimit")?;
    }
    let needed = clients as u64 + 64;
    if hard < needed {
        bail!("{clients} clients need about {needed} descriptors; the hard limit is {hard}");
    }
    Ok(())
}
