//! The production failure (projects vanished, 6 → 0) as a test: initial sync, then 100
//! reconnects alternating cursor 0 and the client's own cursor, interleaved with
//! another device's edits, plus the reconnecting client re-sending its old ops (the
//! echo that used to bounce). The live total must always be what the edits imply and
//! the client must never be sent a delete nobody made.

use std::collections::HashSet;

use serde_json::json;

use crate::support::{create, delete, update, uuid, Backend, Replica, Server};

both!(six_projects_survive_reconnects_and_no_delete_is_invented);

async fn six_projects_survive_reconnects_and_no_delete_is_invented(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let u = s.register("six").await;
    let originals: Vec<String> = (0..6).map(|_| uuid()).collect();
    let creates: Vec<_> = originals.iter().map(|id| create(id, "Chantier")).collect();
    let first = s.push(&u, "laptop", creates.clone()).await;

    let mut laptop = Replica::default();
    laptop.sync(&s, &u, None).await;
    assert_eq!(laptop.rows.len(), 6);
    assert!(laptop.tombstones_seen.is_empty());

    let mut expected = 6usize;
    let mut user_deleted: HashSet<String> = HashSet::new();
    let mut phone_created: Vec<String> = Vec::new();
    for round in 0..100 {
        // The other device edits between reconnects.
        match round % 5 {
            0 => {
                let id = uuid();
                s.push(&u, "phone", vec![create(&id, "Nouveau")]).await;
                phone_created.push(id);
                expected += 1;
            }
            1 => {
                s.push(
                    &u,
                    "phone",
                    vec![update(&originals[round % 6], json!({"progress": round}))],
                )
                .await;
            }
            3 if !phone_created.is_empty() => {
                let id = phone_created.remove(0);
                s.push(&u, "phone", vec![delete(&id)]).await;
                user_deleted.insert(id);
                expected -= 1;
            }
            _ => {}
        }
        // Reconnect: even rounds from scratch, odd rounds from the own cursor; the
        // laptop also re-sends its original creates, as a client with a stale outbox would.
        if round % 2 == 0 {
            laptop.cursor = json!(0);
        }
        let resent = s.push(&u, "laptop", creates.clone()).await;
        assert_eq!(
            resent["acks"], first["acks"],
            "a re-sent op must answer the same"
        );
        let before = laptop.tombstones_seen.len();
        laptop.sync(&s, &u, Some(4)).await;
        for id in &laptop.tombstones_seen[before..] {
            assert!(
                user_deleted.contains(id),
                "round {round}: delete of {id} was never sent"
            );
        }
        assert_eq!(laptop.rows.len(), expected, "round {round}");
        assert_eq!(laptop.last_count as usize, expected, "round {round}");
        assert_eq!(laptop.checksum(), laptop.last_checksum, "round {round}");
        for id in &originals {
            assert!(
                laptop.rows.contains_key(id),
                "round {round}: original {id} vanished"
            );
        }
    }
    assert_eq!(s.live(&u).await, laptop.rows);
}
