//! TLS for the public listener: the rustls settings Pingora terminates with (TLS 1.2 and
//! 1.3 only, ALPN `h2` then `http/1.1`), and the self-signed development certificate
//! `btp certs dev` writes.
//!
//! The certificate and key are loaded and matched here, before Pingora sees them, because
//! Pingora's own loader panics on bad files; a config that got past `btp check` and then
//! lost its key file must still fail with a message, not a backtrace.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use pingora::listeners::tls::TlsSettings;
use rustls::crypto::ring::default_provider;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};

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

/// Pingora listener settings for `cert` and `key`: HTTP/2 offered through ALPN.
pub fn settings(cert: &Path, key: &Path) -> Result<TlsSettings, TlsError> {
    let certified = load(cert, key)?;
    // Pingora's builder calls this too; doing it first makes `CertifiedKey` construction
    // and the acceptor agree on one provider.
    let _ = CryptoProvider::install_default(default_provider());
    let mut settings =
        TlsSettings::with_callbacks(Box::new(NoCallbacks)).map_err(|e| TlsError::Cert {
            path: cert.display().to_string(),
            message: e.to_string(),
        })?;
    settings.set_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    settings.enable_h2();
    Ok(settings)
}

struct NoCallbacks;

#[async_trait::async_trait]
impl pingora::listeners::TlsAccept for NoCallbacks {}

fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
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
    if chain.is_empty() {
        return Err(cert_err("no certificate in file".into()));
    }
    let pem = std::fs::read(key).map_err(|e| key_err(e.to_string()))?;
    let private: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| key_err(format!("not PEM: {e}")))?
        .ok_or_else(|| key_err("no private key in file".into()))?;
    CertifiedKey::from_der(chain, private, &default_provider()).map_err(|source| {
        TlsError::Mismatch {
            cert: cert_name.clone(),
            key: key_name.clone(),
            source,
        }
    })
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

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its old mode through `open`; force it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)
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
        assert!(load(&cert, &key).is_ok());

        let other = dir.join("other.key");
        generate_dev_cert(&dir.join("other.crt"), &other).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(matches!(
            load(&cert, &other),
            Err(TlsError::Mismatch { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
