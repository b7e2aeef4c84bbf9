//! The change bus: every committed batch is published once, in seq order, with its
//! origin session; REST writes get an origin too; on PostgreSQL a second process over
//! the same database sees batches committed by the first (LISTEN/NOTIFY).

use std::time::Duration;

use serde_json::json;

use std::sync::Arc;

use btp_api::ChangeBatch;
use tokio::sync::broadcast::Receiver;

use crate::support::{create, delete, test_config, uuid, Backend, Server, TempDir};

async fn next(rx: &mut Receiver<Arc<ChangeBatch>>) -> Arc<ChangeBatch> {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a batch is published")
        .expect("bus open")
}

both!(committed_batches_are_published_in_order_with_their_origin);

async fn committed_batches_are_published_in_order_with_their_origin(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let mut rx = s.state.bus.subscribe();
    let u = s.register("bus").await;
    let id = uuid();
    s.push(&u, "tab-1", vec![create(&id, "a"), create(&uuid(), "b")])
        .await;
    s.push(&u, "tab-2", vec![delete(&id)]).await;
    // Nothing changes: nothing is published.
    s.push(&u, "tab-2", vec![delete(&id)]).await;
    let req = s
        .http
        .patch(format!("{}/api/projects/{}", s.base, uuid()))
        .bearer_auth(&u.token)
        .json(&json!({"name": "x"}));
    assert_eq!(s.send(req).await.0, 404);
    let (status, _) = s
        .call(
            reqwest::Method::POST,
            "/api/projects",
            Some(&u.token),
            Some(json!({"name": "rest"})),
        )
        .await;
    assert_eq!(status, 201);

    let b1 = next(&mut rx).await;
    assert_eq!(
        (b1.from, b1.to, b1.origin_session.as_deref()),
        (0, 2, Some("tab-1"))
    );
    assert_eq!(b1.user_id, u.id);
    assert_eq!(b1.changes.len(), 2);
    let b2 = next(&mut rx).await;
    assert_eq!(
        (b2.from, b2.to, b2.origin_session.as_deref()),
        (2, 3, Some("tab-2"))
    );
    assert_eq!(b2.changes[0]["kind"], "delete");
    assert_eq!(b2.payload()["changes"][0]["id"], json!(id));
    let b3 = next(&mut rx).await;
    assert_eq!((b3.from, b3.to), (3, 4));
    assert!(b3
        .origin_session
        .as_deref()
        .is_some_and(|o| o.starts_with("rest-")));
    assert!(rx.try_recv().is_err(), "no-op pushes publish nothing");

    if backend == Backend::Postgres {
        // A second API process on the same database.
        let other = Server::on(
            test_config(&s.config.database.url, &TempDir::new().0),
            TempDir::new(),
        )
        .await;
        let mut remote = other.state.bus.subscribe();
        let big: Vec<_> = (0..300)
            .map(|_| create(&uuid(), &"n".repeat(100)))
            .collect();
        s.push(&u, "tab-1", big).await;
        let b = next(&mut remote).await;
        assert_eq!(
            (b.from, b.to, b.changes.len()),
            (4, 304, 300),
            "by reference, not truncated"
        );
        assert_eq!(b.origin_session.as_deref(), Some("tab-1"));
    }
}
