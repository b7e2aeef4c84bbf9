//! Convergence property: simulated clients make random creates, updates and deletes
//! offline, push them in batches (sometimes losing the ack and re-sending the batch),
//! disconnect and come back with random cursors (0, their own, stale, unknown), and pull
//! in small pages. In the end every client holds the server's live set with equal
//! checksums, and the server state is exactly the acknowledged ops replayed in seq order.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::support::{uuid, Backend, Replica, Server};

both!(random_clients_converge_to_the_server_state);

const CLIENTS: usize = 4;
const STEPS: usize = 400;
const SEEDS: [u64; 2] = [7, 20_240_601];

struct Client {
    replica: Replica,
    outbox: Vec<Value>,
    known: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct Row {
    name: String,
    progress: i64,
}

async fn random_clients_converge_to_the_server_state(backend: Backend) {
    for seed in SEEDS {
        run(backend, seed).await;
    }
}

async fn run(backend: Backend, seed: u64) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let u = s.register("prop").await;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|_| Client {
            replica: Replica::default(),
            outbox: Vec::new(),
            known: Vec::new(),
        })
        .collect();
    // op_id → (op, ack) for every ack received.
    let mut acked: HashMap<String, (Value, Value)> = HashMap::new();

    for step in 0..STEPS {
        let c = rng.random_range(0..CLIENTS);
        let action = rng.random_range(0..100);
        let client = &mut clients[c];
        if action < 45 {
            let op = random_op(&mut rng, client, step);
            client.outbox.push(op);
        } else if action < 70 {
            if client.outbox.is_empty() {
                continue;
            }
            let n = rng.random_range(1..=client.outbox.len().min(8));
            let batch: Vec<Value> = client.outbox[..n].to_vec();
            let resp = s.push(&u, &format!("c{c}"), batch.clone()).await;
            record(&mut acked, &batch, &resp);
            // One time in four the ack is "lost": the batch stays queued and is re-sent.
            if rng.random_range(0..4) != 0 {
                client.outbox.drain(..n);
            }
        } else if action < 80 {
            // Reconnect with a cursor a real client can hold: 0, an older cursor of its
            // own (a restored backup), its own, or one the server never issued.
            let own = client.replica.cursor.as_i64().unwrap_or(0);
            let seq = s.state.store.sync_state(&u.id).await.unwrap().seq;
            client.replica.cursor = match rng.random_range(0..4) {
                0 => json!(0),
                1 => json!(rng.random_range(0..=own)),
                2 => json!(seq + rng.random_range(1..50)),
                _ => json!(own),
            };
            let limit = rng.random_range(1..6);
            client.replica.sync(&s, &u, Some(limit)).await;
        } else {
            let limit = rng.random_range(1..6);
            client.replica.sync(&s, &u, Some(limit)).await;
            client.known = client.replica.rows.keys().cloned().collect();
            client.known.sort();
        }
    }

    for (c, client) in clients.iter_mut().enumerate() {
        while !client.outbox.is_empty() {
            let n = client.outbox.len().min(8);
            let batch: Vec<Value> = client.outbox.drain(..n).collect();
            let resp = s.push(&u, &format!("c{c}"), batch.clone()).await;
            record(&mut acked, &batch, &resp);
        }
    }
    let live = s.live(&u).await;
    let mut server_sum = String::new();
    for client in clients.iter_mut() {
        client.replica.sync(&s, &u, Some(3)).await;
        assert_eq!(client.replica.rows, live, "seed {seed}: a client diverged");
        assert_eq!(
            client.replica.checksum(),
            client.replica.last_checksum,
            "seed {seed}"
        );
        server_sum = client.replica.last_checksum.clone();
    }
    assert_eq!(crate::support::checksum(live.iter()), server_sum);

    // Replay every applied op in seq order: that must be the server's state.
    let mut applied: Vec<(i64, Value)> = acked
        .values()
        .filter(|(_, ack)| ack["status"] == "applied")
        .map(|(op, ack)| (ack["seq"].as_i64().unwrap(), op.clone()))
        .collect();
    applied.sort_by_key(|(seq, _)| *seq);
    let mut model: HashMap<String, Row> = HashMap::new();
    for (_, op) in &applied {
        let id = op["id"].as_str().unwrap().to_string();
        match op["kind"].as_str().unwrap() {
            "create" | "update" => {
                let row = model.entry(id).or_insert(Row {
                    name: String::new(),
                    progress: 0,
                });
                if let Some(n) = op["data"]["name"].as_str() {
                    row.name = n.to_string();
                }
                if let Some(p) = op["data"]["progress"].as_i64() {
                    row.progress = p;
                }
            }
            _ => {
                model.remove(&id);
            }
        }
    }
    let (_, list) = s
        .call(reqwest::Method::GET, "/api/projects", Some(&u.token), None)
        .await;
    let server: HashMap<String, Row> = list["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                Row {
                    name: p["name"].as_str().unwrap().to_string(),
                    progress: p["progress"].as_i64().unwrap(),
                },
            )
        })
        .collect();
    assert_eq!(
        server, model,
        "seed {seed}: server state is not the acked ops replayed"
    );
}

fn random_op(rng: &mut StdRng, client: &mut Client, step: usize) -> Value {
    let pick = |rng: &mut StdRng, known: &[String]| known[rng.random_range(0..known.len())].clone();
    let roll = rng.random_range(0..10);
    if client.known.is_empty() || roll < 4 {
        let id = uuid();
        client.known.push(id.clone());
        json!({"op_id": uuid(), "kind": "create", "id": id, "data": {"name": format!("n{step}")}})
    } else if roll < 8 {
        let id = pick(rng, &client.known);
        let data = if rng.random_range(0..2) == 0 {
            json!({"name": format!("u{step}")})
        } else {
            json!({"progress": rng.random_range(0..=100)})
        };
        json!({"op_id": uuid(), "kind": "update", "id": id, "data": data})
    } else {
        let id = pick(rng, &client.known);
        json!({"op_id": uuid(), "kind": "delete", "id": id})
    }
}

fn record(acked: &mut HashMap<String, (Value, Value)>, batch: &[Value], resp: &Value) {
    for (op, ack) in batch.iter().zip(resp["acks"].as_array().unwrap()) {
        let op_id = op["op_id"].as_str().unwrap().to_string();
        assert_eq!(ack["op_id"], json!(op_id));
        if let Some((_, prev)) = acked.get(&op_id) {
            assert_eq!(prev, ack, "a re-sent op got a different ack");
        }
        acked.insert(op_id, (op.clone(), ack.clone()));
    }
}
