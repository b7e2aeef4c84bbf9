//! Engine.IO decoders on arbitrary bytes: a long-polling payload and a single text
//! packet must decode or fail cleanly, and what decodes must survive re-encoding.
#![no_main]

use btp_sio::engine::packet::{self, Frame, Message, Packet};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    let _ = packet::decode_text(bytes.clone());
    let Ok(packets) = packet::decode_payload(bytes) else {
        return;
    };
    // Messages re-encoded as a payload decode to the same messages.
    let messages: Vec<Message> = packets
        .into_iter()
        .filter_map(|p| match p {
            Packet::Message(m) => Some(m),
            _ => None,
        })
        .filter(|m| match m {
            // A text containing the separator cannot be framed in a payload.
            Message::Text(t) => !t.contains(&packet::RECORD_SEPARATOR),
            Message::Binary(_) => true,
        })
        .collect();
    if messages.is_empty() {
        return;
    }
    let frames: Vec<Frame> = messages.iter().cloned().map(packet::message).collect();
    let again = packet::decode_payload(packet::encode_payload(&frames)).expect("re-decode");
    let again: Vec<Message> = again
        .into_iter()
        .map(|p| match p {
            Packet::Message(m) => m,
            other => panic!("re-decoded {other:?}"),
        })
        .collect();
    assert_eq!(again, messages);
});
