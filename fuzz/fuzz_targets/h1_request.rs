//! Request heads on arbitrary bytes: parsing never panics, a head never claims more bytes
//! than it was given, and what parses rebuilt canonically (as the gateway forwards it)
//! parses again to the same framing.
#![no_main]

use btp_h1::request::{self, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut fields = request::fields();
    let Parsed::Head(head) = request::parse(data, &mut fields, 16 * 1024) else {
        return;
    };
    assert!(head.len <= data.len());
    let mut again = format!("{} {} HTTP/1.1\r\n", head.method, head.target).into_bytes();
    for h in head.headers {
        btp_h1::put_header(&mut again, h.name.as_bytes(), h.value);
    }
    if head.version == request::Version::Http10 && head.host.is_none() {
        again.extend_from_slice(b"Host: x\r\n");
    }
    again.extend_from_slice(b"\r\n");
    let mut fields = request::fields();
    match request::parse(&again, &mut fields, 64 * 1024) {
        Parsed::Head(rebuilt) => assert_eq!(rebuilt.body, head.body),
        // An HTTP/1.0 head may carry what 1.1 refuses; nothing else may change.
        Parsed::Refused(_) => assert_eq!(head.version, request::Version::Http10),
        Parsed::Partial => panic!("a rebuilt head is whole"),
    }
});
