use reqwest::Method;
use serde_json::{json, Value};

use crate::support::{create, uuid, Backend, Server};

both!(
    malformed_json_is_400_and_writes_nothing,
    wrong_types_are_422_and_write_nothing,
    huge_strings_and_bodies_are_refused,
    a_1001_op_batch_is_413_and_applies_nothing,
    invalid_uuids_are_refused,
    unknown_routes_and_methods_answer_json_errors,
);

async fn assert_nothing_written(s: &Server, user_id: &str) {
    let state = s.state.store.sync_state(user_id).await.unwrap();
    assert_eq!(
        (state.seq, state.live_count),
        (0, 0),
        "something was written"
    );
}

async fn malformed_json_is_400_and_writes_nothing(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let u = s.register("bad").await;
    for path in [
        "/api/sync/push",
        "/api/sync/pull",
        "/api/projects",
        "/api/auth/login",
    ] {
        let req = s
            .http
            .post(format!("{}{}", s.base, path))
            .bearer_auth(&u.token)
            .header("content-type", "application/json")
            .body(r#"{"ops": [{"op_id": "#);
        let (status, body) = s.send(req).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_json");
        assert!(body["error"]["message"].is_string());
    }
    assert_nothing_written(&s, &u.id).await;
}

async fn wrong_types_are_422_and_write_nothing(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let u = s.register("types").await;
    let t = Some(u.token.as_str());
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/api/sync/push",
            json!({"session_id": "s", "ops": "all"}),
            "ops",
        ),
        (
            "/api/sync/push",
            json!({"session_id": 5, "ops": []}),
            "session_id",
        ),
        ("/api/sync/push", json!({"ops": []}), "session_id"),
        ("/api/sync/push", json!([1, 2]), "body"),
        ("/api/sync/pull", json!({"cursor": -1}), "cursor"),
        ("/api/sync/pull", json!({"cursor": "12"}), "cursor"),
        ("/api/sync/pull", json!({}), "cursor"),
        ("/api/sync/pull", json!({"cursor": 0, "limit": 0}), "limit"),
        (
            "/api/sync/pull",
            json!({"cursor": 0, "limit": "ten"}),
            "limit",
        ),
        ("/api/projects", json!({"name": 42}), "name"),
        ("/api/projects", json!("Villa"), "body"),
        (
            "/api/auth/register",
            json!({"email": "a@b.ma", "password": 12345678, "name": "x"}),
            "password",
        ),
    ];
    for (path, body, field) in cases {
        let (status, resp) = s.call(Method::POST, path, t, Some(body.clone())).await;
        assert_eq!(status, 422, "{path} {body}: {resp}");
        assert_eq!(resp["error"]["code"], "validation_failed");
        assert_eq!(resp["error"]["field"], field, "{path} {body}: {resp}");
    }
    assert_nothing_written(&s, &u.id).await;
}

async fn huge_strings_and_bodies_are_refused(backend: Backend) {
    let Some(s) = Server::start_with(backend, |c| c.gateway.max_body_bytes = 256 * 1024).await
    else {
        return;
    };
    let u = s.register("huge").await;
    let long = "x".repeat(100_000);
    let resp = s
        .push(
            &u,
            "s",
            vec![json!({"op_id": uuid(), "kind": "create", "id": uuid(), "data": {"name": long}})],
        )
        .await;
    assert_eq!(resp["acks"][0]["status"], "rejected");
    assert_eq!(resp["acks"][0]["field"], "name");
    let (status, body) = s
        .call(
            Method::POST,
            "/api/projects",
            Some(&u.token),
            Some(json!({"name": "ok", "notes": long})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = s
        .call(
            Method::POST,
            "/api/sync/push",
            Some(&u.token),
            Some(json!({"session_id": long, "ops": []})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let big = "y".repeat(300 * 1024);
    let (status, body) = s
        .call(
            Method::POST,
            "/api/projects",
            Some(&u.token),
            Some(json!({"name": "ok", "notes": big})),
        )
        .await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert_nothing_written(&s, &u.id).await;
}

async fn a_1001_op_batch_is_413_and_applies_nothing(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let u = s.register("batch").await;
    let ops: Vec<Value> = (0..1001).map(|_| create(&uuid(), "p")).collect();
    let (status, body) = s.push_raw(&u, "s", ops.clone()).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "batch_too_large");
    assert_nothing_written(&s, &u.id).await;
    // 1,000 is fine.
    let resp = s.push(&u, "s", ops[..1000].to_vec()).await;
    assert_eq!(resp["cursor"], 1000);
    assert_eq!(s.live(&u).await.len(), 1000);
}

async fn invalid_uuids_are_refused(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let u = s.register("uuid").await;
    let t = Some(u.token.as_str());
    let (status, body) = s
        .call(Method::GET, "/api/projects/not-a-uuid", t, None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    let (status, _) = s
        .call(
            Method::PATCH,
            "/api/projects/1234",
            t,
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, body) = s
        .call(
            Method::POST,
            "/api/projects",
            t,
            Some(json!({"id": "1234", "name": "x"})),
        )
        .await;
    assert_eq!((status, body["error"]["field"].clone()), (422, json!("id")));
    let resp = s
        .push(
            &u,
            "s",
            vec![json!({"op_id": "x", "kind": "create", "id": "1234", "data": {"name": "x"}})],
        )
        .await;
    assert_eq!(resp["acks"][0]["reason"], "invalid_id");
    assert_nothing_written(&s, &u.id).await;
}

async fn unknown_routes_and_methods_answer_json_errors(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let (status, body) = s.call(Method::GET, "/api/nope", None, None).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    let (status, body) = s.call(Method::PUT, "/api/sync/push", None, None).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (405, json!("method_not_allowed"))
    );
    let (status, body) = s.call(Method::GET, "/api/health", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"status": "ok", "worker": 0, "db": "ok"}));
    let text = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("btp_api_errors_total"), "{text}");
    assert!(text.contains("btp_api_db_pool_connections"), "{text}");
}
