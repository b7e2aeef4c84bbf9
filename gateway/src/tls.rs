//! TLS for the public listener: the rustls settings Pingora terminates with (TLS 1.2 and
//! 1.3 only, ALPN `h2` then `http/1.1`), the certificate it presents ([`Certificate`],
//! swapped by a reload without closing a connection), and the self-signed development
//! certificate `btp certs dev` writes.
//!
//! The certificate and key are loaded and matched here, before Pingora sees them, because
//! Pingora's own loader panics on bad files; a config that got past `btp check` and then
//! lost its key file must still fail with a message, not a backtrace.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;
use arc_swap::ArcSwapOption;
use pingora::listeners::tls::TlsSettings;
use prometheus::{IntGaugeVec, Opts};
use rustls::crypto::ring::default_provider;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;

use crate::metrics::Metrics;
use crate::private::write_private;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls certificate {path}: {message}")]
    Cert { path: String, message: String },
    #[error("tls key {path}: {message}")]
    Key { path: String, message: String },
    #[error("tls key {key} does not match certificate {cert}: {source}")]
    Mismatch {
        cert: String,
        key: String,
        source: rustls::Error,
    },
}

/// The ALPN protocol of an ACME TLS-ALPN-01 check (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Pingora listener settings presenting `certificate`: HTTP/2 then HTTP/1.1 offered
/// through ALPN, and `acme-tls/1` too when `acme_alpn` (the checks of an ACME order).
pub fn settings(certificate: Arc<Certificate>, acme_alpn: bool) -> Result<TlsSettings, TlsError> {
    let mut settings =
        TlsSettings::with_callbacks(Box::new(NoCallbacks)).map_err(|e| TlsError::Cert {
            path: "(listener)".into(),
            message: e.to_string(),
        })?;
    settings.set_cert_resolver(certificate);
    let mut protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if acme_alpn {
        protocols.push(ACME_TLS_ALPN.to_vec());
    }
    settings.set_alpn_protocols(protocols);
    Ok(settings)
}

/// A certificate chain and its private key, read and matched, with what its leaf says.
#[derive(Debug)]
pub struct Loaded {
    key: Arc<CertifiedKey>,
    /// The names it is for: DNS names and IP addresses of its subjectAltName (its common
    /// name when it has none).
    pub names: Vec<String>,
    /// Its validity, in seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
}

impl Loaded {
    /// `names until date`, for the log.
    pub fn describe(&self) -> String {
        let until = x509_parser::time::ASN1Time::from_timestamp(self.not_after)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| self.not_after.to_string());
        format!("{} valid until {until}", self.names.join(", "))
    }
}

/// What the TLS listener presents: the certificate current when a handshake starts. A
/// reload (or an ACME renewal) swaps it whole; a connection keeps the one it was made
/// with. None yet (ACME's first order under way): handshakes fail until it comes.
/// `btp_gateway_certificate_expiry_timestamp_seconds{domain}` follows it.
pub struct Certificate {
    current: ArcSwapOption<CertifiedKey>,
    expiry: IntGaugeVec,
    /// TLS-ALPN-01 answers while an ACME order runs: name → its challenge certificate.
    alpn_answers: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate").finish_non_exhaustive()
    }
}

impl Certificate {
    /// Presenting `loaded` if there is one.
    pub fn new(
        loaded: Option<Loaded>,
        metrics: &Metrics,
    ) -> Result<Arc<Certificate>, prometheus::Error> {
        let expiry = IntGaugeVec::new(
            Opts::new(
                "btp_gateway_certificate_expiry_timestamp_seconds",
                "When the certificate the TLS listener presents expires (Unix time), per name it is for.",
            ),
            &["domain"],
        )?;
        metrics.register(Box::new(expiry.clone()))?;
        let certificate = Certificate {
            current: ArcSwapOption::empty(),
            expiry,
            alpn_answers: Mutex::new(HashMap::new()),
        };
        if let Some(loaded) = loaded {
            certificate.swap(loaded);
        }
        Ok(Arc::new(certificate))
    }

    /// Present `loaded` to every handshake from now on.
    pub fn swap(&self, loaded: Loaded) {
        self.current.store(Some(loaded.key.clone()));
        self.show(&loaded);
    }

    /// Present `key` to a TLS-ALPN-01 check of `name`, until [`Certificate::forget_alpn`].
    pub fn answer_alpn(&self, name: &str, key: Arc<CertifiedKey>) {
        self.answers().insert(name.to_string(), key);
    }

