//! Chunked bodies on arbitrary bytes, fed in arbitrary pieces: never a panic, never more
//! bytes taken than given, and a body that ends re-encodes to chunks that read back to
//! the same data (what the gateway forwards is what it read).
#![no_main]

use btp_h1::body::{put_chunk, Body, Framing, LAST_CHUNK};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, bytes)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 16) + 1;
    let mut body = Body::request(Framing::Chunked);
    let mut read = Vec::new();
    let mut done = false;
    for piece in bytes.chunks(step) {
        let Ok(fed) = body.feed(piece, |d| read.extend_from_slice(d)) else {
            return;
        };
        assert!(fed.used <= piece.len());
        assert!(fed.used == piece.len() || fed.done);
        if fed.done {
            done = true;
            break;
        }
    }
    if !done {
        return;
    }
    let mut encoded = Vec::new();
    put_chunk(&mut encoded, &read);
    encoded.extend_from_slice(LAST_CHUNK);
    let mut again = Body::request(Framing::Chunked);
    let mut back = Vec::new();
    let fed = again
        .feed(&encoded, |d| back.extend_from_slice(d))
        .expect("canonical chunks read back");
    assert!(fed.done && fed.used == encoded.len());
    assert_eq!(back, read);
});
