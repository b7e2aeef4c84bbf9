//! Certificates from an ACME certificate authority (RFC 8555: Let's Encrypt, or a private
//! one), obtained and renewed by the gateway itself with the `instant-acme` client.
//!
//! - At start, a certificate kept in `acme.dir` for exactly `acme_domains` is presented
//!   at once (no order); otherwise one is ordered while the listeners already run.
//! - The authority checks each name with TLS-ALPN-01 (RFC 8737, the default): it opens a
//!   TLS connection to `tls_listen` offering only `acme-tls/1`, and the listener presents
//!   a certificate made for the check ([`Certificate::answer_alpn`]); or with HTTP-01: it
//!   asks `listen` for `/.well-known/acme-challenge/<token>`, which the front door routes
//!   here ([`Challenges`], decided in `decide.rs`, answered in `serve/reply.rs`).
//! - Renewal starts two thirds into the certificate's lifetime; a failed order is tried
//!   again after 5 s, then twice as long each time up to an hour, while the current
//!   certificate keeps being served (`btp_gateway_acme_failures_total`, and the log).
//! - A new certificate is written (key first, each file replaced atomically), read back
//!   and matched like a file certificate ([`tls::load`]), then swapped into the listener:
//!   connections already open keep theirs.
//! - The account's key (`account.json`) is kept too, so a restart places no new account.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::{IntCounter, Opts};
use rustls::crypto::ring::default_provider;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use crate::metrics::Metrics;
use crate::private::{private_dir, write_private};
use crate::tls::{self, Certificate, Loaded};

/// The first retry after a failed order; each next one waits twice as long.
const FIRST_RETRY: Duration = Duration::from_secs(5);
const LAST_RETRY: Duration = Duration::from_secs(3600);
/// How long the authority may take to check the names, then to issue.
const ORDER_TIMEOUT: Duration = Duration::from_secs(90);

const ACCOUNT_FILE: &str = "account.json";
const CERT_FILE: &str = "certificate.pem";
const KEY_FILE: &str = "certificate.key";

/// `gateway.acme_*`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    pub domains: Vec<String>,
    pub email: String,
    pub directory: String,
    pub ca_roots: Option<PathBuf>,
    /// Where the account key and the certificate are kept (mode 0700).
    pub dir: PathBuf,
    pub challenge: Challenge,
}

/// How the authority checks that the gateway answers for a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// On the TLS listener, with a certificate made for the check (RFC 8737).
    TlsAlpn01,
    /// On the plain listener, at `/.well-known/acme-challenge/<token>`.
    Http01,
}

/// The HTTP-01 answers the authority may ask for now: token → key authorization.
#[derive(Debug, Default)]
pub struct Challenges(Mutex<HashMap<String, String>>);

impl Challenges {
    /// The key authorization for `token`, while its order is under way.
    pub fn answer(&self, token: &str) -> Option<String> {
        self.map().get(token).cloned()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Takes its answers away when the order is over, whatever its outcome.
struct Answering<'a> {
    challenges: &'a Challenges,
    certificate: &'a Certificate,
    tokens: Vec<String>,
    names: Vec<String>,
}

impl Answering<'_> {
    fn put(&mut self, token: String, key_authorization: String) {
        self.challenges
            .map()
            .insert(token.clone(), key_authorization);
        self.tokens.push(token);
    }

    fn put_alpn(&mut self, name: &str, key: Arc<CertifiedKey>) {
        self.certificate.answer_alpn(name, key);
        self.names.push(name.to_string());
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        let mut map = self.challenges.map();
        for token in &self.tokens {
            map.remove(token);
        }
        for name in &self.names {
            self.certificate.forget_alpn(name);
        }
    }
}

