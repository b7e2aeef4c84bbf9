//! Socket.IO v5 packet codec (the default parser's text format):
//! `<type>[<attachments>-][<namespace>,][<ack id>][<JSON payload>]`.
//!
//! Decoding validates the payload the way the reference parser does (CONNECT data is an
//! object, an EVENT is a non-empty array starting with a non-reserved event name, an ACK
//! is an array, DISCONNECT has no payload) and keeps argument values as raw JSON text.
//! Encoding writes the Engine.IO `message` type `4` in front, so the result is the exact
//! text frame to send and can be shared by every recipient of a broadcast.

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::args::{write_json_str, Args};
use crate::engine::packet::Frame;

/// Largest number of binary attachments accepted in one packet.
pub const MAX_ATTACHMENTS: usize = 256;

/// Event names the reference implementation reserves; a client may not send them.
const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// A decoded packet (binary attachments not yet joined, see `assemble`).
#[derive(Debug)]
pub struct Packet {
    pub nsp: String,
    pub id: Option<u64>,
    /// Number of binary attachments that follow (BINARY_EVENT / BINARY_ACK only).
    pub attachments: usize,
    pub body: Body,
}

#[derive(Debug)]
pub enum Body {
    /// CONNECT with the optional handshake `auth` object.
    Connect(Option<Box<RawValue>>),
    Disconnect,
    /// EVENT or BINARY_EVENT.
    Event {
        name: String,
        args: Vec<Box<RawValue>>,
    },
    /// ACK or BINARY_ACK.
    Ack {
        args: Vec<Box<RawValue>>,
    },
    ConnectError(Box<RawValue>),
}

/// Why a text is not a valid Socket.IO packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown packet type")]
    UnknownType,
    #[error("illegal attachments")]
    IllegalAttachments,
    #[error("invalid ack id")]
    InvalidId,
    #[error("invalid payload")]
    InvalidPayload,
}

/// Decodes one Socket.IO packet from the text of an Engine.IO message.
pub fn decode(text: &str) -> Result<Packet, DecodeError> {
    let bytes = text.as_bytes();
    let kind = match bytes.first() {
        Some(b @ b'0'..=b'6') => b - b'0',
        _ => return Err(DecodeError::UnknownType),
    };
    let mut i = 1;

    let mut attachments = 0;
    if kind == 5 || kind == 6 {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i - start > 3 || bytes.get(i) != Some(&b'-') {
            return Err(DecodeError::IllegalAttachments);
        }
        attachments = text[start..i]
            .parse::<usize>()
            .map_err(|_| DecodeError::IllegalAttachments)?;
        if attachments > MAX_ATTACHMENTS {
            return Err(DecodeError::IllegalAttachments);
        }
        i += 1;
    }

    let nsp = if bytes.get(i) == Some(&b'/') {
        let start = i;
        let end = text[start..].find(',').map_or(text.len(), |p| start + p);
        i = if end < text.len() { end + 1 } else { end };
        text[start..end].to_owned()
    } else {
        "/".to_owned()
    };

    let mut id = None;
    let start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    if i > start {
        if i - start > 15 {
            return Err(DecodeError::InvalidId);
        }
        id = Some(
            text[start..i]
                .parse::<u64>()
                .map_err(|_| DecodeError::InvalidId)?,
        );
    }

    let payload = &text[i..];
    let body = match kind {
        0 => {
            if payload.is_empty() {
                Body::Connect(None)
            } else {
                let raw = parse_raw(payload)?;
                if !raw.get().starts_with('{') {
                    return Err(DecodeError::InvalidPayload);
                }
                Body::Connect(Some(raw))
            }
        }
        1 => {
            if !payload.is_empty() {
                return Err(DecodeError::InvalidPayload);
            }
            Body::Disconnect
        }
        2 | 5 => {
            let mut args = parse_array(payload)?;
            if args.is_empty() {
                return Err(DecodeError::InvalidPayload);
            }
            let name: String =
                serde_json::from_str(args[0].get()).map_err(|_| DecodeError::InvalidPayload)?;
            if RESERVED_EVENTS.contains(&name.as_str()) {
                return Err(DecodeError::InvalidPayload);
            }
            args.remove(0);
            Body::Event { name, args }
        }
        3 | 6 => {
            if id.is_none() {
                return Err(DecodeError::InvalidId);
            }
            Body::Ack {
                args: parse_array(payload)?,
            }
        }
        _ => {
            let raw = parse_raw(payload)?;
            if !(raw.get().starts_with('{') || raw.get().starts_with('"')) {
                return Err(DecodeError::InvalidPayload);
            }
            Body::ConnectError(raw)
        }
    };
    Ok(Packet {
        nsp,
        id,
        attachments,
        body,
    })
}

