//! Accounts: registration, login with throttling, bearer tokens, logout.
//!
//! Passwords are hashed with argon2id. A token is 32 random bytes (256 bits) shown to
//! the client once; only its sha256 is stored, with an expiry (`auth.token_ttl_hours`),
//! and logout deletes it, so revocation is immediate (the reason for opaque tokens over
//! JWTs). Failed logins are counted per account and per client IP in the database, so
//! every API process sees the same counts; past `auth.login_max_failures` within
//! `auth.login_window_secs` a login answers `rate_limited` before any password check.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::http::StatusCode;
use base64::Engine as _;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::project::{format_millis, FieldError};
use crate::store::{Store, UserRecord};

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
    params: PasswordParams,
    config: btp_config::Auth,
    /// Verified against when the email is unknown, so both failures cost the same time.
    dummy_hash: String,
}

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
        params: PasswordParams,
        config: btp_config::Auth,
    ) -> Result<AuthService, ApiError> {
        let dummy_hash = hash_password(params, "not a password anyone has")?;
        Ok(AuthService {
            store,
            params,
            config,
            dummy_hash,
        })
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

    pub async fn register(
        &self,
        email: &str,
        password: &str,
        name: &str,
    ) -> Result<Session, ApiError> {
        let errors = validate_registration(email, password, name);
        if !errors.is_empty() {
            return Err(ApiError::validation(&errors));
        }
        let params = self.params;
        let owned = password.to_string();
        let password_hash = blocking(move || hash_password(params, &owned)).await??;
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

    pub async fn login(&self, email: &str, password: &str, ip: &str) -> Result<Session, ApiError> {
        let email = normalize_email(email);
        let now = now_millis();
        let since =
            now - i64::try_from(self.config.login_window_secs).unwrap_or(i64::MAX / 2) * 1000;
        let account_key = format!("account:{email}");
        let ip_key = format!("ip:{ip}");
        let max = i64::from(self.config.login_max_failures);
        let account_failures = self.store.failures_since(&account_key, since).await?;
        let ip_failures = self.store.failures_since(&ip_key, since).await?;
        if account_failures >= max || ip_failures >= max {
            tracing::warn!(ip = %ip, "[AUTH] LOGIN_THROTTLED");
            let mut err = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many failed logins; try again later",
            );
            err.retry_after = Some(self.config.login_window_secs);
            return Err(err);
        }
        let user = self.store.user_by_email(&email).await?;
        let hash = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| self.dummy_hash.clone());
        let owned = password.to_string();
        let ok = blocking(move || verify_password(&hash, &owned)).await?;
        match user {
            Some(user) if ok => {
                self.store.clear_failures(&account_key).await?;
                tracing::info!(user_id = %user.id, "[AUTH] LOGIN");
                self.issue(&user).await
            }
            _ => {
                self.store
                    .record_failures(&[account_key.as_str(), ip_key.as_str()], now)
                    .await?;
                tracing::warn!(ip = %ip, "[AUTH] LOGIN_FAILED");
                Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_credentials",
                    "wrong email or password",
                ))
            }
        }
    }

    /// The user a bearer token belongs to; `None` for unknown, forged or expired tokens.
    pub async fn authenticate(&self, token: &str) -> Result<Option<UserRecord>, ApiError> {
        Ok(self
            .store
            .user_by_token(&token_hash(token), now_millis())
            .await?)
    }

    pub async fn logout(&self, token: &str) -> Result<(), ApiError> {
        self.store.delete_token(&token_hash(token)).await?;
        Ok(())
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
    fn registration_rules() {
        assert!(validate_registration("a@b.ma", "12345678", "Amal").is_empty());
        let fields: Vec<_> = validate_registration("nope", "short", " ")
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["email", "password", "name"]);
    }
}
