//! `btp`: the one binary. Each role is a subcommand; `btp up` (the default) is what nginx
//! and pm2 were together — the gateway in this process, the API workers as supervised
//! children of the same binary. Everything here is the binary edge: parse the command
//! line, load and validate the configuration, set up logging and limits, then hand over
//! to the role. Errors become one clear line and a non-zero exit, never a backtrace.

mod cli;
mod limits;
mod logging;
mod supervise;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let source = cli.source();
    let command = cli.command.unwrap_or(Command::Up { upgrade: false });

    if let Command::Certs { dir } = &command {
        return report(
            btp_gateway::tls::generate_dev_cert(&dir.join("dev.crt"), &dir.join("dev.key"))
                .map(|()| println!("wrote {0}/dev.crt and {0}/dev.key", dir.display())),
        );
    }
    if let Command::Reload { restart_workers } = &command {
        let signal = if *restart_workers {
            nix::sys::signal::Signal::SIGUSR2
        } else {
            nix::sys::signal::Signal::SIGHUP
        };
        return report(supervise::signal_running(&source, signal));
    }

    let config = match btp_config::load(&source) {
        Ok(config) => config,
        Err(problems) => {
            eprintln!("{problems}");
            return ExitCode::FAILURE;
        }
    };
    if let Command::Check = &command {
        for warning in limits::warnings() {
            eprintln!("warning: {warning}");
        }
        println!("config OK");
        return ExitCode::SUCCESS;
    }

    logging::init(&config.log);
    limits::raise_nofile();

    match command {
        Command::Up { upgrade } => report(
            supervise::launcher(&source)
                .and_then(|launcher| run_gateway(config, source, upgrade, Some(launcher))),
        ),
        Command::Gateway { upgrade } => report(run_gateway(config, source, upgrade, None)),
        Command::Api { worker } => report(run_api(config, worker)),
        Command::Check | Command::Certs { .. } | Command::Reload { .. } => ExitCode::SUCCESS,
    }
}

fn run_gateway(
    config: btp_config::Config,
    source: btp_config::Source,
    upgrade: bool,
    workers: Option<btp_gateway::supervisor::Launcher>,
) -> anyhow::Result<()> {
    supervise::write_pid_file(&config)?;
    btp_gateway::run(
        config,
        btp_gateway::RunOptions {
            source,
            upgrade,
            workers,
        },
    )
}

fn run_api(config: btp_config::Config, worker: u16) -> anyhow::Result<()> {
    limits::tune_malloc();
    let launch = supervise::launch_from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("btp-api")
        .build()?;
    runtime.block_on(btp_api::run_with(config, worker, launch))
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("btp: {e:#}");
            ExitCode::FAILURE
        }
    }
}
