//! Engine.IO v4 packet codec: the seven packet types, their text form (a type digit and
//! an optional payload), binary messages, and the long-polling payload (packets joined by
//! the record separator `\x1e`, binary messages as `b` + base64).
//!
//! Pure functions over bytes. Outgoing packets are kept as [`Frame`]s — the exact bytes of
//! one WebSocket frame — so one encoded packet (`Bytes`) can be shared by every recipient
//! of a broadcast and rendered into a polling payload only when a GET drains it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};

/// Separator between packets in a long-polling payload.
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// An application message carried by a `message` packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message (UTF-8, checked when it was decoded).
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
}

impl Message {
    /// The text of a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(bytes) => std::str::from_utf8(bytes).ok(),
            Message::Binary(_) => None,
        }
    }
}

/// A packet received from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// `0`: only servers send it; a client sending it is a protocol error upstream.
    Open,
    /// `1`: the client closes the session.
    Close,
    /// `2`, or `2probe` during an upgrade.
    Ping { probe: bool },
    /// `3`, or `3probe`.
    Pong { probe: bool },
    /// `4` + data, or a binary message.
    Message(Message),
    /// `5`: completes an upgrade.
    Upgrade,
    /// `6`.
    Noop,
}

/// Why bytes are not a valid packet or payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type {0:?}")]
    UnknownType(u8),
    #[error("text packet is not UTF-8")]
    NotUtf8,
    #[error("invalid base64 in binary packet")]
    Base64,
}

/// Decodes one text packet (a WebSocket text frame or one record of a polling payload).
pub fn decode_text(bytes: Bytes) -> Result<Packet, DecodeError> {
    let Some(&kind) = bytes.first() else {
        return Err(DecodeError::Empty);
    };
    let data = &bytes[1..];
    let packet = match kind {
        b'0' => Packet::Open,
        b'1' => Packet::Close,
        b'2' => Packet::Ping {
            probe: data == b"probe",
        },
        b'3' => Packet::Pong {
            probe: data == b"probe",
        },
        b'4' => {
            if std::str::from_utf8(data).is_err() {
                return Err(DecodeError::NotUtf8);
            }
            Packet::Message(Message::Text(bytes.slice(1..)))
        }
        b'5' => Packet::Upgrade,
        b'6' => Packet::Noop,
        other => return Err(DecodeError::UnknownType(other)),
    };
    Ok(packet)
}

/// Decodes a long-polling request body into its packets, in order.
pub fn decode_payload(body: Bytes) -> Result<Vec<Packet>, DecodeError> {
    if body.is_empty() {
        return Err(DecodeError::Empty);
    }
    if std::str::from_utf8(&body).is_err() {
        return Err(DecodeError::NotUtf8);
    }
    let mut packets = Vec::new();
    let mut start = 0;
    loop {
        let end = body[start..]
            .iter()
            .position(|&b| b == RECORD_SEPARATOR)
            .map_or(body.len(), |i| start + i);
        let record = body.slice(start..end);
        if record.first() == Some(&b'b') {
            let decoded = STANDARD
                .decode(&record[1..])
                .map_err(|_| DecodeError::Base64)?;
            packets.push(Packet::Message(Message::Binary(Bytes::from(decoded))));
        } else {
            packets.push(decode_text(record)?);
        }
        if end == body.len() {
            return Ok(packets);
        }
        start = end + 1;
    }
}

/// One outgoing packet, already encoded as the payload of one WebSocket frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text packet: type digit followed by its data (`"2"`, `"42[\"a\"]"`, ...).
    Text(Bytes),
    /// A binary message (its type is implied by the frame being binary).
    Binary(Bytes),
}