fn parse_raw(payload: &str) -> Result<Box<RawValue>, DecodeError> {
    // Trim so that `starts_with` checks see the first token.
    let raw: Box<RawValue> =
        serde_json::from_str(payload).map_err(|_| DecodeError::InvalidPayload)?;
    let trimmed = raw.get().trim();
    if trimmed.len() == raw.get().len() {
        return Ok(raw);
    }
    RawValue::from_string(trimmed.to_owned()).map_err(|_| DecodeError::InvalidPayload)
}

fn parse_array(payload: &str) -> Result<Vec<Box<RawValue>>, DecodeError> {
    if !payload.trim_start().starts_with('[') {
        return Err(DecodeError::InvalidPayload);
    }
    serde_json::from_str(payload).map_err(|_| DecodeError::InvalidPayload)
}

/// An encoded packet ready to queue on any number of sessions: the text frame and the
/// binary attachments that must follow it.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub text: Bytes,
    pub binary: Vec<Bytes>,
}

impl Encoded {
    /// The frames to queue, in order.
    pub fn frames(&self) -> impl Iterator<Item = Frame> + Clone + '_ {
        std::iter::once(Frame::Text(self.text.clone()))
            .chain(self.binary.iter().cloned().map(Frame::Binary))
    }
}

fn header(out: &mut Vec<u8>, kind: u8, attachments: usize, nsp: &str, id: Option<u64>) {
    out.push(b'4');
    let kind = if attachments > 0 && (kind == 2 || kind == 3) {
        kind + 3
    } else {
        kind
    };
    out.push(b'0' + kind);
    if kind == 5 || kind == 6 {
        out.extend_from_slice(attachments.to_string().as_bytes());
        out.push(b'-');
    }
    if nsp != "/" {
        out.extend_from_slice(nsp.as_bytes());
        out.push(b',');
    }
    if let Some(id) = id {
        out.extend_from_slice(id.to_string().as_bytes());
    }
}

/// `CONNECT` answering a successful namespace connection: `0[/nsp,]{"sid":"..."}`.
pub fn connect(nsp: &str, socket_id: &str) -> Frame {
    let mut out = Vec::with_capacity(nsp.len() + socket_id.len() + 16);
    header(&mut out, 0, 0, nsp, None);
    out.extend_from_slice(b"{\"sid\":");
    write_json_str(&mut out, socket_id);
    out.push(b'}');
    Frame::Text(Bytes::from(out))
}

/// `CONNECT_ERROR` with its data object.
pub fn connect_error(nsp: &str, data: &serde_json::Value) -> Frame {
    let mut out = Vec::with_capacity(nsp.len() + 48);
    header(&mut out, 4, 0, nsp, None);
    // Serializing a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, data);
    Frame::Text(Bytes::from(out))
}

/// `DISCONNECT` for a namespace.
pub fn disconnect(nsp: &str) -> Frame {
    let mut out = Vec::with_capacity(nsp.len() + 3);
    header(&mut out, 1, 0, nsp, None);
    Frame::Text(Bytes::from(out))
}

