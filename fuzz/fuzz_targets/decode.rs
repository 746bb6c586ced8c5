//! Any MQ payload: decoding and capturing either succeed or return an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| milvus_cdc_fuzz::decode(data));
