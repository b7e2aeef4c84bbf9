use btp_api::auth::token_hash;
use btp_api::store::Caller;
use reqwest::Method;
use serde_json::json;

use crate::support::{Backend, Server};

both!(
    register_login_logout_revokes_the_token,
    duplicate_email_is_a_conflict,
    logins_are_throttled_per_pair_then_per_ip_then_per_account,
    concurrent_wrong_logins_get_at_most_the_allowed_password_checks,
    registration_is_limited_per_address,
    logout_all_revokes_every_token_of_the_user_only,
    a_revoked_or_expired_token_gets_no_push_or_pull_from_the_store,
    a_fresh_worker_exports_every_labelled_counter_at_zero,
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

/// A login from `ip` (as the gateway forwards it); (status, body, Retry-After).
async fn login_from(
    s: &Server,
    email: &str,
    password: &str,
    ip: &str,
) -> (u16, serde_json::Value, Option<String>) {
    let resp = s
        .http
        .post(format!("{}/api/auth/login", s.base))
        .header("x-forwarded-for", format!("203.0.113.9, {ip}"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("login");
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default(), retry)
}

async fn logins_are_throttled_per_pair_then_per_ip_then_per_account(backend: Backend) {
    let Some(s) = Server::start_with(backend, |c| {
        c.auth.login_max_failures = 3;
        c.auth.login_max_failures_per_ip = 5;
        c.auth.login_max_failures_per_account = 7;
    })
    .await
    else {
        return;
    };
    let victim = s.register("victim").await;
    let bystander = s.register("bystander").await;

    // Per (account, IP): the fourth try from the same address is refused unchecked,
    // even with the right password...
    for _ in 0..3 {
        let (status, body, _) = login_from(&s, &victim.email, "wrong-pass", "198.51.100.1").await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("invalid_credentials"))
        );
    }
    let (status, body, retry) = login_from(&s, &victim.email, "s3cret-pass", "198.51.100.1").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
    let retry: u64 = retry.expect("Retry-After").parse().expect("seconds");
    assert!((1..=900).contains(&retry), "{retry}");
    // ...but neither the owner elsewhere nor someone else at that address is locked out.
    let (status, _, _) = login_from(&s, &victim.email, "s3cret-pass", "198.51.100.2").await;
    assert_eq!(status, 200);
    let (status, _, _) = login_from(&s, &bystander.email, "s3cret-pass", "198.51.100.1").await;
    assert_eq!(status, 200);

    // Per IP: one address guessing across accounts (3 failures there already).
    for i in 0..2 {
        let (status, _, _) = login_from(
            &s,
            &format!("nobody{i}@test.ma"),
            "wrong-pass",
            "198.51.100.1",
        )
        .await;
        assert_eq!(status, 401);
    }
    let (status, _, _) = login_from(&s, &bystander.email, "s3cret-pass", "198.51.100.1").await;
    assert_eq!(status, 429, "the address has used its 5 failures");
    let (status, _, _) = login_from(&s, &bystander.email, "s3cret-pass", "198.51.100.4").await;
    assert_eq!(status, 200);

    // Per account, across addresses (3 failures so far): 4 more from two addresses,
    // then even the owner from a fresh address waits.
    for ip in [
        "198.51.100.5",
        "198.51.100.5",
        "198.51.100.5",
        "198.51.100.6",
    ] {
        let (status, _, _) = login_from(&s, &victim.email, "wrong-pass", ip).await;
        assert_eq!(status, 401, "{ip}");
    }
    let (status, body, _) = login_from(&s, &victim.email, "s3cret-pass", "198.51.100.7").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );

    let throttled = |limit: &str| s.state.metrics.throttled.with_label_values(&[limit]).get();
    assert_eq!(
        [
            throttled("login_pair"),
            throttled("login_ip"),
            throttled("login_account")
        ],
        [1, 1, 1]
    );
}

async fn concurrent_wrong_logins_get_at_most_the_allowed_password_checks(backend: Backend) {
    let Some(s) = Server::start_with(backend, |c| c.auth.login_max_failures = 4).await else {
        return;
    };
    let user = s.register("target").await;
    let checks_before = s.state.metrics.hashes.with_label_values(&["verify"]).get();
    let attempts = (0..40).map(|_| login_from(&s, &user.email, "wrong-pass", "198.51.100.20"));
    let results = futures::future::join_all(attempts).await;
    let mut statuses: Vec<u16> = results.iter().map(|(status, _, _)| *status).collect();
    statuses.sort_unstable();
    let unauthorized = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((unauthorized, limited), (4, 36), "{statuses:?}");
    let checks = s.state.metrics.hashes.with_label_values(&["verify"]).get() - checks_before;
    assert_eq!(checks, 4, "password checks");
}

