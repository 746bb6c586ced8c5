//! What is going wrong with a running task right now (transient faults it is retrying), so
//! `get` can show it while the task stays Running, with since when.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

#[derive(Default, Debug)]
pub struct Health {
    /// Per part of the task (`target`, or a channel name): its current problem.
    problems: Mutex<BTreeMap<String, Problem>>,
    /// Per channel: when (Unix ms) its reader last found nothing more to read, with all it had
    /// read staged.
    at_end: Mutex<BTreeMap<String, u64>>,
    /// The newest source timestamp of an insert or delete the task's readers staged since it
    /// started: what a switchover proves no write passed its fence by.
    newest_data_staged: AtomicU64,
}

#[derive(Debug)]
struct Problem {
    what: String,
    /// When the part first failed: a retry that fails again keeps it.
    since: SystemTime,
}

impl Health {
    pub fn problem(&self, part: &str, problem: impl ToString) {
        self.problem_at(part, problem, SystemTime::now());
    }

    fn problem_at(&self, part: &str, problem: impl ToString, now: SystemTime) {
        if let Ok(mut problems) = self.problems.lock() {
            let what = problem.to_string();
            problems
                .entry(part.to_owned())
                .and_modify(|p| p.what.clone_from(&what))
                .or_insert(Problem { what, since: now });
        }
    }

    pub fn resolved(&self, part: &str) {
        if let Ok(mut problems) = self.problems.lock() {
            problems.remove(part);
        }
    }

    /// The reader of `channel` has staged all it read and found nothing more, at `unix_ms`.
    pub fn at_end(&self, channel: &str, unix_ms: u64) {
        if let Ok(mut at_end) = self.at_end.lock() {
            at_end.insert(channel.to_owned(), unix_ms);
        }
    }

    /// A reader staged an insert or delete stamped `ts`.
    pub fn data_staged(&self, ts: u64) {
        self.newest_data_staged.fetch_max(ts, Ordering::Relaxed);
    }

    /// The newest timestamp of an insert or delete staged since the task started (0: none).
    pub fn newest_data_staged(&self) -> u64 {
        self.newest_data_staged.load(Ordering::Relaxed)
    }

    /// When each channel's reader was last at the end of its channel (Unix ms).
    pub fn ends(&self) -> BTreeMap<String, u64> {
        self.at_end.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// `part: problem (since <UTC time>)` joined with `; `, or None when all is well.
    pub fn summary(&self) -> Option<String> {
        let problems = self.problems.lock().ok()?;
        if problems.is_empty() {
            return None;
        }
        Some(
            problems
                .iter()
                .map(|(part, p)| {
                    let since = humantime::format_rfc3339_seconds(p.since);
                    format!("{part}: {} (since {since})", p.what)
                })
                .collect::<Vec<_>>()
                .join("; "),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::Health;

    #[test]
    fn problems_are_listed_by_part_with_since_when_until_resolved() {
        let health = Health::default();
        assert_eq!(health.summary(), None);
        let noon = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_212_800);
        health.problem_at("target", "unavailable", noon);
        health.problem_at("dml_0", "broker down", noon + Duration::from_secs(3));
        health.problem_at(
            "target",
            "still unavailable",
            noon + Duration::from_secs(60),
        );
        assert_eq!(
            health.summary().as_deref(),
            Some(
                "dml_0: broker down (since 2026-12-02T12:00:03Z); \
                 target: still unavailable (since 2026-12-02T12:00:00Z)"
            )
        );
        health.resolved("dml_0");
        health.resolved("target");
        assert_eq!(health.summary(), None);
    }
}
