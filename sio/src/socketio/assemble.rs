//! Joins a BINARY_EVENT / BINARY_ACK with the binary Engine.IO messages that follow it.
//!
//! Sans IO, one per Engine.IO session. The rules are the reference parser's: a text
//! message while attachments are outstanding, or a binary message when none are, is a
//! protocol error; every placeholder must point at an attachment that arrived. The total
//! size of one packet's attachments is bounded so a client cannot make the server buffer
//! without limit.

use bytes::Bytes;
use serde_json::Value;

use super::packet::{decode, Body, DecodeError, Packet};

/// A packet with all its attachments.
#[derive(Debug)]
pub struct Complete {
    pub packet: Packet,
    pub binary: Vec<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssembleError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("text message while binary attachments are outstanding")]
    UnexpectedText,
    #[error("binary message without a packet expecting it")]
    UnexpectedBinary,
    #[error("binary attachments exceed the size limit")]
    TooLarge,
    #[error("placeholder refers to a missing attachment")]
    BadPlaceholder,
}

#[derive(Debug)]
struct Partial {
    packet: Packet,
    binary: Vec<Bytes>,
    bytes: usize,
}

/// Reassembly state of one session.
#[derive(Debug)]
pub struct Assembler {
    partial: Option<Partial>,
    max_bytes: usize,
}

impl Assembler {
    /// `max_bytes` bounds the attachments of one packet together.
    pub fn new(max_bytes: usize) -> Self {
        Assembler {
            partial: None,
            max_bytes,
        }
    }

    /// Feeds a text message.
    pub fn text(&mut self, text: &str) -> Result<Option<Complete>, AssembleError> {
        if self.partial.is_some() {
            return Err(AssembleError::UnexpectedText);
        }
        let packet = decode(text)?;
        if packet.attachments == 0 {
            return Ok(Some(Complete {
                packet,
                binary: Vec::new(),
            }));
        }
        self.partial = Some(Partial {
            binary: Vec::with_capacity(packet.attachments),
            packet,
            bytes: 0,
        });
        Ok(None)
    }

    /// Feeds a binary message.
    pub fn binary(&mut self, bytes: Bytes) -> Result<Option<Complete>, AssembleError> {
        let Some(partial) = self.partial.as_mut() else {
            return Err(AssembleError::UnexpectedBinary);
        };
        partial.bytes += bytes.len();
        if partial.bytes > self.max_bytes {
            return Err(AssembleError::TooLarge);
        }
        partial.binary.push(bytes);
        if partial.binary.len() < partial.packet.attachments {
            return Ok(None);
        }
        let Some(Partial { packet, binary, .. }) = self.partial.take() else {
            return Err(AssembleError::UnexpectedBinary);
        };
        check_placeholders(&packet, binary.len())?;
        Ok(Some(Complete { packet, binary }))
    }
}

fn check_placeholders(packet: &Packet, count: usize) -> Result<(), AssembleError> {
    let args = match &packet.body {
        Body::Event { args, .. } | Body::Ack { args } => args,
        _ => return Ok(()),
    };
    for arg in args {
        let value: Value =
            serde_json::from_str(arg.get()).map_err(|_| AssembleError::BadPlaceholder)?;
        if !placeholders_valid(&value, count) {
            return Err(AssembleError::BadPlaceholder);
        }
    }
    Ok(())
}

fn placeholders_valid(value: &Value, count: usize) -> bool {
    match value {
        Value::Array(items) => items.iter().all(|v| placeholders_valid(v, count)),
        Value::Object(map) => {
            if map.get("_placeholder") == Some(&Value::Bool(true)) {
                return map
                    .get("num")
                    .and_then(Value::as_u64)
                    .is_some_and(|n| (n as usize) < count);
            }
            map.values().all(|v| placeholders_valid(v, count))
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_event_completes_after_its_attachments() {
        let mut a = Assembler::new(1000);
        let text = r#"52-["m",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
        assert!(a.text(text).unwrap().is_none());
        assert!(a.binary(Bytes::from_static(&[1])).unwrap().is_none());
        let done = a.binary(Bytes::from_static(&[2])).unwrap().unwrap();
        assert_eq!(done.binary.len(), 2);
        assert!(a.text(r#"2["x"]"#).unwrap().is_some());
    }

    #[test]
    fn out_of_order_messages_are_errors() {
        let mut a = Assembler::new(1000);
        assert_eq!(
            a.binary(Bytes::from_static(&[1])).unwrap_err(),
            AssembleError::UnexpectedBinary
        );
        a.text(r#"51-["m",{"_placeholder":true,"num":0}]"#).unwrap();
        assert_eq!(
            a.text(r#"2["x"]"#).unwrap_err(),
            AssembleError::UnexpectedText
        );
    }

    #[test]
    fn placeholder_beyond_attachments_is_rejected() {
        let mut a = Assembler::new(1000);
        a.text(r#"51-["m",{"_placeholder":true,"num":3}]"#).unwrap();
        assert_eq!(
            a.binary(Bytes::from_static(&[1])).unwrap_err(),
            AssembleError::BadPlaceholder
        );
    }

    #[test]
    fn attachments_are_bounded_in_size() {
        let mut a = Assembler::new(3);
        a.text(r#"52-["m",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
            .unwrap();
        a.binary(Bytes::from_static(&[1, 2])).unwrap();
        assert_eq!(
            a.binary(Bytes::from_static(&[3, 4])).unwrap_err(),
            AssembleError::TooLarge
        );
    }
}
