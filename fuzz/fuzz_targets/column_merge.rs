//! Any columns of consecutive inserts through the applier's merge: the merged column holds
//! the rows of both, none lost or doubled; a refused merge changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| milvus_cdc_fuzz::column_merge(data));
