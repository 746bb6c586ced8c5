//! Fault injection for the crash and race tests.
//!
//! - `MILVUS_CDC_CRASH_AT=<name>` makes the process abort the first time it reaches the named
//!   point, exactly as a power cut there would.
//! - `MILVUS_CDC_DELAY_AT=<name>:<milliseconds>` makes it wait that long each time it reaches
//!   the named point, so a test can act in a window that is otherwise too short to hit.

use std::sync::OnceLock;
use std::time::Duration;

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

/// How long to wait at the named point: zero unless `MILVUS_CDC_DELAY_AT` names it. A wait is
/// logged as it begins, so a test acts once the window is open rather than after a guess.
pub fn delay(name: &str) -> Duration {
    static DELAY_AT: OnceLock<Option<(String, Duration)>> = OnceLock::new();
    let delay = DELAY_AT
        .get_or_init(|| {
            let value = std::env::var("MILVUS_CDC_DELAY_AT").ok()?;
            let (point, millis) = value.split_once(':')?;
            Some((
                point.to_owned(),
                Duration::from_millis(millis.parse().ok()?),
            ))
        })
        .as_ref()
        .filter(|(point, _)| point == name)
        .map_or(Duration::ZERO, |(_, delay)| *delay);
    if !delay.is_zero() {
        eprintln!("milvus-cdc: waiting {delay:?} at {name} (MILVUS_CDC_DELAY_AT)");
    }
    delay
}
