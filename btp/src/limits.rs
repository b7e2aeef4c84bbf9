//! Open-file limits. A gateway holding N client sockets uses 2N descriptors (client side
//! and upstream side), so the soft limit is raised to the hard limit at start, and the
//! resulting socket capacity is logged (and warned about by `btp check`).

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors kept aside for listeners, the database, static files and logs.
const RESERVED_FDS: u64 = 256;
/// The capacity below which an operator should hear about it.
const WANTED_SOCKETS: u64 = 10_000;

/// Raise the soft `RLIMIT_NOFILE` to the hard limit and log what that allows.
pub fn raise_nofile() {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard {
                if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                    tracing::warn!(soft, hard, error = %e, "could not raise the open-file limit");
                }
            }
            let limit = getrlimit(Resource::RLIMIT_NOFILE).map_or(soft, |(s, _)| s);
            let sockets = socket_capacity(limit);
            if sockets < WANTED_SOCKETS {
                tracing::warn!(
                    nofile = limit,
                    sockets,
                    "open-file limit allows about {sockets} proxied sockets (each uses 2 descriptors); raise LimitNOFILE for more"
                );
            } else {
                tracing::info!(nofile = limit, sockets, "open-file limit");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read the open-file limit"),
    }
}

/// What `btp check` warns about without failing.
pub fn warnings() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let sockets = socket_capacity(hard);
        if sockets < WANTED_SOCKETS {
            out.push(format!(
                "the open-file hard limit is {hard}: the gateway can hold about {sockets} WebSocket clients (2 descriptors each); raise it (systemd LimitNOFILE=) for {WANTED_SOCKETS}"
            ));
        }
    }
    out
}

fn socket_capacity(nofile: u64) -> u64 {
    nofile.saturating_sub(RESERVED_FDS) / 2
}
