//! Shared helpers for the `btp` integration tests: free loopback ports, self-deleting
//! temp dirs, a `config.toml` writer, the real `btp` binary as a child process (killed on
//! drop, its output kept in a log file and printed when a test fails), readiness waits,
//! a small real upstream (`upstream`) that plays an API worker on loopback, and a raw
//! WebSocket client (`ws`).
//!
//! Every test file that declares `mod support;` compiles this module anew and uses only
//! part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod gateway;
pub mod h2;
pub mod pebble;
pub mod raw;
pub mod upstream;
pub mod ws;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, release it).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"))
        .port()
}

/// `count` distinct free ports, all held until every one is picked so they cannot repeat.
pub fn free_ports(count: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}")))
        .collect();
    held.iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect()
}

/// A TLS client that trusts only the PEM certificate `ca_pem` and offers `alpn`.
pub fn tls_connector(ca_pem: &[u8], alpn: &[u8]) -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        let cert = cert.map_err(|e| format!("certificate: {e}"))?;
        roots.add(cert).map_err(|e| format!("root: {e}"))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        let unique = format!("btp-test-{label}-{}-{}", std::process::id(), rand_suffix());
        let path = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// Write `contents` to `rel`, creating parent directories.
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
        }
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn rand_suffix() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// Write `config.toml` into `dir` and return its path.
pub fn write_config(dir: &TempDir, toml: &str) -> PathBuf {
    dir.write("config.toml", toml)
}

/// The `btp` binary built for this test run.
pub fn btp_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_btp"))
}

/// Run `btp <args…> --config <config>` to completion; (exit code, stdout, stderr).
pub fn run_btp(args: &[&str], config: &Path) -> (i32, String, String) {
    let out = Command::new(btp_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("BTP_CONFIG")
        .output()
        .unwrap_or_else(|e| panic!("running btp: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run `btp <args…>` without `--config` to completion; (exit code, stdout, stderr).
pub fn run_btp_plain(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(btp_bin())
        .args(args)
        .env_remove("BTP_CONFIG")
        .output()
        .unwrap_or_else(|e| panic!("running btp: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `btp` child process. Killed (SIGKILL) and reaped on drop; if the test is
/// failing, the tail of its output is printed so the failure explains itself.
pub struct BtpProcess {
    child: Child,
    log: PathBuf,
}

impl BtpProcess {
    /// Start `btp <args…> --config <config>`, output to `<config dir>/btp-<args0>.log`.
    pub fn spawn(args: &[&str], config: &Path) -> BtpProcess {
        BtpProcess::spawn_under(&[], args, config)
    }

    /// [`BtpProcess::spawn`], run by `wrapper` (a command and its arguments, the `btp`
    /// command line appended) when it is not empty.
    pub fn spawn_under(wrapper: &[&str], args: &[&str], config: &Path) -> BtpProcess {
        let dir = config
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        let log = dir.join(format!(
            "btp-{}-{}.log",
            args.first().unwrap_or(&"up"),
            rand_suffix()
        ));
        let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("log file: {e}"));
        let err = out.try_clone().unwrap_or_else(|e| panic!("log file: {e}"));
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(btp_bin());
                c
            }
            None => Command::new(btp_bin()),
        };
        let child = command
            .args(args)
            .arg("--config")
            .arg(config)
            .env_remove("BTP_CONFIG")
            .env(
                "RUST_LOG",
                std::env::var("BTP_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning btp: {e}"));
        BtpProcess { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote so far.
    pub fn output(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// `Some(code)` if the process has exited.
    pub fn exited(&mut self) -> Option<i32> {
        self.child
            .try_wait()
            .ok()
            .flatten()
            .map(|s| s.code().unwrap_or(-1))
    }

    /// Panic with the process output if it has died.
    pub fn assert_alive(&mut self) {
        if let Some(code) = self.exited() {
            panic!("btp exited with {code}:\n{}", self.output());
        }
    }

    /// Wait until `GET url` answers `want_status`, or panic with the process output.
    pub async fn wait_for_status(&mut self, url: &str, want_status: u16, within: Duration) {
        if let Err(why) = self.try_wait_for_status(url, want_status, within).await {
            panic!("{why}");
        }
    }

    /// Wait until `GET url` answers `want_status`; otherwise why not, with the process
    /// output.
    pub async fn try_wait_for_status(
        &mut self,
        url: &str,
        want_status: u16,
        within: Duration,
    ) -> Result<(), String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_else(|e| panic!("client: {e}"));
        let deadline = Instant::now() + within;
        loop {
            if let Some(code) = self.exited() {
                return Err(format!("btp exited with {code}:\n{}", self.output()));
            }
            if let Ok(resp) = client.get(url).send().await {
                if resp.status().as_u16() == want_status {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{url} did not answer {want_status} within {within:?}; btp output:\n{}",
                    self.output()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for BtpProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let out = self.output();
            let tail: String = out
                .lines()
                .rev()
                .take(60)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            eprintln!("---- btp output (last lines) ----\n{tail}\n---- end ----");
        }
    }
}

/// A minimal web app for `static.root`: an index, a stylesheet, a fingerprinted script
/// large enough to compress, and a binary image.
pub fn write_static_site(dir: &TempDir, root: &str) {
    dir.write(
        &format!("{root}/index.html"),
        "<!doctype html><html><head><title>BTP</title><link rel=\"stylesheet\" href=\"/app.css\"></head>\
         <body><div id=\"app\">BTP index</div><script src=\"/js/app.3f2a9c1b.js\"></script></body></html>\n",
    );
    dir.write(
        &format!("{root}/app.css"),
        "body { margin: 0; font-family: sans-serif; }\n".repeat(40),
    );
    dir.write(
        &format!("{root}/js/app.3f2a9c1b.js"),
        "export function hello(name) { return `hello ${name}`; }\n".repeat(60),
    );
    dir.write(
        &format!("{root}/logo.png"),
        [0x89u8, b'P', b'N', b'G', 0, 1, 2, 3],
    );
    dir.write(
        &format!("{root}/docs/index.html"),
        "<!doctype html><title>docs</title>\n",
    );
}

/// `GET path` on a kept-alive HTTP/1.1 connection, within 10 s: the status and the body
/// (sized by its `Content-Length`).
pub async fn get_on<S>(stream: &mut S, path: &str) -> (u16, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/html\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut buf = Vec::new();
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or_else(|| panic!("no content-length in {head}"));
                if buf.len() >= end + 4 + len {
                    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                    return Ok::<_, std::io::Error>((status, body));
                }
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => panic!("GET {path} on the kept connection: {e}"),
        Err(_) => panic!("GET {path} on the kept connection: no answer in 10 s"),
    }
}

/// A TLS connection to `addr` for `name`, trusting only `ca_pem`, offering HTTP/1.1: the
/// certificate it was shown (DER) and the stream.
pub async fn tls_connect(
    addr: SocketAddr,
    ca_pem: &[u8],
    name: &str,
) -> Result<
    (
        Vec<u8>,
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    ),
    String,
> {
    let connector = tls_connector(ca_pem, b"http/1.1")?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name =
        rustls::pki_types::ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let stream = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let shown = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default();
    Ok((shown, stream))
}
