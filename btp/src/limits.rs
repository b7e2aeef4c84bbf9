//! Open-file limits. A client the gateway relays (TLS, long-polling, or any WebSocket
//! when `gateway.websocket_handoff` is off) costs it two descriptors, client side and
//! upstream side; a WebSocket handed over to an API worker costs that worker one and the
//! gateway none. The capacity logged at start (and warned about by `btp check`) counts
//! the relayed case, the costlier one, after the soft limit is raised to the hard limit.

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
                    "open-file limit allows about {sockets} relayed clients (2 descriptors each); raise LimitNOFILE for more"
                );
            } else {
                tracing::info!(nofile = limit, sockets, "open-file limit");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read the open-file limit"),
    }
}

/// glibc malloc arenas for an API worker. By default glibc lets threads spread over up to
/// eight arenas per core, each keeping the free memory of its thread's short-lived
/// allocations resident for itself. Two arenas is the usual setting for servers: memory
/// freed by one thread is reused by the others, and a second arena is left for
/// contention.
const API_MALLOC_ARENAS: libc::c_int = 2;

/// Allocations from this size up get their own mapping, returned to the system when
/// freed. glibc's default threshold starts here too but *rises* to the size of any
/// mapped block once it is freed, up to 32 MiB; after that, blocks that size come from
/// the heap and stay resident when freed. A password hash (argon2, 19 MiB) is such a
/// block: without a fixed threshold each login burst left 19–40 MiB resident and free
/// in the worker (measured: 13.9 MiB at start, 34.1 after one registration, 53.5 after
/// two; with it, 14.5 after any number). Setting it also fixes the heap's trim threshold,
/// which glibc would otherwise raise along with it.
const API_MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Tune glibc malloc for an API worker (see the constants); call before its runtime
/// starts.
pub fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; both are valid ones, set before
    // any other thread exists.
    unsafe {
        if libc::mallopt(libc::M_ARENA_MAX, API_MALLOC_ARENAS) != 1 {
            tracing::warn!("could not limit malloc arenas");
        }
        if libc::mallopt(libc::M_MMAP_THRESHOLD, API_MMAP_THRESHOLD) != 1 {
            tracing::warn!("could not fix the malloc mmap threshold");
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
                "the open-file hard limit is {hard}: the gateway can relay about {sockets} clients (2 descriptors each; a handed-over WebSocket costs its API worker 1); raise it (systemd LimitNOFILE=) for {WANTED_SOCKETS}"
            ));
        }
    }
    out
}

fn socket_capacity(nofile: u64) -> u64 {
    nofile.saturating_sub(RESERVED_FDS) / 2
}
