//! Response heads on arbitrary bytes: parsing never panics, and a head rewritten as the
//! gateway relays it parses again to the same status and framing.
#![no_main]

use btp_h1::response;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let head_request = data.first().is_some_and(|b| b & 1 == 1);
    let mut fields = response::fields();
    let Ok(Some(head)) = response::parse(data, &mut fields, head_request) else {
        return;
    };
    assert!(head.len <= data.len());
    let mut again = Vec::new();
    head.write(&mut again, |_| true);
    again.extend_from_slice(b"\r\n");
    let mut fields = response::fields();
    let rebuilt = response::parse(&again, &mut fields, head_request)
        .expect("a rewritten head parses")
        .expect("a rewritten head is whole");
    assert_eq!((rebuilt.status, rebuilt.framing), (head.status, head.framing));
});