async fn registration_is_limited_per_address(backend: Backend) {
    let Some(s) = Server::start_with(backend, |c| c.auth.register_max_per_ip = 3).await else {
        return;
    };
    let register = |email: String, ip: &'static str| {
        let req = s
            .http
            .post(format!("{}/api/auth/register", s.base))
            .header("x-forwarded-for", ip)
            .json(&json!({"email": email, "password": "s3cret-pass", "name": "n"}));
        s.send(req)
    };
    // An IPv6 client is counted per /64: these three addresses are one subscriber.
    for (i, ip) in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"]
        .into_iter()
        .enumerate()
    {
        let (status, body) = register(format!("r{i}@test.ma"), ip).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = register("r4@test.ma".into(), "2001:db8:1:2::4").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
    let (status, _) = register("r5@test.ma".into(), "2001:db8:1:3::1").await;
    assert_eq!(status, 201);
    // A request refused for its input is not counted.
    let (status, _) = register("not-an-email".into(), "198.51.100.30").await;
    assert_eq!(status, 422);
    assert_eq!(
        s.state
            .metrics
            .throttled
            .with_label_values(&["register_ip"])
            .get(),
        1
    );
}

async fn logout_all_revokes_every_token_of_the_user_only(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let user = s.register("many").await;
    let other = s.register("other").await;
    let (status, login) = s
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"email": user.email, "password": "s3cret-pass"})),
        )
        .await;
    assert_eq!(status, 200);
    let second = login["token"].as_str().unwrap().to_string();
    let (status, _) = s
        .call(Method::POST, "/api/auth/logout-all", Some(&second), None)
        .await;
    assert_eq!(status, 204);
    for token in [&user.token, &second] {
        let (status, _) = s
            .call(Method::GET, "/api/projects", Some(token), None)
            .await;
        assert_eq!(status, 401);
    }
    let (status, _) = s
        .call(Method::GET, "/api/projects", Some(&other.token), None)
        .await;
    assert_eq!(status, 200);
    let (status, _) = s
        .call(Method::POST, "/api/auth/logout-all", Some(&second), None)
        .await;
    assert_eq!(status, 401);
}

/// The store checks the token in the statement that reads or writes the user's state:
/// a call that passed the HTTP or socket check before the logout committed is refused.
async fn a_revoked_or_expired_token_gets_no_push_or_pull_from_the_store(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let user = s.register("late").await;
    let caller = Caller {
        user_id: user.id.clone(),
        token_hash: token_hash(&user.token),
    };
    let push =
        json!({"session_id": "s", "ops": [crate::support::create(&crate::support::uuid(), "x")]});
    let pull = json!({"cursor": 0});
    assert!(s.state.sync.pull(&caller, &pull, None).await.is_ok());
    s.state.auth.logout(&caller).await.unwrap();
    let refused = s.state.sync.push(&caller, &push, None).await.unwrap_err();
    assert_eq!(refused.code, "unauthorized");
    let refused = s.state.sync.pull(&caller, &pull, None).await.unwrap_err();
    assert_eq!(refused.code, "unauthorized");
    assert_eq!(s.state.store.sync_state(&user.id).await.unwrap().seq, 0);

    // Expired in the database, though never logged out.
    let user = s.register("expired").await;
    let caller = Caller {
        user_id: user.id.clone(),
        token_hash: token_hash(&user.token),
    };
    s.expire_token(&user.token, 0).await;
    let refused = s.state.sync.push(&caller, &push, None).await.unwrap_err();
    assert_eq!(refused.code, "unauthorized");
    assert_eq!(s.state.store.sync_state(&user.id).await.unwrap().seq, 0);
}

async fn a_fresh_worker_exports_every_labelled_counter_at_zero(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let resp = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .expect("metrics");
    let text = resp.text().await.expect("body");
    for series in [
        r#"btp_api_sync_ops_total{kind="create",status="applied",worker="0"} 0"#,
        r#"btp_api_sync_ops_total{kind="delete",status="conflict",worker="0"} 0"#,
        r#"btp_api_sync_ops_total{kind="invalid",status="rejected",worker="0"} 0"#,
        r#"btp_api_errors_total{code="rate_limited",worker="0"} 0"#,
        r#"btp_api_password_hashes_total{op="verify",worker="0"} 0"#,
        r#"btp_api_throttled_total{limit="login_pair",worker="0"} 0"#,
        r#"btp_api_token_checks_total{result="refused",worker="0"} 0"#,
    ] {
        assert!(
            text.lines().any(|l| l == series),
            "{series} missing from:\n{text}"
        );
    }
    let ops = text
        .lines()
        .filter(|l| l.starts_with("btp_api_sync_ops_total{"))
        .count();
    assert_eq!(ops, 16, "every kind × status");
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
