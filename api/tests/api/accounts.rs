use reqwest::Method;
use serde_json::json;

use crate::support::{Backend, Server};

both!(
    register_login_logout_revokes_the_token,
    duplicate_email_is_a_conflict,
    failed_logins_are_throttled_per_account_and_per_ip,
    expired_and_forged_tokens_are_unauthorized,
);

async fn register_login_logout_revokes_the_token(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let user = s.register("amal").await;
    let (status, me) = s
        .call(Method::GET, "/api/auth/me", Some(&user.token), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(me["user"]["email"], json!(user.email));
    assert!(me["user"].get("password_hash").is_none());

    let (status, login) = s
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"email": user.email.to_uppercase(), "password": "s3cret-pass"})),
        )
        .await;
    assert_eq!(status, 200, "{login}");
    let second = login["token"].as_str().unwrap().to_string();
    assert_ne!(second, user.token);
    assert!(second.len() >= 47);

    let (status, _) = s
        .call(Method::POST, "/api/auth/logout", Some(&second), None)
        .await;
    assert_eq!(status, 204);
    let (status, body) = s
        .call(Method::GET, "/api/projects", Some(&second), None)
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    // The other token is untouched.
    let (status, _) = s
        .call(Method::GET, "/api/projects", Some(&user.token), None)
        .await;
    assert_eq!(status, 200);
}

async fn duplicate_email_is_a_conflict(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let user = s.register("dup").await;
    let (status, body) = s
        .call(
            Method::POST,
            "/api/auth/register",
            None,
            Some(json!({"email": user.email, "password": "another-pass", "name": "x"})),
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(body["error"]["code"], "conflict");
    assert_eq!(body["error"]["field"], "email");
}

async fn failed_logins_are_throttled_per_account_and_per_ip(backend: Backend) {
    let Some(s) = Server::start_with(backend, |c| c.auth.login_max_failures = 3).await else {
        return;
    };
    let user = s.register("victim").await;
    let login = |email: String, password: &'static str, ip: &'static str| {
        let req = s
            .http
            .post(format!("{}/api/auth/login", s.base))
            .header("x-forwarded-for", format!("203.0.113.9, {ip}"))
            .json(&json!({"email": email, "password": password}));
        s.send(req)
    };
    for _ in 0..3 {
        let (status, body) = login(user.email.clone(), "wrong-pass", "198.51.100.1").await;
        assert_eq!(status, 401);
        assert_eq!(body["error"]["code"], "invalid_credentials");
    }
    // Per account: even the right password from a fresh IP is refused now.
    let (status, body) = login(user.email.clone(), "s3cret-pass", "198.51.100.2").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");

    // Per IP: one address guessing across accounts is stopped too.
    for i in 0..3 {
        let (status, _) = login(format!("nobody{i}@test.ma"), "wrong-pass", "198.51.100.3").await;
        assert_eq!(status, 401);
    }
    let other = s.register("bystander").await;
    let (status, _) = login(other.email.clone(), "s3cret-pass", "198.51.100.3").await;
    assert_eq!(status, 429);
    let (status, _) = login(other.email.clone(), "s3cret-pass", "198.51.100.4").await;
    assert_eq!(status, 200);
}

async fn expired_and_forged_tokens_are_unauthorized(backend: Backend) {
    let Some(s) = Server::start_with(backend, |c| c.auth.token_ttl_hours = 0).await else {
        return;
    };
    let user = s.register("brief").await;
    for token in [
        user.token.as_str(),
        "btp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "",
    ] {
        let (status, body) = s
            .call(
                Method::POST,
                "/api/sync/push",
                Some(token),
                Some(json!({"session_id": "s", "ops": [crate::support::create(&crate::support::uuid(), "x")]})),
            )
            .await;
        assert_eq!(status, 401, "{token}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let (status, _) = s
        .send(
            s.http
                .get(format!("{}/api/projects", s.base))
                .header("authorization", "Basic abc"),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(s.state.store.sync_state(&user.id).await.unwrap().seq, 0);
}
