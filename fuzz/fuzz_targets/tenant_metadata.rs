//! Tenant metadata and credentials as the tenant layer reads them, before any I/O: any
//! bytes in `x-tenant-id`, `x-tenant-slug` and `authorization` must give a result or a
//! typed error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenantd::auth::{PlatformAuth, credential};
use tenantd::config::SecretString;
use tenantd::tenancy::selector;

fuzz_target!(|data: &[u8]| {
    // Split the input into up to three header values at 0xFF bytes.
    let mut parts = data.split(|byte| *byte == 0xFF);
    let mut headers = http::HeaderMap::new();
    for name in ["x-tenant-id", "x-tenant-slug", "authorization"] {
        if let Some(value) = parts.next().and_then(|bytes| http::HeaderValue::from_bytes(bytes).ok()) {
            headers.append(name, value);
        }
    }
    // The rest, if any, repeats x-tenant-id.
    if let Some(value) = parts.next().and_then(|bytes| http::HeaderValue::from_bytes(bytes).ok()) {
        headers.append("x-tenant-id", value);
    }
    let _ = selector::parse(&headers);
    let _ = selector::parse_optional(&headers);
    if let Ok(auth) = PlatformAuth::new(SecretString::from("fuzz-platform-token")) {
        let _ = credential(&headers, &auth);
    }
});
