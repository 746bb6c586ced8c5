//! Any etcd key/values under the source's meta root: every metadata decoder returns metadata
//! or an error, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| milvus_cdc_fuzz::etcd_meta(data));
