use serde_json::{json, Value};
use sqlx::Connection;

use crate::support::{checksum, create, delete, update, uuid, Backend, Replica, Server};

both!(
    a_resent_op_returns_the_same_ack_and_changes_nothing,
    a_delete_is_final,
    snapshot_pages_never_carry_tombstones_and_stay_consistent_under_writes,
    change_feed_is_paginated_in_seq_order,
    unknown_cursor_gets_a_reset_snapshot,
    retention_purge_resets_only_cursors_older_than_the_horizon,
    invalid_ops_are_rejected_while_valid_ops_apply,
    count_and_checksum_describe_the_live_set,
    field_values_come_back_exactly_as_written,
    a_stale_edit_is_a_conflict_and_the_newer_value_stays,
    a_stale_delete_is_refused_and_a_current_one_applies,
    a_row_written_before_field_seqs_reports_stale_edits_conservatively,
    history_lists_who_changed_what_newest_first,
);

async fn a_resent_op_returns_the_same_ack_and_changes_nothing(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let u = s.register("idem").await;
    let id = uuid();
    let ops = vec![
        create(&id, "A"),
        update(&id, json!({"progress": 5})),
        delete(&uuid()),
    ];
    let first = s.push(&u, "s1", ops.clone()).await;
    let state = s.state.store.sync_state(&u.id).await.unwrap();
    // Re-sent twice, also from another session, also mixed into a new batch.
    let again = s.push(&u, "s1", ops.clone()).await;
    let other = s.push(&u, "s2", ops.clone()).await;
    assert_eq!(first["acks"], again["acks"]);
    assert_eq!(first["acks"], other["acks"]);
    assert_eq!(s.state.store.sync_state(&u.id).await.unwrap(), state);
    let mut mixed = ops.clone();
    mixed.push(update(&id, json!({"progress": 6})));
    let resp = s.push(&u, "s1", mixed).await;
    assert_eq!(
        resp["acks"].as_array().unwrap()[..3],
        first["acks"].as_array().unwrap()[..]
    );
    assert_eq!(resp["acks"][3]["status"], "applied");
    assert_eq!(
        s.state.store.sync_state(&u.id).await.unwrap().seq,
        state.seq + 1
    );
}

async fn a_delete_is_final(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let u = s.register("final").await;
    let id = uuid();
    s.push(&u, "a", vec![create(&id, "Doomed")]).await;
    let resp = s.push(&u, "a", vec![delete(&id)]).await;
    assert_eq!(resp["acks"][0]["status"], "applied");
    // Another device that did not see the delete yet edits and re-creates it.
    let resp = s
        .push(
            &u,
            "b",
            vec![
                update(&id, json!({"name": "Still here?"})),
                create(&id, "Back"),
            ],
        )
        .await;
    for ack in resp["acks"].as_array().unwrap() {
        assert_eq!(ack["status"], "conflict", "{resp}");
        assert_eq!(ack["reason"], "deleted");
    }
    // Deleting again is accepted but changes nothing.
    let before = s.state.store.sync_state(&u.id).await.unwrap();
    let resp = s.push(&u, "b", vec![delete(&id)]).await;
    assert_eq!(resp["acks"][0]["status"], "applied");
    assert_eq!(s.state.store.sync_state(&u.id).await.unwrap(), before);
    assert!(s.live(&u).await.is_empty());
}

