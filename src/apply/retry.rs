//! How target calls are retried, and when a retry is in doubt.

use std::sync::atomic::{AtomicBool, Ordering};

use super::{ApplierSettings, TargetError};
use crate::health::Health;
use crate::metrics::{ErrorKind, METRICS};

/// How target calls are retried.
pub(super) struct Retries<'r> {
    pub(super) task: &'r str,
    pub(super) settings: &'r ApplierSettings,
    /// Set when the task stops: retries give up so the thread can exit promptly.
    pub(super) stop: &'r AtomicBool,
    /// Where a fault being retried is shown.
    pub(super) health: &'r Health,
}

impl Retries<'_> {
    /// Runs `call` until it succeeds, fails permanently, runs out of attempts or the task stops.
    /// A target that refuses every call ([`TargetError::Blocked`]) is retried as an outage.
    /// The second argument tells the call whether the target may already have its data: after a
    /// transient failure it may (the request can have landed before the connection broke).
    ///
    /// Invariant: every retry is in doubt, so it must not add rows twice.
    pub(super) fn run<T>(
        &self,
        target: &mut T,
        mut call: impl FnMut(&mut T, bool) -> Result<(), TargetError>,
    ) -> Result<(), TargetError> {
        use backon::{BlockingRetryable, ExponentialBuilder};
        let (task, stop, health) = (self.task, self.stop, self.health);
        let mut in_doubt = false;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.settings.retry_initial)
            .with_max_delay(self.settings.retry_max)
            .with_max_times(self.settings.retry_attempts);
        (|| {
            let result = call(target, in_doubt);
            in_doubt = true;
            result
        })
        .retry(backoff)
        .sleep(std::thread::sleep)
        .when(|e| e.retried() && !stop.load(Ordering::Relaxed))
        .notify(|err, delay| {
            METRICS.target_retries.inc();
            METRICS.error(match err {
                TargetError::Blocked(_) => ErrorKind::TargetBlocked,
                _ => ErrorKind::TargetTransient,
            });
            health.problem("target", err);
            tracing::warn!(task, %err, ?delay, "target call failed; retrying");
        })
        .call()
        .inspect(|()| health.resolved("target"))
    }
}
