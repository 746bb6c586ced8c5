//! Crash injection for the crash tests: `MILVUS_CDC_CRASH_AT=<name>` makes the process abort the
//! first time it reaches the named point, exactly as a power cut there would.

use std::sync::OnceLock;

pub fn hit(name: &str) {
    static CRASH_AT: OnceLock<Option<String>> = OnceLock::new();
    if CRASH_AT
        .get_or_init(|| std::env::var("MILVUS_CDC_CRASH_AT").ok())
        .as_deref()
        == Some(name)
    {
        eprintln!("milvus-cdc: crashing at {name} (MILVUS_CDC_CRASH_AT)");
        std::process::abort();
    }
}
