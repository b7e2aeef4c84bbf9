//! Accounts: registration, login with throttling, bearer tokens, logout and
//! logout-all.
//!
//! Passwords are hashed with argon2id. A token is 32 random bytes (256 bits) shown to
//! the client once; only its sha256 is stored, with an expiry (`auth.token_ttl_hours`),
//! and logout deletes it, so revocation is immediate (the reason for opaque tokens over
//! JWTs) and reaches open sockets too: the store tells every worker, whose realtime
//! layer closes the sockets opened with it, and every sync read or write checks the
//! token in the statement that touches the user's state ([`Caller`]).
//!
//! What a client can make the server spend here is bounded:
//! - argon2 runs behind a semaphore (`auth.max_concurrent_hashes`): each hash holds
//!   19 MiB, and 120 logins at once had peaked a worker at 1.09 GB;
//! - a login is charged, before its password is checked, to three counters at once
//!   (store `take_slots`): its (account, IP) pair at `login_max_failures`, its IP at
//!   `login_max_failures_per_ip` and its account at `login_max_failures_per_account`.
//!   A login past any of them answers `rate_limited` without a check, however many
//!   arrive together; a right password gives its attempt back. So an office behind one
//!   address is not locked out by one person's typos, and the owner elsewhere only by
//!   a distributed attack on the account;
//! - registration is charged to its IP (`register_max_per_ip` per hour).
//!
//! IPv6 clients are counted per /64, the block one subscriber gets.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::http::StatusCode;
use base64::Engine as _;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::project::{format_millis, FieldError};
use crate::store::{Bearer, Caller, Slot, Store, UserRecord};

/// The window of `auth.register_max_per_ip`.
const REGISTER_WINDOW_MS: i64 = 3_600_000;

/// argon2id cost. The default is the argon2 crate's recommendation (19 MiB, 2 passes);
/// [`PasswordParams::fast_insecure`] exists for test suites, which hash hundreds of
/// passwords on a 2-core machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for PasswordParams {
    fn default() -> Self {
        PasswordParams {
            memory_kib: Params::DEFAULT_M_COST,
            iterations: Params::DEFAULT_T_COST,
            parallelism: Params::DEFAULT_P_COST,
        }
    }
}

impl PasswordParams {
    /// Minimal cost: tests only, never a deployment.
    pub fn fast_insecure() -> PasswordParams {
        PasswordParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    fn argon2(self) -> Result<Argon2<'static>, argon2::Error> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// An account as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    pub created_at: String,
}

impl From<&UserRecord> for User {
    fn from(r: &UserRecord) -> User {
        User {
            id: r.id.clone(),
            email: r.email.clone(),
            name: r.name.clone(),
            created_at: format_millis(r.created_at),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Session {
    pub token: String,
    pub user: User,
}

pub struct AuthService {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    params: PasswordParams,
    config: btp_config::Auth,
    /// Verified against when the email is unknown, so both failures cost the same time.
    dummy_hash: String,
    /// One permit per argon2 computation allowed at once.
    hashes: tokio::sync::Semaphore,
}

/// The counters a login is charged to, in the order of [`AuthService::login_slots`].
const LOGIN_LIMITS: [&str; 3] = ["login_pair", "login_ip", "login_account"];

pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "btp_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn hash_password(params: PasswordParams, password: &str) -> Result<String, ApiError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let fail = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "password hashing failed");
        ApiError::internal()
    };
    let salt = SaltString::encode_b64(&salt).map_err(|e| fail(&e))?;
    let argon2 = params.argon2().map_err(|e| fail(&e))?;
    argon2
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| fail(&e))
}

fn verify_password(hash: &str, password: &str) -> bool {
    // The parameters are read from the stored hash, so raising the cost later keeps old
    // hashes verifiable.
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "blocking task failed");
        ApiError::internal()
    })
}

/// The address a client is counted under: an IPv4 address (or the IPv4 inside an
/// IPv4-mapped IPv6 one) as is, an IPv6 address as its /64, anything else as given.
pub fn throttle_ip(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Ok(addr) => addr.to_string(),
        Err(_) => ip.to_string(),
    }
}

pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Registration input rules; every failing field is reported.
pub fn validate_registration(email: &str, password: &str, name: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let email = normalize_email(email);
    let valid_email = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && matches!(email.split_once('@'), Some((local, domain))
            if !local.is_empty() && domain.contains('.') && !domain.contains('@')
                && !domain.starts_with('.') && !domain.ends_with('.'));
    if !valid_email {
        errors.push(FieldError::new("email", "must be a valid email address"));
    }
    let plen = password.chars().count();
    if !(8..=256).contains(&plen) {
        errors.push(FieldError::new("password", "must be 8 to 256 characters"));
    }
    let nlen = name.trim().chars().count();
    if nlen == 0 || name.chars().count() > 100 {
        errors.push(FieldError::new("name", "must be 1 to 100 characters"));
    }
    errors
}

impl AuthService {
    pub fn new(
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        params: PasswordParams,
        config: btp_config::Auth,
    ) -> Result<AuthService, ApiError> {
        let dummy_hash = hash_password(params, "not a password anyone has")?;
        Ok(AuthService {
            store,
            metrics,
            params,
            hashes: tokio::sync::Semaphore::new(config.hash_permits()),
            config,
            dummy_hash,
        })
    }

    /// Runs one argon2 computation when a permit is free (`auth.max_concurrent_hashes`).
    async fn hash<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = match self.hashes.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                self.metrics.hash_waits.inc();
                self.hashes
                    .acquire()
                    .await
                    .map_err(|_| ApiError::internal())?
            }
        };
        self.metrics.hashes.with_label_values(&[op]).inc();
        let out = blocking(f).await;
        drop(permit);
        out
    }

    async fn issue(&self, user: &UserRecord) -> Result<Session, ApiError> {
        let token = new_token();
        let now = now_millis();
        let ttl = i64::from(self.config.token_ttl_hours) * 3_600_000;
        self.store
            .insert_token(&token_hash(&token), &user.id, now, now + ttl)
            .await?;
        Ok(Session {
            token,
            user: User::from(user),
        })
    }

    /// Charges one attempt to every slot, or answers `rate_limited` (counted under
    /// `limits[i]` for the slot that was full) with the wait until that slot reopens.
    async fn charge(
        &self,
        slots: &[Slot],
        limits: &[&'static str],
        now: i64,
        ip: &str,
        message: &str,
    ) -> Result<(), ApiError> {
        match self.store.take_slots(slots, now).await? {
            Ok(()) => Ok(()),
            Err(refused) => {
                let limit = limits.get(refused.index).copied().unwrap_or("unknown");
                self.metrics.throttled.with_label_values(&[limit]).inc();
                if limit == "register_ip" {
                    tracing::warn!(ip = %ip, limit, "[AUTH] REGISTER_THROTTLED");
                } else {
                    tracing::warn!(ip = %ip, limit, "[AUTH] LOGIN_THROTTLED");
                }
                let wait_ms = refused.until.saturating_sub(now).max(0);
                let wait = u64::try_from(wait_ms).unwrap_or(0).div_ceil(1000);
                Err(ApiError::rate_limited(message, wait))
            }
        }
    }

    pub async fn register(
        &self,
        email: &str,
        password: &str,
        name: &str,
        ip: &str,
    ) -> Result<Session, ApiError> {
        let errors = validate_registration(email, password, name);
        if !errors.is_empty() {
            return Err(ApiError::validation(&errors));
        }
        let ip = throttle_ip(ip);
        let slot = Slot {
            key: format!("register-ip:{ip}"),
            limit: self.config.register_max_per_ip,
            window_ms: REGISTER_WINDOW_MS,
        };
        self.charge(
            &[slot],
            &["register_ip"],
            now_millis(),
            &ip,
            "too many accounts registered from this address; try again later",
        )
        .await?;
        let params = self.params;
        let owned = password.to_string();
        let password_hash = self
            .hash("hash", move || hash_password(params, &owned))
            .await??;
        let user = UserRecord {
            id: uuid::Uuid::new_v4().to_string(),
            email: normalize_email(email),
            name: name.trim().to_string(),
            password_hash,
            created_at: now_millis(),
        };
        if !self.store.insert_user(&user).await? {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "an account with this email already exists",
            )
            .with_field("email"));
        }
        tracing::info!(user_id = %user.id, "[AUTH] REGISTER");
        self.issue(&user).await
    }

    /// The counters a login for `email` from `ip` is charged to, as [`LOGIN_LIMITS`]
    /// names them.
    fn login_slots(&self, email: &str, ip: &str) -> [Slot; 3] {
        let window_ms = i64::try_from(self.config.login_window_secs)
            .unwrap_or(i64::MAX / 2_000)
            .saturating_mul(1000);
        [
            Slot {
                key: format!("login:{ip}|{email}"),
                limit: self.config.login_max_failures,
                window_ms,
            },
            Slot {
                key: format!("login-ip:{ip}"),
                limit: self.config.login_max_failures_per_ip,
                window_ms,
            },
            Slot {
                key: format!("login-account:{email}"),
                limit: self.config.login_max_failures_per_account,
                window_ms,
            },
        ]
    }

    pub async fn login(&self, email: &str, password: &str, ip: &str) -> Result<Session, ApiError> {
        let email = normalize_email(email);
        let ip = throttle_ip(ip);
        let slots = self.login_slots(&email, &ip);
        self.charge(
            &slots,
            &LOGIN_LIMITS,
            now_millis(),
            &ip,
            "too many failed logins; try again later",
        )
        .await?;
        let user = self.store.user_by_email(&email).await?;
        let hash = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| self.dummy_hash.clone());
        let owned = password.to_string();
        let ok = self
            .hash("verify", move || verify_password(&hash, &owned))
            .await?;
        match user {
            Some(user) if ok => {
                // A right password gives its attempt back, and clears its own pair's
                // count (the owner's typos), never the IP's or the account's.
                let [pair, per_ip, per_account] = &slots;
                self.store
                    .release_slots(
                        &[per_ip.key.as_str(), per_account.key.as_str()],
                        &[pair.key.as_str()],
                        now_millis(),
                    )
                    .await?;
                tracing::info!(user_id = %user.id, "[AUTH] LOGIN");
                self.issue(&user).await
            }
            _ => {
                tracing::warn!(ip = %ip, "[AUTH] LOGIN_FAILED");
                Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_credentials",
                    "wrong email or password",
                ))
            }
        }
    }

    /// The live token's user and expiry; `None` for unknown, forged, revoked or expired
    /// tokens.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Bearer>, ApiError> {
        let bearer = self.store.bearer(&token_hash(token), now_millis()).await?;
        let result = if bearer.is_some() { "live" } else { "refused" };
        self.metrics.token_checks.with_label_values(&[result]).inc();
        Ok(bearer)
    }

    /// Revokes `caller`'s token: requests and sockets using it are refused from now on.
    pub async fn logout(&self, caller: &Caller) -> Result<(), ApiError> {
        self.store
            .revoke(&caller.user_id, Some(&caller.token_hash))
            .await?;
        Ok(())
    }

    /// Revokes every token of `caller`'s user (every device signs in again). Returns
    /// how many were revoked.
    pub async fn logout_all(&self, caller: &Caller) -> Result<u64, ApiError> {
        Ok(self.store.revoke(&caller.user_id, None).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_stored_hashed() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert!(a.len() >= 4 + 43, "256 bits in base64url is 43 chars");
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), a);
    }

    #[test]
    fn password_hash_is_argon2id_and_verifies() {
        let h = hash_password(PasswordParams::fast_insecure(), "correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "wrong horse"));
        assert!(!verify_password("garbage", "x"));
    }

    #[test]
    fn clients_are_counted_per_ipv4_address_or_ipv6_64() {
        assert_eq!(throttle_ip("127.0.0.2"), "127.0.0.2");
        assert_eq!(throttle_ip("::ffff:10.1.2.3"), "10.1.2.3");
        assert_eq!(
            throttle_ip("2001:db8:aa:bb:1:2:3:4"),
            throttle_ip("2001:db8:aa:bb:ffff::9")
        );
        assert_eq!(throttle_ip("2001:db8:aa:bb:1:2:3:4"), "2001:db8:aa:bb::/64");
        assert_ne!(
            throttle_ip("2001:db8:aa:bb::1"),
            throttle_ip("2001:db8:aa:bc::1")
        );
        assert_eq!(throttle_ip("unknown"), "unknown");
    }

    #[test]
    fn registration_rules() {
        assert!(validate_registration("a@b.ma", "12345678", "Amal").is_empty());
        let fields: Vec<_> = validate_registration("nope", "short", " ")
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["email", "password", "name"]);
    }
}
