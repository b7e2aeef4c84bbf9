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

/// glibc malloc arenas for an API worker. By default glibc lets threads spread over up to
/// eight arenas per core; a worker's threads (tokio's, the database driver's) then each
/// leave the memory of short-lived allocations (an HTTP upgrade, a request's buffers) free
/// but resident in their own arena, between the small long-lived allocations of thousands
/// of idle sockets. With two arenas that memory is reused: 9,000 Socket.IO sockets cost
/// the worker 2.0 KiB each instead of 4.2, with no change in requests per second or
/// broadcast latency that this machine's noise let us see (bench/README.md). Two, not one,
/// is the usual setting for servers: it keeps a second arena for contention.
const API_MALLOC_ARENAS: libc::c_int = 2;

/// Cap the malloc arenas of this process (an API worker); call before its runtime starts.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; M_ARENA_MAX is a valid one.
    unsafe {
        if libc::mallopt(libc::M_ARENA_MAX, API_MALLOC_ARENAS) != 1 {
            tracing::warn!("could not limit malloc arenas");
        }
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
