//! The few Engine.IO v4 / Socket.IO v5 text packets a benchmark client sees or sends,
//! as pure functions over strings (no sockets, no clocks), so the client's IO loop stays
//! a thin match and the decoding is unit-tested.
//!
//! Decoding is deliberately shallow: a `sync:changes` broadcast is recognised by its
//! prefix and its round by the `"Bench <round>"` project name the publisher wrote, without
//! parsing the JSON. Receivers decode thousands of broadcasts per round on the same two
//! cores as the server under test, so the tool must cost as little as possible there.

use serde_json::Value;

/// The event name every broadcast carries.
pub const CHANGES_EVENT: &str = "sync:changes";
/// Prefix of the project names the publisher creates; the number after it is the round.
const ROUND_MARK: &str = "\"Bench ";

/// What one text frame from the server means to a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// Engine.IO open packet (`0{...}`): the session exists, send the namespace CONNECT.
    Open,
    /// Engine.IO ping (`2`): answer with a pong.
    Ping,
    /// Engine.IO close (`1`) or Socket.IO disconnect (`41`).
    Closed,
    /// Socket.IO CONNECT accepted (`40{"sid":..}`).
    Connected,
    /// Socket.IO CONNECT_ERROR (`44{...}`) with its payload.
    ConnectError(&'a str),
    /// A `sync:changes` event; `round` is `None` when it carries no benchmark project.
    Changes { round: Option<usize> },
    /// An ack (`43<id>[...]`) with its argument array.
    Ack { id: u64, args: &'a str },
    /// Anything else (other events, noop, message packets): ignored.
    Other,
}

/// Decode one text frame.
pub fn decode(text: &str) -> Incoming<'_> {
    let bytes = text.as_bytes();
    match bytes.first() {
        Some(b'0') => Incoming::Open,
        Some(b'1') => Incoming::Closed,
        Some(b'2') if bytes.len() == 1 => Incoming::Ping,
        Some(b'4') => decode_socketio(&text[1..]),
        _ => Incoming::Other,
    }
}

/// A Socket.IO packet on the default namespace (no `/nsp,` prefix).
fn decode_socketio(packet: &str) -> Incoming<'_> {
    let Some(kind) = packet.as_bytes().first() else {
        return Incoming::Other;
    };
    let rest = &packet[1..];
    match kind {
        b'0' => Incoming::Connected,
        b'1' => Incoming::Closed,
        b'4' => Incoming::ConnectError(rest),
        b'2' => decode_event(rest),
        b'3' => {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            match rest[..digits].parse() {
                Ok(id) => Incoming::Ack {
                    id,
                    args: &rest[digits..],
                },
                Err(_) => Incoming::Other,
            }
        }
        _ => Incoming::Other,
    }
}

fn decode_event(rest: &str) -> Incoming<'_> {
    // An event the server sends without an ack id starts directly with its array.
    let Some(body) = rest.strip_prefix("[\"") else {
        return Incoming::Other;
    };
    let Some(after_name) = body.strip_prefix(CHANGES_EVENT) else {
        return Incoming::Other;
    };
    if !after_name.starts_with('"') {
        return Incoming::Other;
    }
    Incoming::Changes {
        round: round_of(after_name),
    }
}

