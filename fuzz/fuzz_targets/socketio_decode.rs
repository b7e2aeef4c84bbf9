//! Socket.IO decoder and binary reassembly on arbitrary input. The input is a sequence
//! of messages separated by 0xff; a message starting with `t` is text, anything else is
//! a binary attachment. Decoded events must re-encode to text that decodes to the same
//! event.
#![no_main]

use btp_sio::socketio::assemble::Assembler;
use btp_sio::socketio::packet::{self, Body};
use btp_sio::Args;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut assembler = Assembler::new(64 * 1024);
    for message in data.split(|&b| b == 0xff) {
        let result = match message.split_first() {
            Some((b't', text)) => match std::str::from_utf8(text) {
                Ok(text) => {
                    round_trip(text);
                    assembler.text(text)
                }
                Err(_) => continue,
            },
            _ => assembler.binary(Bytes::copy_from_slice(message)),
        };
        if result.is_err() {
            // A real session closes here; start over like a new one.
            assembler = Assembler::new(64 * 1024);
        }
    }
});

fn round_trip(text: &str) {
    let Ok(decoded) = packet::decode(text) else {
        return;
    };
    let Body::Event { name, args } = decoded.body else {
        return;
    };
    if decoded.attachments > 0 {
        return;
    }
    let raw: Vec<String> = args.iter().map(|a| a.get().to_owned()).collect();
    let encoded = packet::event(
        &decoded.nsp,
        decoded.id,
        &name,
        &Args::from_parts(args, Vec::new()),
    );
    let text = std::str::from_utf8(&encoded.text[1..]).expect("utf-8");
    let again = packet::decode(text).expect("re-decode");
    assert_eq!(again.nsp, decoded.nsp);
    assert_eq!(again.id, decoded.id);
    match again.body {
        Body::Event { name: n, args: a } => {
            assert_eq!(n, name);
            let a: Vec<String> = a.iter().map(|v| v.get().to_owned()).collect();
            assert_eq!(a, raw);
        }
        other => panic!("re-decoded {other:?}"),
    }
}
