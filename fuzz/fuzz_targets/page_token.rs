//! Page token decoding: any string gives a cursor or INVALID_ARGUMENT, never a panic; a
//! decoded token is bound to the scope and filter it was checked against.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenantd::domain::page::{PageToken, fingerprint};
use uuid::Uuid;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let scope = Uuid::from_u128(0x0193_a8f2_7c1e_7d3a_9b1e_5f2a_3c4d_5e6f);
    let filter = fingerprint("state=active");
    if let Ok(Some(after)) = PageToken::decode(text, scope, filter) {
        let again = PageToken { scope, filter, after }.encode();
        assert_eq!(PageToken::decode(&again, scope, filter).ok(), Some(Some(after)));
    }
    let _ = PageToken::decode(text, Uuid::nil(), fingerprint(""));
});
