//! API key parsing: any string gives a key or a format error, never a panic; a parsed key
//! encodes back to the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenantd::auth::api_key::ApiKeyToken;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = ApiKeyToken::parse(text) {
        assert_eq!(key.encode(), text, "a parsed key must encode to the same text");
    }
});
