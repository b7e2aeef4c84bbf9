//! The standard Engine.IO / Socket.IO protocol test-suite server, built only on
//! `btp-sio`: `cargo run -p btp-sio --example echo -- --port 3000`.
//!
//! Socket.IO on `/socket.io/` (namespaces `/` and `/custom`), bare Engine.IO echo on
//! `/engine.io/`; ping 300 ms, timeout 200 ms, connect timeout 1 s, max payload
//! 1,000,000, CORS `*`. Prints `listening on 127.0.0.1:PORT` once ready (port 0 picks a
//! free one) and shuts down gracefully on Ctrl-C.

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Port to listen on (0 = any free port).
    #[arg(long, default_value_t = 3000)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Serve WebSocket requests through hyper only, never straight off a connection's
    /// first bytes (see `btp_sio::sniff`).
    #[arg(long)]
    hyper_upgrades: bool,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let listener = tokio::net::TcpListener::bind((args.host, args.port)).await?;
    println!("listening on {}", listener.local_addr()?);
    let config = btp_sio::harness::config();
    let sio = btp_sio::harness::socketio(config.clone());
    let eio = btp_sio::harness::engine(config);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let upgrades = if args.hyper_upgrades {
        btp_sio::harness::Upgrades::Hyper
    } else {
        btp_sio::harness::Upgrades::Direct
    };
    btp_sio::harness::serve(listener, sio, eio, upgrades, shutdown).await;
    Ok(())
}
