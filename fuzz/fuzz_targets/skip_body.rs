//! Any body of `POST /v1/tasks/{id}/skip`, through the router in process: a JSON reply,
//! an error status the client caused, a body that is not JSON refused before the task is read.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| milvus_cdc_fuzz::skip_body(data));
