//! The command line: roles as subcommands, one `--config` for all of them.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "btp",
    version,
    about = "BTP gateway: edge proxy, realtime sync API and their supervisor"
)]
pub struct Cli {
    /// Configuration file [default: config.toml if present, else embedded defaults]
    #[arg(long, global = true, env = "BTP_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway and supervise the API workers
    Up {
        /// Take over the listeners of a running `btp` (Pingora graceful upgrade; send
        /// SIGQUIT to the old process once this one is started)
        #[arg(long)]
        upgrade: bool,
    },
    /// Run only the gateway
    Gateway {
        #[arg(long)]
        upgrade: bool,
    },
    /// Run one API worker
    Api {
        /// Worker index: listens on api.listen's port + WORKER
        #[arg(long, default_value_t = 0)]
        worker: u16,
    },
    /// Validate the configuration (like `nginx -t`, but semantic) and exit
    Check,
    /// Ask the running `btp up` / `btp gateway` to re-read its configuration and static files
    /// (SIGHUP); an invalid configuration is reported and the running one kept
    Reload {
        /// Also replace every API worker, one at a time, each gated on the new one being
        /// ready (SIGUSR2)
        #[arg(long)]
        restart_workers: bool,
    },
    /// Write a self-signed development certificate (never commit the key)
    Certs {
        /// Directory for dev.crt and dev.key
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
    },
}

impl Cli {
    pub fn source(&self) -> btp_config::Source {
        match &self.config {
            Some(path) => btp_config::Source::Explicit(path.clone()),
            None => btp_config::Source::Default,
        }
    }
}
