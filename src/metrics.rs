//! Process-wide counters, rendered as Prometheus text at `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub struct Metrics {
    pub messages_read: Counter,
    pub messages_rejected: Counter,
    pub messages_duplicate: Counter,
    pub changes_staged: Counter,
    pub batches_applied: Counter,
    pub rows_applied: Counter,
    pub target_retries: Counter,
}

pub static METRICS: Metrics = Metrics {
    messages_read: Counter::new(),
    messages_rejected: Counter::new(),
    messages_duplicate: Counter::new(),
    changes_staged: Counter::new(),
    batches_applied: Counter::new(),
    rows_applied: Counter::new(),
    target_retries: Counter::new(),
};

pub fn render() -> String {
    let m = &METRICS;
    let mut out = String::new();
    for (name, help, counter) in [
        (
            "milvus_cdc_messages_read_total",
            "Messages fetched from the source MQ.",
            &m.messages_read,
        ),
        (
            "milvus_cdc_messages_rejected_total",
            "Messages that did not decode or capture; skipped and logged.",
            &m.messages_rejected,
        ),
        (
            "milvus_cdc_messages_duplicate_total",
            "Data messages byte-identical to an earlier one of their channel; skipped.",
            &m.messages_duplicate,
        ),
        (
            "milvus_cdc_changes_staged_total",
            "Changes written to the journal.",
            &m.changes_staged,
        ),
        (
            "milvus_cdc_batches_applied_total",
            "Batches the target acknowledged.",
            &m.batches_applied,
        ),
        (
            "milvus_cdc_rows_applied_total",
            "Rows inserted or deleted on the target.",
            &m.rows_applied,
        ),
        (
            "milvus_cdc_target_retries_total",
            "Target calls retried after a transient error.",
            &m.target_retries,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            counter.get()
        );
    }
    out
}
