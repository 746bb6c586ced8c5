//! Any create body or task id of the REST API, through the router in process: a JSON reply,
//! an error status the client caused (4xx) unless the body passed validation, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| milvus_cdc_fuzz::rest_body(data));
