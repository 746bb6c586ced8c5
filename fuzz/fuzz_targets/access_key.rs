//! Any key under the credential prefix through access control's classifier: never a panic,
//! never an event for the built-in role or user, an event names the key's segments.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| milvus_cdc_fuzz::access_key(data));
