//! 20,000 random and damaged heads and bodies (the fuzz targets' properties, run by the
//! test suite): no parser panics, a body never takes more bytes than it is given, and
//! what the gateway would forward reads back the same. Each parser's accepting state is
//! reached more than 1,000 times, so the inputs test more than their first bytes.

use btp_h1::body::{put_chunk, Body, Framing, LAST_CHUNK};
use btp_h1::{request, response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn pick<'p>(rng: &mut StdRng, pieces: &[&'p [u8]]) -> &'p [u8] {
    pieces[rng.random_range(0..pieces.len())]
}

fn chunked_body(rng: &mut StdRng) -> Vec<u8> {
    let mut body = Vec::new();
    for _ in 0..rng.random_range(0..4) {
        let size = rng.random_range(1..20usize);
        body.extend_from_slice(format!("{size:x}").as_bytes());
        body.extend_from_slice(pick(rng, &[b"", b";a=b", b";x"]));
        body.extend_from_slice(b"\r\n");
        body.extend(std::iter::repeat_n(b'z', size));
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n");
    body.extend_from_slice(pick(rng, &[b"", b"x-sum: 1\r\n", b"a: b\r\nc: d\r\n"]));
    body.extend_from_slice(b"\r\n");
    body
}

fn request_head(rng: &mut StdRng) -> Vec<u8> {
    let mut head = pick(rng, &[b"GET ", b"HEAD ", b"DELETE ", b"POST ", b"PATCH "]).to_vec();
    head.extend_from_slice(pick(rng, &[b"/api/x", b"/", b"/socket.io/?EIO=4", b"*"]));
    head.extend_from_slice(pick(
        rng,
        &[b" HTTP/1.1\r\n", b" HTTP/1.1\r\n", b" HTTP/1.0\r\n"],
    ));
    if rng.random_bool(0.85) {
        head.extend_from_slice(b"Host: a\r\n");
    }
    for _ in 0..rng.random_range(0..4) {
        head.extend_from_slice(pick(
            rng,
            &[
                b"Host: b\r\n",
                b"Content-Length: 0\r\n",
                b"Content-Length: 5\r\n",
                b"Transfer-Encoding: chunked\r\n",
                b"Transfer-Encoding: gzip\r\n",
                b"Connection: close, upgrade\r\n",
                b"Connection: keep-alive\r\n",
                b"Expect: 100-continue\r\n",
                b"Accept: */*\r\n",
            ],
        ));
    }
    head.extend_from_slice(b"\r\n");
    head
}

fn maybe_damaged(rng: &mut StdRng, mut bytes: Vec<u8>) -> Vec<u8> {
    if !bytes.is_empty() && rng.random() {
        let at = rng.random_range(0..bytes.len());
        bytes[at] = pick(rng, &[b"\r", b"\n", b";", b"g", b"0", b"\xff", b"\0", b" "])[0];
    }
    bytes
}

#[test]
fn random_and_damaged_inputs_never_panic_and_what_is_forwarded_reads_back_the_same() {
    let mut rng = StdRng::seed_from_u64(0x5eed_b7b0);
    let (mut heads, mut answers, mut ended) = (0, 0, 0);
    for _ in 0..20_000 {
        let head = request_head(&mut rng);
        let head = maybe_damaged(&mut rng, head);
        let mut fields = request::fields();
        if let request::Parsed::Head(parsed) = request::parse(&head, &mut fields, 16 * 1024) {
            heads += 1;
            assert!(parsed.len <= head.len());
        }

        let mut answer = pick(&mut rng, &[b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 204 x\r\n"]).to_vec();
        for _ in 0..rng.random_range(0..4) {
            answer.extend_from_slice(pick(
                &mut rng,
                &[
                    b"content-length: 3\r\n",
                    b"content-length: x\r\n",
                    b"transfer-encoding: chunked\r\n",
                    b"connection: close\r\n",
                    b"x: y\r\n",
                ],
            ));
        }
        answer.extend_from_slice(b"\r\n");
        let answer = maybe_damaged(&mut rng, answer);
        let mut fields = response::fields();
        if let Ok(Some(parsed)) = response::parse(&answer, &mut fields, rng.random()) {
            answers += 1;
            assert!(parsed.len <= answer.len());
        }

        let body = chunked_body(&mut rng);
        let whole = body.len();
        let mut bytes = maybe_damaged(&mut rng, body);
        bytes.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        for framing in [Framing::Chunked, Framing::Length(7), Framing::UntilClose] {
            let mut body = Body::request(framing);
            let (mut used, mut data) = (0, Vec::new());
            for piece in bytes.chunks(rng.random_range(1..9)) {
                let Ok(fed) = body.feed(piece, |d| data.extend_from_slice(d)) else {
                    break;
                };
                assert!(fed.used <= piece.len());
                // A body that stops inside a piece has ended there.
                assert!(fed.used == piece.len() || fed.done, "{framing:?}");
                used += fed.used;
                if fed.done {
                    break;
                }
            }
            if framing == Framing::Chunked && body.is_done() {
                ended += 1;
                assert!(used <= whole, "a chunked body ran into what follows it");
                let mut again = Vec::new();
                put_chunk(&mut again, &data);
                again.extend_from_slice(LAST_CHUNK);
                let mut back = Vec::new();
                let fed = Body::request(Framing::Chunked)
                    .feed(&again, |d| back.extend_from_slice(d))
                    .expect("canonical chunks read back");
                assert!(fed.done);
                assert_eq!(back, data);
            }
        }
    }
    assert!(
        heads > 1000 && answers > 1000 && ended > 1000,
        "{heads} {answers} {ended}"
    );
}
