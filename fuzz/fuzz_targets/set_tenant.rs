//! The one statement where a value enters SQL text: for any 16 bytes, the tenant setting
//! is exactly the fixed prefix, 36 characters of `[0-9a-f-]` in canonical UUID form, and
//! the closing quote.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenantd::db::tenant_tx::{SET_TENANT_PREFIX, set_tenant_statement};
use uuid::Uuid;

fuzz_target!(|data: [u8; 16]| {
    let tenant_id = Uuid::from_bytes(data);
    let statement = set_tenant_statement(tenant_id);
    let value = statement
        .strip_prefix(SET_TENANT_PREFIX)
        .and_then(|rest| rest.strip_suffix('\''))
        .expect("prefix, value, closing quote");
    assert_eq!(value.len(), 36);
    assert!(value.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f' | b'-')));
    assert_eq!(Uuid::try_parse(value).ok(), Some(tenant_id));
    assert_eq!(value, tenant_id.hyphenated().to_string());
});
