//! Debian's `pebble` (an RFC 8555 test certificate authority) and `pebble-challtestsrv`
//! (its DNS, answering every name with 127.0.0.1), started on free loopback ports for a
//! test and killed on drop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_ports, loopback, run_btp_plain, TempDir};

pub struct Pebble {
    pebble: Option<Child>,
    dns: Child,
    /// The ACME directory URL.
    pub directory: String,
    management: SocketAddr,
    /// The certificate of pebble's own HTTPS listener: what a client must trust to talk
    /// ACME to it (`gateway.acme_ca_roots`).
    pub listener_cert: PathBuf,
    dir: PathBuf,
}

impl Pebble {
    /// Pebble checking HTTP-01 answers on `http_port`, TLS-ALPN-01 ones on `tls_port`, of
    /// whatever a name resolves to (127.0.0.1), with its files under `dir`.
    pub async fn start(dir: &TempDir, http_port: u16, tls_port: u16) -> Pebble {
        Pebble::start_with(dir, http_port, tls_port, None).await
    }

    /// [`Pebble::start`], its certificates valid for `validity` seconds (else pebble's
    /// default, years).
    pub async fn start_with(
        dir: &TempDir,
        http_port: u16,
        tls_port: u16,
        validity: Option<u64>,
    ) -> Pebble {
        let ports = free_ports(4);
        let (acme, management, dns, dns_management) = (
            loopback(ports[0]),
            loopback(ports[1]),
            loopback(ports[2]),
            loopback(ports[3]),
        );
        let certs = dir.join("pebble");
        let (code, out, err) = run_btp_plain(&["certs", "--dir", &certs.display().to_string()]);
        assert_eq!(code, 0, "btp certs for pebble: {out}{err}");
        let mut config = serde_json::json!({
            "pebble": {
                "listenAddress": acme.to_string(),
                "managementListenAddress": management.to_string(),
                "certificate": certs.join("dev.crt"),
                "privateKey": certs.join("dev.key"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        if let Some(seconds) = validity {
            config["pebble"]["certificateValidityPeriod"] = seconds.into();
        }
        let config = dir.write("pebble/pebble.json", config.to_string());
        let log = |name: &str| {
            let file = std::fs::File::create(certs.join(name))
                .unwrap_or_else(|e| panic!("pebble log: {e}"));
            let copy = file
                .try_clone()
                .unwrap_or_else(|e| panic!("pebble log: {e}"));
            (Stdio::from(file), Stdio::from(copy))
        };
        let (out, err) = log("challtestsrv.log");
        let dns_child = Command::new("pebble-challtestsrv")
            .args([
                "-dns01",
                &dns.to_string(),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ])
            .args(["-management", &dns_management.to_string()])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("pebble-challtestsrv (apt-get install pebble): {e}"));
        let (out, err) = log("pebble.log");
        let pebble = Command::new("pebble")
            .args(["-config", &config.display().to_string()])
            .args(["-dnsserver", &dns.to_string()])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("pebble (apt-get install pebble): {e}"));
        let started = Pebble {
            pebble: Some(pebble),
            dns: dns_child,
            directory: format!("https://{acme}/dir"),
            management,
            listener_cert: certs.join("dev.crt"),
            dir: certs,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while started.get(&started.directory).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "pebble did not answer at {}:\n{}",
                started.directory,
                started.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        started
    }

    async fn get(&self, url: &str) -> Result<String, String> {
        let pem = std::fs::read(&self.listener_cert).map_err(|e| e.to_string())?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| e.to_string())?;
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(cert)
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("{url}: {}", resp.status()));
        }
        resp.text().await.map_err(|e| e.to_string())
    }

    /// The root the certificates pebble issues chain to (PEM).
    pub async fn root_pem(&self) -> String {
        let url = format!("https://{}/roots/0", self.management);
        self.get(&url)
            .await
            .unwrap_or_else(|e| panic!("pebble root: {e}"))
    }

    /// Stop the authority (its DNS stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.pebble.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What pebble logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        let _ = self.dns.kill();
        let _ = self.dns.wait();
    }
}