/// The round number after the first `"Bench ` in the payload.
fn round_of(payload: &str) -> Option<usize> {
    let start = payload.find(ROUND_MARK)? + ROUND_MARK.len();
    let digits = payload[start..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    payload[start..start + digits].parse().ok()
}

/// The Engine.IO pong answering a ping.
pub const PONG: &str = "3";

/// The namespace CONNECT with the product's handshake auth.
pub fn connect(token: &str, client_session_id: &str) -> String {
    let auth = serde_json::json!({"token": token, "clientSessionId": client_session_id});
    format!("40{auth}")
}

/// A `sync:push` event with ack id `ack_id` creating one project named for `round`.
pub fn push(ack_id: u64, session_id: &str, round: usize) -> String {
    let body = serde_json::json!({
        "client_id": "bench",
        "session_id": session_id,
        "ops": [{
            "op_id": uuid::Uuid::new_v4().to_string(),
            "kind": "create",
            "id": uuid::Uuid::new_v4().to_string(),
            "data": {"name": format!("Bench {round}"), "status": "planned"},
        }],
    });
    format!("42{ack_id}[\"sync:push\",{body}]")
}

/// Why a push ack is not a success, if it is not: the ack must be the HTTP push response
/// (`{acks: [{status: "applied", ..}], cursor, ..}`) for the one op sent.
pub fn push_ack_problem(args: &str) -> Option<String> {
    let parsed: Value = match serde_json::from_str(args) {
        Ok(v) => v,
        Err(e) => return Some(format!("ack is not JSON ({e}): {args}")),
    };
    let status = parsed
        .get(0)
        .and_then(|r| r.get("acks"))
        .and_then(|a| a.get(0))
        .and_then(|a| a.get("status"))
        .and_then(Value::as_str);
    match status {
        Some("applied") => None,
        _ => Some(format!("push not applied: {args}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_packets_decode_by_their_type_digit() {
        assert_eq!(
            decode("0{\"sid\":\"x\",\"pingInterval\":25000}"),
            Incoming::Open
        );
        assert_eq!(decode("2"), Incoming::Ping);
        assert_eq!(decode("1"), Incoming::Closed);
        assert_eq!(decode("6"), Incoming::Other);
        assert_eq!(decode("2probe"), Incoming::Other);
    }

    #[test]
    fn socketio_connect_outcomes_decode() {
        assert_eq!(decode("40{\"sid\":\"abc\"}"), Incoming::Connected);
        assert_eq!(
            decode("44{\"message\":\"unauthorized\"}"),
            Incoming::ConnectError("{\"message\":\"unauthorized\"}")
        );
        assert_eq!(decode("41"), Incoming::Closed);
    }

    #[test]
    fn changes_broadcast_carries_the_round_of_its_project_name() {
        let frame = r#"42["sync:changes",{"from":3,"to":4,"changes":[{"id":"x","name":"Bench 17","seq":4}]}]"#;
        assert_eq!(decode(frame), Incoming::Changes { round: Some(17) });
        let foreign = r#"42["sync:changes",{"from":3,"to":4,"changes":[{"name":"Villa"}]}]"#;
        assert_eq!(decode(foreign), Incoming::Changes { round: None });
        assert_eq!(decode(r#"42["sync:changesX",{}]"#), Incoming::Other);
        assert_eq!(decode(r#"42["other",{}]"#), Incoming::Other);
    }

    #[test]
    fn acks_decode_their_id_and_arguments() {
        assert_eq!(
            decode("4312[{\"acks\":[]}]"),
            Incoming::Ack {
                id: 12,
                args: "[{\"acks\":[]}]"
            }
        );
        assert_eq!(decode("43[]"), Incoming::Other);
    }

    #[test]
    fn a_push_creates_one_project_named_for_its_round() {
        let text = push(5, "csid-1", 3);
        let body = text.strip_prefix("425").map(serde_json::from_str::<Value>);
        let Some(Ok(Value::Array(args))) = body else {
            panic!("not an event with ack id 5: {text}");
        };
        assert_eq!(args[0], "sync:push");
        assert_eq!(args[1]["session_id"], "csid-1");
        assert_eq!(args[1]["ops"][0]["kind"], "create");
        assert_eq!(args[1]["ops"][0]["data"]["name"], "Bench 3");
        assert_eq!(round_of(&text), Some(3));
    }

    #[test]
    fn only_an_applied_op_is_a_successful_push() {
        assert_eq!(
            push_ack_problem(r#"[{"acks":[{"op_id":"a","status":"applied","seq":1}],"cursor":1}]"#),
            None
        );
        assert!(push_ack_problem(r#"[{"error":{"code":"unauthorized"}}]"#).is_some());
        assert!(push_ack_problem("nope").is_some());
    }
}
