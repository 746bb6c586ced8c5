//! Any etcd key change through the metadata watcher's classifier: an event, nothing or an
//! error, never a panic; an event says what the value says.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| milvus_cdc_fuzz::meta_watch(data));