/// The certificate a TLS-ALPN-01 check of `name` must see (RFC 8737 §3): self-signed, for
/// `name` alone, with the SHA-256 of the key authorization in a critical acmeIdentifier
/// extension.
fn alpn_certificate(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, AcmeError> {
    let failed = |e: String| AcmeError::Order(format!("challenge certificate for {name}: {e}"));
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| failed(e.to_string()))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(|e| failed(e.to_string()))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| failed(e.to_string()))?;
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    // Not `CertifiedKey::from_der`: it parses the certificate as a peer's would be, and
    // refuses the critical acmeIdentifier extension the check exists for.
    let signing = default_provider()
        .key_provider
        .load_private_key(private)
        .map_err(|e| failed(e.to_string()))?;
    let certified = CertifiedKey::new(vec![cert.der().clone()], signing);
    Ok(Arc::new(certified))
}

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME: {0}")]
    Protocol(#[from] instant_acme::Error),
    #[error("ACME: {0}")]
    Order(String),
    #[error("ACME storage {path}: {source}")]
    Storage {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
}

fn storage(path: &Path) -> impl FnOnce(std::io::Error) -> AcmeError + '_ {
    move |source| AcmeError::Storage {
        path: path.display().to_string(),
        source,
    }
}

/// The gateway's ACME client: one per process, a background service.
pub struct Acme {
    settings: AcmeSettings,
    certificate: Arc<Certificate>,
    challenges: Arc<Challenges>,
    failures: IntCounter,
}

impl Acme {
    pub fn new(
        settings: AcmeSettings,
        certificate: Arc<Certificate>,
        challenges: Arc<Challenges>,
        metrics: &Metrics,
    ) -> Result<Acme, prometheus::Error> {
        let failures = IntCounter::with_opts(Opts::new(
            "btp_gateway_acme_failures_total",
            "ACME orders (first certificate or renewal) that failed; the current certificate stays in use.",
        ))?;
        metrics.register(Box::new(failures.clone()))?;
        Ok(Acme {
            settings,
            certificate,
            challenges,
            failures,
        })
    }

    /// The certificate kept in `settings.dir`, if it is for exactly `settings.domains`
    /// and its key matches.
    pub fn stored(settings: &AcmeSettings) -> Option<Loaded> {
        let loaded = tls::load(&settings.dir.join(CERT_FILE), &settings.dir.join(KEY_FILE)).ok()?;
        let mut names = loaded.names.clone();
        let mut wanted = settings.domains.clone();
        names.sort();
        wanted.sort();
        (names == wanted).then_some(loaded)
    }

    /// Order a certificate for `settings.domains`, keep it, and return it.
    async fn obtain(&self) -> Result<Loaded, AcmeError> {
        let s = &self.settings;
        private_dir(&s.dir).map_err(storage(&s.dir))?;
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = s.domains.iter().cloned().map(Identifier::Dns).collect();
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
        let mut answering = Answering {
            challenges: &self.challenges,
            certificate: &self.certificate,
            tokens: Vec::new(),
            names: Vec::new(),
        };
        let kind = match s.challenge {
            Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            Challenge::Http01 => ChallengeType::Http01,
        };
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(AcmeError::Order(format!("an authorization is {other:?}"))),
            }
            let Some(mut challenge) = authorization.challenge(kind.clone()) else {
                return Err(AcmeError::Order(format!(
                    "the authority offers no {kind:?} challenge"
                )));
            };
            let key_authorization = challenge.key_authorization();
            match s.challenge {
                Challenge::Http01 => {
                    answering.put(
                        challenge.token.clone(),
                        key_authorization.as_str().to_string(),
                    );
                }
                Challenge::TlsAlpn01 => {
                    let Identifier::Dns(name) = challenge.identifier().identifier else {
                        return Err(AcmeError::Order("a name that is not a DNS name".into()));
                    };
                    let certificate = alpn_certificate(name, key_authorization.digest().as_ref())?;
                    answering.put_alpn(name, certificate);
                }
            }
            challenge.set_ready().await?;
        }
        let retries = RetryPolicy::default().timeout(ORDER_TIMEOUT);
        let status = order.poll_ready(&retries).await?;
        if status != OrderStatus::Ready {
            return Err(AcmeError::Order(format!(
                "the order is {status:?}, not ready"
            )));
        }
        drop(answering);
        let key_pem = order.finalize().await?;
        let chain_pem = order.poll_certificate(&retries).await?;
        let (cert, key) = (s.dir.join(CERT_FILE), s.dir.join(KEY_FILE));
        write_private(&key, key_pem.as_bytes()).map_err(storage(&key))?;
        write_private(&cert, chain_pem.as_bytes()).map_err(storage(&cert))?;
        Ok(tls::load(&cert, &key)?)
    }

    /// The account kept in `account.json`, or a new one (then kept).
    async fn account(&self) -> Result<Account, AcmeError> {
        let s = &self.settings;
        let builder = match &s.ca_roots {
            Some(roots) => Account::builder_with_root(roots)?,
            None => Account::builder()?,
        };
        let path = s.dir.join(ACCOUNT_FILE);
        if let Ok(text) = std::fs::read(&path) {
            if let Ok(credentials) = serde_json::from_slice::<AccountCredentials>(&text) {
                return Ok(builder.from_credentials(credentials).await?);
            }
            tracing::warn!(path = %path.display(), "[ACME] unreadable account file: a new account is made");
        }
        let contact = format!("mailto:{}", s.email);
        let contacts: Vec<&str> = match s.email.is_empty() {
            true => Vec::new(),
            false => vec![contact.as_str()],
        };
        let (account, credentials) = builder
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                s.directory.clone(),
                None,
            )
            .await?;
        let text = serde_json::to_vec(&credentials)
            .map_err(|e| AcmeError::Order(format!("account credentials: {e}")))?;
        write_private(&path, &text).map_err(storage(&path))?;
        Ok(account)
    }
}