    pub fn forget_alpn(&self, name: &str) {
        self.answers().remove(name);
    }

    fn answers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<CertifiedKey>>> {
        self.alpn_answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn show(&self, loaded: &Loaded) {
        self.expiry.reset();
        for name in &loaded.names {
            self.expiry
                .with_label_values(&[name.as_str()])
                .set(loaded.not_after);
        }
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // An ACME check asks for `acme-tls/1` only: it gets the name's challenge
        // certificate, or nothing (RFC 8737 §3); never the certificate in use.
        if hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == ACME_TLS_ALPN))
        {
            return hello
                .server_name()
                .and_then(|name| self.answers().get(name).cloned());
        }
        self.current.load_full()
    }
}

struct NoCallbacks;

#[async_trait::async_trait]
impl pingora::listeners::TlsAccept for NoCallbacks {}

/// Read `cert` (a PEM chain, leaf first) and `key`, and check that they belong together.
pub fn load(cert: &Path, key: &Path) -> Result<Loaded, TlsError> {
    let cert_name = cert.display().to_string();
    let key_name = key.display().to_string();
    let cert_err = |message: String| TlsError::Cert {
        path: cert_name.clone(),
        message,
    };
    let key_err = |message: String| TlsError::Key {
        path: key_name.clone(),
        message,
    };
    let pem = std::fs::read(cert).map_err(|e| cert_err(e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(format!("not PEM: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(cert_err("no certificate in file".into()));
    };
    let (names, not_before, not_after) = leaf_facts(leaf).map_err(cert_err)?;
    let pem = std::fs::read(key).map_err(|e| key_err(e.to_string()))?;
    let private: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| key_err(format!("not PEM: {e}")))?
        .ok_or_else(|| key_err("no private key in file".into()))?;
    // The provider the acceptor uses too (Pingora's builder installs it as well).
    let _ = CryptoProvider::install_default(default_provider());
    let key = CertifiedKey::from_der(chain, private, &default_provider()).map_err(|source| {
        TlsError::Mismatch {
            cert: cert_name.clone(),
            key: key_name.clone(),
            source,
        }
    })?;
    Ok(Loaded {
        key: Arc::new(key),
        names,
        not_before,
        not_after,
    })
}

/// The names a leaf certificate is for, and its validity.
fn leaf_facts(leaf: &CertificateDer<'_>) -> Result<(Vec<String>, i64, i64), String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut names: Vec<String> = match parsed.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some((*dns).to_string()),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => <[u8; 4]>::try_from(*ip)
                        .ok()
                        .map(|b| std::net::IpAddr::from(b).to_string()),
                    16 => <[u8; 16]>::try_from(*ip)
                        .ok()
                        .map(|b| std::net::IpAddr::from(b).to_string()),
                    _ => None,
                },
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(format!("unreadable subjectAltName: {e}")),
    };
    if names.is_empty() {
        names = parsed
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_string))
            .collect();
    }
    let validity = parsed.validity();
    Ok((
        names,
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}

/// Write a self-signed certificate for `localhost`, `127.0.0.1` and `::1` to `cert`, and
/// its private key to `key` with mode 0600 (created that way, never world-readable even
/// for an instant).
pub fn generate_dev_cert(cert: &Path, key: &Path) -> anyhow::Result<()> {
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let generated =
        rcgen::generate_simple_self_signed(names).context("generating the dev certificate")?;
    for path in [cert, key] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    write_private(key, generated.signing_key.serialize_pem().as_bytes())
        .with_context(|| format!("writing {}", key.display()))?;
    std::fs::write(cert, generated.cert.pem())
        .with_context(|| format!("writing {}", cert.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_cert_loads_and_its_key_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("btp-tls-{}", std::process::id()));
        let cert = dir.join("dev.crt");
        let key = dir.join("dev.key");
        generate_dev_cert(&cert, &key).unwrap_or_else(|e| panic!("{e:#}"));
        let mode = std::fs::metadata(&key)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, 0o600);
        let loaded = load(&cert, &key).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.names, ["localhost", "127.0.0.1", "::1"]);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        assert!(loaded.not_after > now, "{}", loaded.describe());

        let other = dir.join("other.key");
        generate_dev_cert(&dir.join("other.crt"), &other).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(matches!(
            load(&cert, &other),
            Err(TlsError::Mismatch { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
