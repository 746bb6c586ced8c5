//! Any Host, Origin, Sec-Fetch-Site and Authorization through the router: refusals are the JSON
//! error body, another site's page and a request without the token never reach a route.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| milvus_cdc_fuzz::api_headers(data));