fn kinds(resp: &Value) -> Vec<String> {
    resp["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap().to_string())
        .collect()
}

async fn snapshot_pages_never_carry_tombstones_and_stay_consistent_under_writes(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let u = s.register("pages").await;
    let ids: Vec<String> = (0..10).map(|_| uuid()).collect();
    s.push(&u, "w", ids.iter().map(|id| create(id, "p")).collect())
        .await;
    // An old tombstone that must never appear in a snapshot.
    let gone = uuid();
    s.push(&u, "w", vec![create(&gone, "gone")]).await;
    s.push(&u, "w", vec![delete(&gone)]).await;

    let mut r = Replica::default();
    let page = s.pull(&u, &json!(0), Some(3)).await;
    assert_eq!(page["reset"], true);
    assert_eq!(kinds(&page), ["upsert"; 3]);
    assert!(
        page["cursor"].is_string(),
        "a snapshot continues with a snapshot cursor"
    );
    assert!(r.apply(&page));

    // Meanwhile another device edits rows already sent and rows not sent yet.
    let newcomer = uuid();
    s.push(
        &u,
        "other",
        vec![
            update(&ids[0], json!({"progress": 1})),
            update(&ids[8], json!({"progress": 2})),
            delete(&ids[1]),
            delete(&ids[9]),
            create(&newcomer, "new"),
        ],
    )
    .await;

    let mut snapshot_pages = 1;
    loop {
        let in_snapshot = r.cursor.is_string();
        let page = s.pull(&u, &r.cursor.clone(), Some(3)).await;
        if in_snapshot {
            snapshot_pages += 1;
            assert!(
                kinds(&page).iter().all(|k| k == "upsert"),
                "tombstone in snapshot: {page}"
            );
            assert_eq!(page["reset"], false);
        }
        if !r.apply(&page) {
            break;
        }
    }
    assert!(snapshot_pages >= 3);
    assert!(!r.tombstones_seen.contains(&gone));
    let live = s.live(&u).await;
    assert_eq!(r.rows, live);
    assert_eq!(r.rows.len(), 9);
    assert_eq!(r.checksum(), r.last_checksum);
    assert_eq!(r.last_count, 9);
}

async fn change_feed_is_paginated_in_seq_order(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let u = s.register("feed").await;
    let ids: Vec<String> = (0..7).map(|_| uuid()).collect();
    s.push(&u, "w", ids.iter().map(|id| create(id, "p")).collect())
        .await;
    s.push(
        &u,
        "w",
        vec![delete(&ids[3]), update(&ids[0], json!({"progress": 9}))],
    )
    .await;
    let mut cursor = json!(2);
    let mut seqs = Vec::new();
    loop {
        let page = s.pull(&u, &cursor, Some(2)).await;
        assert!(page["changes"].as_array().unwrap().len() <= 2);
        for c in page["changes"].as_array().unwrap() {
            seqs.push(c["seq"].as_i64().unwrap());
        }
        cursor = page["cursor"].clone();
        assert!(cursor.is_i64());
        if page["has_more"] == false {
            break;
        }
    }
    // Rows 3..=7 changed once, row 4 was deleted (seq 8), row 1 updated (seq 9).
    assert_eq!(seqs, [3, 5, 6, 7, 8, 9]);
    assert_eq!(cursor, 9);
}

async fn unknown_cursor_gets_a_reset_snapshot(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let u = s.register("unknown").await;
    let id = uuid();
    s.push(&u, "w", vec![create(&id, "kept"), create(&uuid(), "x")])
        .await;
    let resp = s.pull(&u, &json!(500), None).await;
    assert_eq!(resp["reset"], true);
    assert_eq!(kinds(&resp), ["upsert", "upsert"]);
    assert_eq!(resp["cursor"], 2);
    let resp = s.pull(&u, &json!("snapshot:900:1"), None).await;
    assert_eq!(
        resp["reset"], true,
        "a continuation beyond the user's seq is unknown too"
    );
}

async fn retention_purge_resets_only_cursors_older_than_the_horizon(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let u = s.register("purge").await;
    let a = uuid();
    let b = uuid();
    s.push(&u, "w", vec![create(&a, "a"), create(&b, "b")])
        .await; // seq 1, 2
    s.push(&u, "w", vec![delete(&b)]).await; // seq 3
    let now = chrono::Utc::now().timestamp_millis();

    // Within retention: nothing purged, the old cursor still gets the tombstone.
    let purged = s
        .state
        .store
        .purge_tombstones(now - 30 * 86_400_000)
        .await
        .unwrap();
    assert_eq!(purged.tombstones, 0);
    let resp = s.pull(&u, &json!(1), None).await;
    assert_eq!(resp["reset"], false);
    assert_eq!(kinds(&resp), ["delete"], "b (seq 2) was deleted at seq 3");

    // Past retention: the tombstone goes and the horizon moves to its seq.
    let purged = s.state.store.purge_tombstones(now + 1_000).await.unwrap();
    assert_eq!((purged.users, purged.tombstones), (1, 1));
    assert_eq!(s.state.store.sync_state(&u.id).await.unwrap().purged_seq, 3);
    let resp = s.pull(&u, &json!(2), None).await;
    assert_eq!(
        resp["reset"], true,
        "cursor 2 may have missed the purged delete"
    );
    assert_eq!(kinds(&resp), ["upsert"]);
    assert_eq!(resp["changes"][0]["id"], json!(a));
    let resp = s.pull(&u, &json!(3), None).await;
    assert_eq!(
        resp["reset"], false,
        "a cursor at the horizon missed nothing"
    );
    s.push(&u, "w", vec![update(&a, json!({"progress": 3}))])
        .await;
    let resp = s.pull(&u, &json!(3), None).await;
    assert_eq!(
        (resp["reset"].clone(), kinds(&resp)),
        (json!(false), vec!["upsert".to_string()])
    );
    assert_eq!(resp["count"], 1);
}

async fn invalid_ops_are_rejected_while_valid_ops_apply(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let u = s.register("mixed").await;
    let good = uuid();
    let resp = s
        .push(
            &u,
            "w",
            vec![
                json!({"op_id": "o1", "kind": "merge", "id": uuid()}),
                json!({"op_id": "o2", "kind": "create", "id": "not-a-uuid", "data": {"name": "x"}}),
                json!({"op_id": "o3", "kind": "create", "id": uuid(), "data": {"name": "x", "progress": "half"}}),
                json!({"kind": "create", "id": uuid(), "data": {"name": "no op id"}}),
                json!("not an op"),
                create(&good, "fine"),
            ],
        )
        .await;
    let acks = resp["acks"].as_array().unwrap();
    let reasons: Vec<_> = acks
        .iter()
        .map(|a| a["reason"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        reasons,
        [
            "unknown_kind",
            "invalid_id",
            "validation_failed",
            "invalid_op_id",
            "invalid_op",
            ""
        ]
    );
    assert_eq!(acks[2]["field"], "progress");
    assert_eq!(acks[5]["status"], "applied");
    assert_eq!(s.live(&u).await.len(), 1);
    assert_eq!(resp["cursor"], 1);
}

async fn count_and_checksum_describe_the_live_set(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let u = s.register("sum").await;
    let empty = s.pull(&u, &json!(0), None).await;
    assert_eq!(empty["checksum"], "0".repeat(64));
    let ids: Vec<String> = (0..5).map(|_| uuid()).collect();
    s.push(&u, "w", ids.iter().map(|id| create(id, "p")).collect())
        .await;
    s.push(
        &u,
        "w",
        vec![delete(&ids[2]), update(&ids[4], json!({"notes": "n"}))],
    )
    .await;
    let live = s.live(&u).await;
    let resp = s.pull(&u, &json!(0), None).await;
    assert_eq!(resp["count"], 4);
    assert_eq!(resp["checksum"], json!(checksum(live.iter())));
    let state = s.state.store.sync_state(&u.id).await.unwrap();
    assert_eq!(state.live_count, 4);
}

/// Rows travel between the server and the database as JSON in places (PostgreSQL push
/// parameters, SQLite project lists): quotes, backslashes, control characters, non-BMP
/// text, the largest budget and cleared dates must come back byte for byte, through every
/// read path (snapshot, change feed, REST list and item) and a re-sent op's stored ack.
async fn field_values_come_back_exactly_as_written(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let u = s.register("exact").await;
    let id = uuid();
    let tricky = "Villa \"Al Amal\" \\ C:\\chantier\n\tétage 2 — 😀 \u{2028} \u{1} fin";
    let data = json!({
        "name": tricky, "client": "O'Brien & fils \\\"", "city": "الدار البيضاء",
        "budget_centimes": 9_007_199_254_740_991_i64, "status": "on_hold",
        "start_date": "2024-02-29", "end_date": null, "progress": 100,
        "notes": "ligne 1\r\nligne 2\u{7f}",
    });
    let op_id = "op \"quoted\" \\ é";
    let op = json!({"op_id": op_id, "kind": "create", "id": id, "data": data});
    s.push(&u, "w", vec![create(&uuid(), "first")]).await;
    let first = s.push(&u, "w", vec![op.clone()]).await;
    assert_eq!(first["acks"][0]["status"], "applied", "{first}");
    let again = s.push(&u, "w", vec![op]).await;
    assert_eq!(again["acks"], first["acks"]);
    assert_eq!(again["acks"][0]["op_id"], op_id);

    let check = |p: &Value, what: &str| {
        for key in btp_api::project::FIELDS {
            assert_eq!(p[key], data[key], "{what}: {key}");
        }
        assert_eq!(p["id"], json!(id), "{what}");
    };
    let snapshot = s.pull(&u, &json!(0), None).await;
    check(&snapshot["changes"][1]["project"], "snapshot");
    let feed = s.pull(&u, &json!(1), None).await;
    assert_eq!(feed["changes"][0], snapshot["changes"][1]);
    let (_, list) = s
        .call(reqwest::Method::GET, "/api/projects", Some(&u.token), None)
        .await;
    check(&list["projects"][1], "list");
    let (_, item) = s
        .call(
            reqwest::Method::GET,
            &format!("/api/projects/{id}"),
            Some(&u.token),
            None,
        )
        .await;
    check(&item, "item");

    // An update through the batch path, read back from the change feed.
    let cursor = snapshot["cursor"].clone();
    s.push(
        &u,
        "w",
        vec![update(&id, json!({"start_date": null, "notes": tricky}))],
    )
    .await;
    let changes = s.pull(&u, &cursor, None).await;
    let p = &changes["changes"][0]["project"];
    assert_eq!(p["start_date"], Value::Null);
    assert_eq!(p["notes"], tricky);
    assert_eq!(p["name"], tricky);
}

/// An op based on the row as of `base`.
fn based(mut op: Value, base: i64) -> Value {
    op["base_seq"] = json!(base);
    op
}

/// The live row `id` as a pull from 0 shows it.
async fn row(s: &Server, u: &crate::support::User, id: &str) -> Value {
    let resp = s.pull(u, &json!(0), None).await;
    resp["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .map(|c| c["project"].clone())
        .unwrap_or(Value::Null)
}

async fn a_stale_edit_is_a_conflict_and_the_newer_value_stays(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let u = s.register("stale").await;
    let id = uuid();
    let created = s.push(&u, "a", vec![create(&id, "École Fès")]).await;
    let base = created["acks"][0]["seq"].as_i64().unwrap();
    // Device A goes offline and sets 15 % with a note; device B, online, sets 30 %.
    let a_edit = based(
        update(
            &id,
            json!({"progress": 15, "notes": "dalle coulée", "city": "Fès"}),
        ),
        base,
    );
    let resp = s
        .push(
            &u,
            "b",
            vec![based(
                update(&id, json!({"progress": 30, "notes": "murs"})),
                base,
            )],
        )
        .await;
    assert_eq!(resp["acks"][0]["status"], "applied", "{resp}");
    let b_seq = resp["acks"][0]["seq"].as_i64().unwrap();
    // A comes back: its progress and notes are stale, its city is not.
    let resp = s.push(&u, "a", vec![a_edit.clone()]).await;
    let ack = &resp["acks"][0];
    assert_eq!(ack["status"], "conflict", "{resp}");
    assert_eq!(ack["reason"], "stale");
    assert_eq!(
        ack["fields"],
        json!({
            "notes": {"current": "murs", "yours": "dalle coulée"},
            "progress": {"current": 30, "yours": 15},
        })
    );
    let applied_seq = ack["seq"].as_i64().expect("the city was applied");
    assert!(applied_seq > b_seq);
    let now = row(&s, &u, &id).await;
    assert_eq!(
        (now["progress"].clone(), now["notes"].clone()),
        (json!(30), json!("murs"))
    );
    assert_eq!(now["city"], "Fès");
    // A re-sent op answers the same conflict and changes nothing.
    let state = s.state.store.sync_state(&u.id).await.unwrap();
    let again = s.push(&u, "a", vec![a_edit]).await;
    assert_eq!(again["acks"][0], resp["acks"][0]);
    assert_eq!(s.state.store.sync_state(&u.id).await.unwrap(), state);
    // "Keep mine": the same edit on the new base wins.
    let mine = based(update(&id, json!({"progress": 15})), applied_seq);
    let resp = s.push(&u, "a", vec![mine]).await;
    assert_eq!(resp["acks"][0]["status"], "applied", "{resp}");
    assert_eq!(row(&s, &u, &id).await["progress"], 15);
    // Count and checksum still describe the live set.
    let pulled = s.pull(&u, &json!(0), None).await;
    let live = s.live(&u).await;
    assert_eq!(pulled["count"], 1);
    assert_eq!(pulled["checksum"], checksum(&live));
}

async fn a_stale_delete_is_refused_and_a_current_one_applies(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let u = s.register("staledel").await;
    let id = uuid();
    let created = s.push(&u, "a", vec![create(&id, "Villa")]).await;
    let base = created["acks"][0]["seq"].as_i64().unwrap();
    let edited = s
        .push(&u, "b", vec![update(&id, json!({"progress": 60}))])
        .await;
    let current = edited["acks"][0]["seq"].as_i64().unwrap();
    let resp = s.push(&u, "a", vec![based(delete(&id), base)]).await;
    let ack = &resp["acks"][0];
    assert_eq!(
        (ack["status"].clone(), ack["reason"].clone()),
        (json!("conflict"), json!("stale")),
        "{resp}"
    );
    assert_eq!(ack["project"]["progress"], 60);
    assert_eq!(ack["seq"], Value::Null);
    assert_eq!(s.live(&u).await.len(), 1);
    let resp = s.push(&u, "a", vec![based(delete(&id), current)]).await;
    assert_eq!(resp["acks"][0]["status"], "applied", "{resp}");
    assert!(s.live(&u).await.is_empty());
}

async fn a_row_written_before_field_seqs_reports_stale_edits_conservatively(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let u = s.register("legacy").await;
    let id = uuid();
    let created = s.push(&u, "a", vec![create(&id, "Ancien")]).await;
    let base = created["acks"][0]["seq"].as_i64().unwrap();
    s.push(&u, "b", vec![update(&id, json!({"progress": 10}))])
        .await;
    // As a row written before the column existed.
    let mut conn = sqlx::AnyConnection::connect(s.state.store.url())
        .await
        .expect("database");
    sqlx::query("UPDATE projects SET field_seqs = '{}' WHERE id = $1")
        .bind(&id)
        .execute(&mut conn)
        .await
        .expect("reset field seqs");
    let resp = s
        .push(
            &u,
            "a",
            vec![based(update(&id, json!({"city": "Oujda"})), base)],
        )
        .await;
    assert_eq!(resp["acks"][0]["reason"], "stale", "{resp}");
    assert_eq!(
        resp["acks"][0]["fields"]["city"],
        json!({"current": "", "yours": "Oujda"})
    );
}

async fn history_lists_who_changed_what_newest_first(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let u = s.register("history").await;
    let other = s.register("history-other").await;
    let id = uuid();
    let push = |label: &'static str, session: &'static str, ops: Vec<Value>| {
        let body =
            json!({"client_id": "test", "session_id": session, "client_label": label, "ops": ops});
        let token = u.token.clone();
        let s = &s;
        async move {
            let (status, resp) = s
                .call(
                    reqwest::Method::POST,
                    "/api/sync/push",
                    Some(&token),
                    Some(body),
                )
                .await;
            assert_eq!(status, 200, "{resp}");
            resp
        }
    };
    let created = push(
        "Chrome · Windows",
        "tab-1",
        vec![create(&id, "Villa Agadir")],
    )
    .await;
    let base = created["acks"][0]["seq"].as_i64().unwrap();
    push(
        "Electron · Linux",
        "desk-1",
        vec![based(update(&id, json!({"progress": 30})), base)],
    )
    .await;
    // Stale: the progress is refused and not listed; the city is applied and listed.
    push(
        "Chrome · Windows",
        "tab-1",
        vec![based(
            update(&id, json!({"progress": 15, "city": "Agadir"})),
            base,
        )],
    )
    .await;
    // REST, without a label.
    let (status, _) = s
        .call(
            reqwest::Method::DELETE,
            &format!("/api/projects/{id}"),
            Some(&u.token),
            None,
        )
        .await;
    assert_eq!(status, 204);

    let (status, body) = s
        .call(
            reqwest::Method::GET,
            &format!("/api/projects/{id}/history"),
            Some(&u.token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let entries = body["entries"].as_array().unwrap();
    let summary: Vec<(String, String, Vec<String>)> = entries
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["device"].as_str().unwrap().to_string(),
                e["fields"].as_object().unwrap().keys().cloned().collect(),
            )
        })
        .collect();
    let fields = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    assert_eq!(
        summary,
        vec![
            ("delete".into(), "API".into(), vec![]),
            (
                "update".into(),
                "Chrome · Windows".into(),
                fields(&["city"])
            ),
            (
                "update".into(),
                "Electron · Linux".into(),
                fields(&["progress"])
            ),
            (
                "create".into(),
                "Chrome · Windows".into(),
                fields(&[
                    "budget_centimes",
                    "city",
                    "client",
                    "end_date",
                    "name",
                    "notes",
                    "progress",
                    "start_date",
                    "status"
                ])
            ),
        ],
        "{body}"
    );
    assert_eq!(
        entries[2]["fields"]["progress"],
        json!({"from": 0, "to": 30})
    );
    assert_eq!(
        entries[1]["fields"]["city"],
        json!({"from": "", "to": "Agadir"})
    );
    assert_eq!(
        entries[3]["fields"]["name"],
        json!({"from": null, "to": "Villa Agadir"})
    );
    assert_eq!(entries[2]["session_id"], "desk-1");
    assert!(entries[0]["seq"].as_i64() > entries[1]["seq"].as_i64());
    assert!(entries[0]["at"].as_str().unwrap().ends_with('Z'), "{body}");

    let (status, body) = s
        .call(
            reqwest::Method::GET,
            &format!("/api/projects/{id}/history?limit=1"),
            Some(&u.token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["entries"].as_array().unwrap().len(), 1);
    for (path, token, want) in [
        (format!("/api/projects/{id}/history"), &other.token, 404),
        (format!("/api/projects/{}/history", uuid()), &u.token, 404),
        (format!("/api/projects/{id}/history?limit=0"), &u.token, 422),
        (format!("/api/projects/{id}/history?limit=x"), &u.token, 422),
    ] {
        let (status, body) = s.call(reqwest::Method::GET, &path, Some(token), None).await;
        assert_eq!(status, want, "{path}: {body}");
        assert!(body["error"]["code"].is_string(), "{body}");
    }
    let bad = s
        .call(
            reqwest::Method::POST,
            "/api/sync/push",
            Some(&u.token),
            Some(json!({"session_id": "x", "client_label": "a\u{7}b", "ops": []})),
        )
        .await;
    assert_eq!(bad.0, 422, "{}", bad.1);
}
