//! Any MQ payload: decoding and capturing either succeed or return an error, never panic.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use milvus_cdc::model::Scope;
use milvus_cdc::source::capture::capture;
use milvus_cdc::source::decode::decode;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = decode(data) {
        let _ = capture(
            message,
            "by-dev-rootcoord-dml_0",
            &Scope::all(),
            &mut HashMap::new(),
        );
    }
});