/// `EVENT` / `BINARY_EVENT`, with an ack id when an acknowledgement is expected.
pub fn event(nsp: &str, id: Option<u64>, name: &str, args: &Args) -> Encoded {
    let mut out = Vec::with_capacity(nsp.len() + name.len() + args.json_len() + 16);
    header(&mut out, 2, args.binary().len(), nsp, id);
    args.write_array(&mut out, Some(name));
    Encoded {
        text: Bytes::from(out),
        binary: args.binary().to_vec(),
    }
}

/// `ACK` / `BINARY_ACK`.
pub fn ack(nsp: &str, id: u64, args: &Args) -> Encoded {
    let mut out = Vec::with_capacity(nsp.len() + args.json_len() + 16);
    header(&mut out, 3, args.binary().len(), nsp, Some(id));
    args.write_array(&mut out, None);
    Encoded {
        text: Bytes::from(out),
        binary: args.binary().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(frame: &Frame) -> &str {
        match frame {
            Frame::Text(b) => std::str::from_utf8(b).unwrap(),
            Frame::Binary(_) => panic!("binary frame"),
        }
    }

    #[test]
    fn decodes_namespace_ack_id_and_payload() {
        let p = decode(r#"2/admin,13["foo",1,{"a":2}]"#).unwrap();
        assert_eq!(p.nsp, "/admin");
        assert_eq!(p.id, Some(13));
        match p.body {
            Body::Event { name, args } => {
                assert_eq!(name, "foo");
                assert_eq!(args.len(), 2);
                assert_eq!(args[1].get(), r#"{"a":2}"#);
            }
            other => panic!("{other:?}"),
        }
        let p = decode("0").unwrap();
        assert_eq!(p.nsp, "/");
        assert!(matches!(p.body, Body::Connect(None)));
        let p = decode("0/custom").unwrap();
        assert_eq!(p.nsp, "/custom");
        let p = decode(r#"0/custom,{"token":"abc"}"#).unwrap();
        match p.body {
            Body::Connect(Some(auth)) => assert_eq!(auth.get(), r#"{"token":"abc"}"#),
            other => panic!("{other:?}"),
        }
        let p =
            decode(r#"52-789["m",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
                .unwrap();
        assert_eq!(p.attachments, 2);
        assert_eq!(p.id, Some(789));
        let p = decode("3/a,7[]").unwrap();
        assert!(matches!(p.body, Body::Ack { ref args } if args.is_empty()));
        assert!(matches!(decode("1/a,").unwrap().body, Body::Disconnect));
    }

    #[test]
    fn rejects_what_the_reference_parser_rejects() {
        for bad in [
            "",
            "abc",
            "7",
            "42",
            "2{}",
            "2[]",
            "2abc[\"a\"]",
            "2[1]",
            "2[\"connect\"]",
            "0[1]",
            "0\"x\"",
            "1{}",
            "3[]",
            "31{}",
            "5[\"a\"]",
            "5x-[\"a\"]",
            "5999-[\"a\"]",
            "21234567890123456[\"a\"]",
            "2[\"a\"]x",
        ] {
            assert!(decode(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn encodes_with_engine_message_prefix() {
        assert_eq!(text(&connect("/", "abc")), r#"40{"sid":"abc"}"#);
        assert_eq!(
            text(&connect("/custom", "abc")),
            r#"40/custom,{"sid":"abc"}"#
        );
        assert_eq!(
            text(&connect_error(
                "/random",
                &serde_json::json!({"message": "Invalid namespace"})
            )),
            r#"44/random,{"message":"Invalid namespace"}"#
        );
        assert_eq!(text(&disconnect("/")), "41");
        let mut args = Args::new();
        args.push(&1).unwrap();
        let e = event("/", None, "message-back", &args);
        assert_eq!(&e.text[..], br#"42["message-back",1]"#);
        let e = ack("/", 456, &args);
        assert_eq!(&e.text[..], br#"43456[1]"#);
        args.push_binary(Bytes::from_static(&[1, 2, 3]));
        let e = ack("/x", 789, &args);
        assert_eq!(
            &e.text[..],
            br#"461-/x,789[1,{"_placeholder":true,"num":0}]"#
        );
        assert_eq!(e.frames().count(), 2);
    }
}
