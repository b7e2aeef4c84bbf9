use reqwest::Method;
use serde_json::json;

use crate::support::{create, delete, update, uuid, Backend, Server};

both!(
    rest_writes_go_through_the_op_pipeline,
    validation_errors_are_422_with_every_field,
    another_users_project_is_404_everywhere,
    idempotency_key_makes_a_rest_retry_a_no_op,
);

async fn rest_writes_go_through_the_op_pipeline(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let u = s.register("rest").await;
    let t = Some(u.token.as_str());
    let id = uuid();
    let (status, p) = s
        .call(
            Method::POST,
            "/api/projects",
            t,
            Some(json!({"id": id, "name": "Villa Anfa", "city": "Casablanca",
                        "budget_centimes": 150_000_000, "status": "active",
                        "start_date": "2024-03-01", "end_date": "2024-12-31", "progress": 10})),
        )
        .await;
    assert_eq!(status, 201, "{p}");
    assert_eq!(p["id"], json!(id));
    assert_eq!(p["seq"], 1);
    assert_eq!(p["status"], "active");
    assert_eq!(p["deleted_at"], json!(null));

    let (status, p) = s
        .call(
            Method::PATCH,
            &format!("/api/projects/{id}"),
            t,
            Some(json!({"progress": 40})),
        )
        .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        (p["progress"].clone(), p["seq"].clone(), p["city"].clone()),
        (json!(40), json!(2), json!("Casablanca"))
    );

    // The same seq space as sync: a pull from 1 sees the update.
    let feed = s.pull(&u, &json!(1), None).await;
    assert_eq!(feed["changes"][0]["seq"], 2);
    assert_eq!(feed["cursor"], 2);

    let (status, _) = s
        .call(Method::DELETE, &format!("/api/projects/{id}"), t, None)
        .await;
    assert_eq!(status, 204);
    let (status, body) = s
        .call(Method::GET, &format!("/api/projects/{id}"), t, None)
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = s
        .call(Method::DELETE, &format!("/api/projects/{id}"), t, None)
        .await;
    assert_eq!(status, 404);
    let (status, body) = s
        .call(
            Method::PATCH,
            &format!("/api/projects/{id}"),
            t,
            Some(json!({"name": "back"})),
        )
        .await;
    assert_eq!(status, 409, "a delete is final: {body}");
    let feed = s.pull(&u, &json!(2), None).await;
    assert_eq!(feed["changes"][0]["kind"], "delete");
    assert_eq!(feed["count"], 0);

    // A POST without an id gets a server-made UUID.
    let (status, p) = s
        .call(
            Method::POST,
            "/api/projects",
            t,
            Some(json!({"name": "No id"})),
        )
        .await;
    assert_eq!(status, 201);
    assert!(uuid::Uuid::parse_str(p["id"].as_str().unwrap()).is_ok());
    let (_, list) = s.call(Method::GET, "/api/projects", t, None).await;
    assert_eq!(list["count"], 1);
    assert_eq!(list["projects"].as_array().unwrap().len(), 1);
}

async fn validation_errors_are_422_with_every_field(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let u = s.register("val").await;
    let t = Some(u.token.as_str());
    let (status, body) = s
        .call(
            Method::POST,
            "/api/projects",
            t,
            Some(
                json!({"name": "", "status": "lost", "progress": 150, "budget_centimes": 1.5,
                        "start_date": "01/02/2024"}),
            ),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let err = &body["error"];
    assert_eq!(err["code"], "validation_failed");
    for field in [
        "name",
        "status",
        "progress",
        "budget_centimes",
        "start_date",
    ] {
        assert!(err["fields"][field].is_string(), "missing {field}: {body}");
    }
    assert!(err["field"].is_string());

    let (status, body) = s
        .call(
            Method::POST,
            "/api/projects",
            t,
            Some(json!({"name": "Dates", "start_date": "2024-05-02", "end_date": "2024-05-01"})),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["field"], "end_date");
    let (status, body) = s
        .call(
            Method::POST,
            "/api/projects",
            t,
            Some(json!({"city": "Rabat"})),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["field"], "name");
    assert_eq!(
        s.state.store.sync_state(&u.id).await.unwrap().seq,
        0,
        "nothing written"
    );
}

async fn another_users_project_is_404_everywhere(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let a = s.register("owner").await;
    let b = s.register("intruder").await;
    let id = uuid();
    s.push(&a, "a1", vec![create(&id, "Secret")]).await;
    let path = format!("/api/projects/{id}");
    let bt = Some(b.token.as_str());
    for (method, body) in [
        (Method::GET, None),
        (Method::PATCH, Some(json!({"name": "mine"}))),
        (Method::DELETE, None),
    ] {
        let (status, resp) = s.call(method.clone(), &path, bt, body).await;
        assert_eq!(status, 404, "{method}: {resp}");
        assert_eq!(resp["error"]["code"], "not_found");
    }
    let resp = s
        .push(
            &b,
            "b1",
            vec![update(&id, json!({"name": "mine"})), delete(&id)],
        )
        .await;
    for ack in resp["acks"].as_array().unwrap() {
        assert_eq!(ack["status"], "rejected");
        assert_eq!(ack["reason"], "not_found");
    }
    let snap = s.pull(&b, &json!(0), None).await;
    assert_eq!(snap["count"], 0);
    assert!(snap["changes"].as_array().unwrap().is_empty());

    // B creating the same UUID makes B's own row; A's is untouched.
    let resp = s.push(&b, "b1", vec![create(&id, "B's own")]).await;
    assert_eq!(resp["acks"][0]["status"], "applied");
    let (_, pa) = s.call(Method::GET, &path, Some(&a.token), None).await;
    assert_eq!(pa["name"], "Secret");
    let (_, pb) = s.call(Method::GET, &path, bt, None).await;
    assert_eq!(pb["name"], "B's own");
}

async fn idempotency_key_makes_a_rest_retry_a_no_op(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let u = s.register("idem").await;
    let id = uuid();
    let post = || {
        s.http
            .post(format!("{}/api/projects", s.base))
            .bearer_auth(&u.token)
            .header("idempotency-key", "create-once")
            .json(&json!({"id": id, "name": "Once"}))
    };
    let (status, first) = s.send(post()).await;
    assert_eq!(status, 201);
    let (status, second) = s.send(post()).await;
    assert_eq!(status, 201);
    assert_eq!(first, second);
    assert_eq!(s.state.store.sync_state(&u.id).await.unwrap().seq, 1);
}