impl Frame {
    /// Bytes of the packet (what a queued frame holds).
    pub fn len(&self) -> usize {
        match self {
            Frame::Text(b) | Frame::Binary(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes this frame takes in a polling payload, for sizing buffers.
    fn payload_len(&self) -> usize {
        match self {
            Frame::Text(b) => b.len(),
            Frame::Binary(b) => 1 + b.len().div_ceil(3) * 4,
        }
    }
}

/// Static frames for the packets without data.
pub mod frames {
    use super::Frame;
    use bytes::Bytes;

    pub fn close() -> Frame {
        Frame::Text(Bytes::from_static(b"1"))
    }
    pub fn ping() -> Frame {
        Frame::Text(Bytes::from_static(b"2"))
    }
    pub fn pong() -> Frame {
        Frame::Text(Bytes::from_static(b"3"))
    }
    pub fn pong_probe() -> Frame {
        Frame::Text(Bytes::from_static(b"3probe"))
    }
    pub fn noop() -> Frame {
        Frame::Text(Bytes::from_static(b"6"))
    }
}

/// Encodes a text message packet (`4` + text).
pub fn message_text(text: &str) -> Frame {
    let mut buf = BytesMut::with_capacity(text.len() + 1);
    buf.put_u8(b'4');
    buf.put_slice(text.as_bytes());
    Frame::Text(buf.freeze())
}

/// Encodes a message of either kind.
pub fn message(message: Message) -> Frame {
    match message {
        Message::Text(text) => {
            let mut buf = BytesMut::with_capacity(text.len() + 1);
            buf.put_u8(b'4');
            buf.put_slice(&text);
            Frame::Text(buf.freeze())
        }
        Message::Binary(bytes) => Frame::Binary(bytes),
    }
}

/// The `open` packet a server sends first.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Handshake<'a> {
    pub sid: &'a str,
    pub upgrades: &'a [&'a str],
    pub ping_interval: u64,
    pub ping_timeout: u64,
    pub max_payload: u64,
}

impl Handshake<'_> {
    pub fn frame(&self) -> Frame {
        let mut buf = Vec::with_capacity(128);
        buf.push(b'0');
        // Serializing plain strings and integers cannot fail.
        if serde_json::to_writer(&mut buf, self).is_err() {
            buf.truncate(1);
        }
        Frame::Text(Bytes::from(buf))
    }
}

/// Renders frames as one long-polling response body.
pub fn encode_payload(frames: &[Frame]) -> Bytes {
    let len = frames.iter().map(|f| f.payload_len() + 1).sum::<usize>();
    let mut buf = BytesMut::with_capacity(len);
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 {
            buf.put_u8(RECORD_SEPARATOR);
        }
        match frame {
            Frame::Text(text) => buf.put_slice(text),
            Frame::Binary(bytes) => {
                buf.put_u8(b'b');
                buf.put_slice(STANDARD.encode(bytes).as_bytes());
            }
        }
    }
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn text_packets_decode_by_type_digit() {
        assert_eq!(decode_text(text("1")), Ok(Packet::Close));
        assert_eq!(decode_text(text("2")), Ok(Packet::Ping { probe: false }));
        assert_eq!(
            decode_text(text("2probe")),
            Ok(Packet::Ping { probe: true })
        );
        assert_eq!(decode_text(text("3")), Ok(Packet::Pong { probe: false }));
        assert_eq!(
            decode_text(text("4hello")),
            Ok(Packet::Message(Message::Text(text("hello"))))
        );
        assert_eq!(decode_text(text("5")), Ok(Packet::Upgrade));
        assert_eq!(decode_text(text("6")), Ok(Packet::Noop));
        assert_eq!(decode_text(text("")), Err(DecodeError::Empty));
        assert_eq!(
            decode_text(text("abc")),
            Err(DecodeError::UnknownType(b'a'))
        );
        assert_eq!(decode_text(text("7")), Err(DecodeError::UnknownType(b'7')));
    }

    #[test]
    fn payload_splits_on_record_separator_and_decodes_base64_binary() {
        let packets = decode_payload(text("4hello\x1ebAQIDBA==\x1e3")).unwrap();
        assert_eq!(
            packets,
            vec![
                Packet::Message(Message::Text(text("hello"))),
                Packet::Message(Message::Binary(Bytes::from_static(&[1, 2, 3, 4]))),
                Packet::Pong { probe: false },
            ]
        );
        assert!(decode_payload(text("")).is_err());
        assert!(decode_payload(text("4a\x1e")).is_err());
        assert!(decode_payload(text("b!!!")).is_err());
    }

    #[test]
    fn payload_encoding_round_trips() {
        let frames = vec![
            message_text("hello"),
            Frame::Binary(Bytes::from_static(&[1, 2, 3, 4])),
            frames::ping(),
        ];
        let body = encode_payload(&frames);
        assert_eq!(&body[..], b"4hello\x1ebAQIDBA==\x1e2");
    }

    #[test]
    fn handshake_has_the_five_fields() {
        let frame = Handshake {
            sid: "abc",
            upgrades: &["websocket"],
            ping_interval: 300,
            ping_timeout: 200,
            max_payload: 1_000_000,
        }
        .frame();
        assert_eq!(
            frame,
            Frame::Text(text(
                "0{\"sid\":\"abc\",\"upgrades\":[\"websocket\"],\"pingInterval\":300,\"pingTimeout\":200,\"maxPayload\":1000000}"
            ))
        );
    }
}