/// When to renew a certificate valid from `not_before` to `not_after` (Unix seconds):
/// two thirds into its lifetime.
pub fn renewal_due(not_before: i64, not_after: i64) -> i64 {
    not_before + (not_after - not_before).max(0) * 2 / 3
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[async_trait]
impl BackgroundService for Acme {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let names = self.settings.domains.join(", ");
        let mut retry = FIRST_RETRY;
        loop {
            let wait = match Acme::stored(&self.settings) {
                Some(loaded) if now() < renewal_due(loaded.not_before, loaded.not_after) => {
                    let due = renewal_due(loaded.not_before, loaded.not_after);
                    Duration::from_secs(due.saturating_sub(now()).max(1) as u64)
                }
                _ => match self.obtain().await {
                    Ok(loaded) => {
                        tracing::info!("[ACME] certificate obtained: {}", loaded.describe());
                        let due = renewal_due(loaded.not_before, loaded.not_after);
                        self.certificate.swap(loaded);
                        retry = FIRST_RETRY;
                        // A certificate due at once (an authority issuing very short
                        // lifetimes) is not ordered again in a loop.
                        Duration::from_secs(due.saturating_sub(now()).max(0) as u64)
                            .max(FIRST_RETRY)
                    }
                    Err(e) => {
                        self.failures.inc();
                        tracing::error!(
                            "[ACME] no certificate for {names}: {e}; the current one (if any) stays in use, next try in {}s",
                            retry.as_secs()
                        );
                        let wait = retry;
                        retry = (retry * 2).min(LAST_RETRY);
                        wait
                    }
                },
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_two_thirds_into_the_lifetime() {
        // Let's Encrypt: 90 days → day 60.
        let day = 86_400;
        assert_eq!(renewal_due(0, 90 * day), 60 * day);
        assert_eq!(renewal_due(1_000, 1_000 + 30), 1_020);
        // A certificate that ends before it starts is due at once.
        assert_eq!(renewal_due(500, 100), 500);
    }

    #[test]
    fn tokens_are_answered_only_while_their_order_runs() {
        let challenges = Challenges::default();
        let metrics = Metrics::new().unwrap_or_else(|e| panic!("{e}"));
        let certificate = Certificate::new(None, &metrics).unwrap_or_else(|e| panic!("{e}"));
        {
            let mut answering = Answering {
                challenges: &challenges,
                certificate: &certificate,
                tokens: Vec::new(),
                names: Vec::new(),
            };
            answering.put("tok".into(), "tok.thumb".into());
            assert_eq!(challenges.answer("tok").as_deref(), Some("tok.thumb"));
            assert_eq!(challenges.answer("other"), None);
        }
        assert_eq!(challenges.answer("tok"), None);
    }
}
