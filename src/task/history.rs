//! Lag over time for the status page: each task's apply lag and applied rows, sampled every
//! few seconds, kept for the last 15 minutes (in memory: a restart starts a new chart).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

/// How long samples are kept.
pub const WINDOW_MS: u64 = 15 * 60 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Sample {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// The task's largest apply lag over its vchannels; null before anything was read.
    pub lag_seconds: Option<f64>,
    /// Rows the task had applied since the process started.
    pub rows_applied: u64,
}

#[derive(Default)]
pub struct LagHistory {
    samples: Mutex<HashMap<String, VecDeque<Sample>>>,
}

impl LagHistory {
    pub fn record(&self, task: &str, sample: Sample) {
        let Ok(mut samples) = self.samples.lock() else {
            return;
        };
        let series = samples.entry(task.to_owned()).or_default();
        series.push_back(sample);
        while series
            .front()
            .is_some_and(|s| s.at_ms + WINDOW_MS < sample.at_ms)
        {
            series.pop_front();
        }
    }

    pub fn of(&self, task: &str) -> Vec<Sample> {
        self.samples
            .lock()
            .ok()
            .and_then(|s| s.get(task).map(|series| series.iter().copied().collect()))
            .unwrap_or_default()
    }

    /// Rows per second between the last two samples.
    pub fn rows_per_second(&self, task: &str) -> Option<f64> {
        let samples = self.samples.lock().ok()?;
        let series = samples.get(task)?;
        let (last, before) = (series.back()?, series.get(series.len().checked_sub(2)?)?);
        let seconds = last.at_ms.checked_sub(before.at_ms)? as f64 / 1000.0;
        (seconds > 0.0)
            .then(|| last.rows_applied.saturating_sub(before.rows_applied) as f64 / seconds)
    }

    pub fn forget(&self, task: &str) {
        if let Ok(mut samples) = self.samples.lock() {
            samples.remove(task);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: u64, rows_applied: u64) -> Sample {
        Sample {
            at_ms,
            lag_seconds: Some(1.0),
            rows_applied,
        }
    }

    #[test]
    fn samples_older_than_the_window_are_dropped() {
        let history = LagHistory::default();
        history.record("t", sample(0, 0));
        history.record("t", sample(WINDOW_MS, 10));
        history.record("t", sample(WINDOW_MS + 1, 20));
        let kept: Vec<u64> = history.of("t").iter().map(|s| s.at_ms).collect();
        assert_eq!(kept, [WINDOW_MS, WINDOW_MS + 1]);
    }

    #[test]
    fn throughput_comes_from_the_last_two_samples() {
        let history = LagHistory::default();
        assert_eq!(history.rows_per_second("t"), None);
        history.record("t", sample(1_000, 100));
        assert_eq!(history.rows_per_second("t"), None);
        history.record("t", sample(3_000, 500));
        assert_eq!(history.rows_per_second("t"), Some(200.0));
    }
}
