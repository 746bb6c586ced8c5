//! Any bytes read back from the journal: a record decodes or is reported corrupt, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| milvus_cdc_fuzz::journal_record(data));
