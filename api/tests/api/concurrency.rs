//! Seq order is commit order: with many writers committing at once, a reader that
//! follows the change feed with its cursor ends with exactly the server's state, and
//! every change it is handed is above its cursor, in order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::json;

use crate::support::{create, update, uuid, Backend, Replica, Server};

both!(concurrent_writers_and_a_polling_reader_never_skip_a_change);

const WRITERS: usize = 8;
const BATCHES: usize = 30;
const OPS: usize = 10;

async fn concurrent_writers_and_a_polling_reader_never_skip_a_change(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let s = Arc::new(s);
    let u = s.register("busy").await;
    let shared: Vec<String> = (0..20).map(|_| uuid()).collect();
    s.push(
        &u,
        "seed",
        shared.iter().map(|id| create(id, "shared")).collect(),
    )
    .await;

    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (s, u, done) = (s.clone(), u.clone(), done.clone());
        tokio::spawn(async move {
            let mut r = Replica::default();
            let mut last_cursor = 0i64;
            let mut pulls = 0u32;
            loop {
                let finished = done.load(Ordering::SeqCst);
                loop {
                    let resp = s.pull(&u, &r.cursor, Some(25)).await;
                    let from = r.cursor.as_i64().unwrap_or(0);
                    let seqs: Vec<i64> = resp["changes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|c| c["seq"].as_i64().unwrap())
                        .collect();
                    if resp["reset"] == false {
                        assert!(seqs.iter().all(|q| *q > from), "change at or below cursor");
                    }
                    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "not in seq order");
                    pulls += 1;
                    let more = r.apply(&resp);
                    if let Some(c) = r.cursor.as_i64() {
                        assert!(c >= last_cursor, "cursor went back");
                        last_cursor = c;
                    }
                    if !more {
                        break;
                    }
                }
                if finished {
                    return (r, pulls);
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        })
    };

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (s, u, shared) = (s.clone(), u.clone(), shared.clone());
        writers.push(tokio::spawn(async move {
            let mut applied = 0usize;
            for b in 0..BATCHES {
                let mut ops = Vec::new();
                for o in 0..OPS {
                    if o % 2 == 0 {
                        ops.push(create(&uuid(), &format!("w{w}b{b}o{o}")));
                    } else {
                        let id = &shared[(w * 7 + b * 3 + o) % shared.len()];
                        ops.push(update(id, json!({"progress": (w + b + o) % 101})));
                    }
                }
                let resp = s.push(&u, &format!("writer{w}"), ops).await;
                applied += resp["acks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|a| a["status"] == "applied")
                    .count();
            }
            applied
        }));
    }
    let mut total = 0;
    for w in writers {
        total += w.await.unwrap();
    }
    assert_eq!(total, WRITERS * BATCHES * OPS);
    done.store(true, Ordering::SeqCst);
    let (replica, pulls) = reader.await.unwrap();
    assert!(pulls > 1);

    let live = s.live(&u).await;
    assert_eq!(live.len(), shared.len() + WRITERS * BATCHES * OPS / 2);
    assert_eq!(replica.rows, live, "reader diverged from the server");
    assert_eq!(replica.checksum(), replica.last_checksum);
    let state = s.state.store.sync_state(&u.id).await.unwrap();
    assert_eq!(state.seq as usize, shared.len() + total);
    assert_eq!(replica.cursor, json!(state.seq));
}
