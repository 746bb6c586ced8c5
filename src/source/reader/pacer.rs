//! Pacing a reader against the journal's cache of recent rows.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::journal::Journal;

/// Keeps a reader within the journal's cache of recent rows while an applier drains it, so the
/// applier takes rows from memory instead of reading them back from disk.
///
/// It never holds a reader back for long: a wait ends once `patience` passes with no rows
/// leaving the cache (a target that is down, a barrier waiting for this very channel), and after
/// such a wait the reader waits again only once rows have left the cache since. Staging at full
/// speed then keeps the backlog in the journal rather than in the broker's retention. No wait
/// lasts longer than `longest` either, so a busy applier of another task cannot starve a reader.
pub(super) struct Pacer {
    patience: Duration,
    longest: Duration,
    /// When a wait last ended without room.
    gave_up: Option<Instant>,
}

impl Default for Pacer {
    fn default() -> Self {
        Self {
            patience: Duration::from_secs(1),
            longest: Duration::from_secs(5),
            gave_up: None,
        }
    }
}

impl Pacer {
    /// Waits, while the cache is being drained, until it has room for a stage of `bytes` and
    /// for two more staged meanwhile by other readers: a stage that does not fit ends the
    /// cache's window, and the applier reads the rows after it from disk.
    pub(super) fn wait_for_room(&mut self, journal: &Journal, bytes: usize, stop: &AtomicBool) {
        let began = Instant::now();
        loop {
            let seen = journal.batches_applied();
            let room = journal.recent_room();
            if room.free_bytes >= 3 * bytes || room.held_bytes == 0 || stop.load(Ordering::Relaxed)
            {
                return;
            }
            if self
                .gave_up
                .is_some_and(|gave_up| room.drained.is_none_or(|drained| drained <= gave_up))
            {
                return;
            }
            let progress = room.drained.map_or(began, |drained| drained.max(began));
            if progress.elapsed() >= self.patience || began.elapsed() >= self.longest {
                self.gave_up = Some(Instant::now());
                return;
            }
            journal.wait_for_applied(seen, super::RECHECK);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    use super::Pacer;
    use crate::journal::{InFlightBatch, Journal, TaskRun};
    use crate::model::{
        Change, CollectionRef, DeleteBatch, MqPosition, PrimaryKeys, RowPosition, StagedChange,
    };

    /// A cache of 10 kB; each staged row takes about 850 bytes of it.
    fn journal() -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open_with(dir.path(), 10_000).unwrap();
        (dir, journal)
    }

    /// Stages the row at `ts` (the `n`th of the channel).
    fn stage(journal: &Journal, ts: u64, n: i64) {
        let change = Change::Delete(DeleteBatch {
            collection: CollectionRef {
                id: 1,
                db_name: "default".into(),
                name: "c".into(),
            },
            partition: String::new(),
            keys: PrimaryKeys::Int64((0..100).collect()),
        });
        let staged = StagedChange {
            vchannel: "v".into(),
            ts,
            change,
        };
        let next = MqPosition::Kafka { next_offset: n + 1 };
        journal
            .stage(&TaskRun::unstarted("t"), "p", &[staged], next, ts)
            .unwrap();
    }

    /// The applier applied the rows through `ts` (the `n`th of the channel).
    fn drain(journal: &Journal, ts: u64, n: u64) {
        let batch = InFlightBatch {
            ends: vec![("v".into(), RowPosition { ts, seq: n })],
        };
        journal
            .commit_batch(&TaskRun::unstarted("t"), &batch, false)
            .unwrap();
    }

    /// Room for a stage this big never exists while a row is cached.
    const NO_ROOM: usize = 5_000;

    fn pacer(patience_ms: u64, longest_ms: u64) -> Pacer {
        Pacer {
            patience: Duration::from_millis(patience_ms),
            longest: Duration::from_millis(longest_ms),
            gave_up: None,
        }
    }

    /// How long `pacer` waits for room for a stage of `bytes`, while `meanwhile` runs beside it.
    fn wait(
        pacer: &mut Pacer,
        journal: &Journal,
        bytes: usize,
        meanwhile: impl FnOnce() + Send,
    ) -> Duration {
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(meanwhile);
            let started = Instant::now();
            pacer.wait_for_room(journal, bytes, &stop);
            started.elapsed()
        })
    }

    #[test]
    fn a_reader_waits_until_the_applier_makes_room() {
        let (_dir, journal) = journal();
        stage(&journal, 10, 0);
        let mut pacer = pacer(10_000, 20_000);
        let waited = wait(&mut pacer, &journal, NO_ROOM, || {
            std::thread::sleep(Duration::from_millis(200));
            drain(&journal, 10, 0);
        });
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        assert!(waited < Duration::from_secs(10), "{waited:?}");
        assert_eq!(journal.recent_room().held_bytes, 0);
    }

    #[test]
    fn a_reader_waits_once_for_an_applier_that_drains_nothing_and_again_once_it_drains() {
        let (_dir, journal) = journal();
        stage(&journal, 10, 0);
        stage(&journal, 20, 1);
        let mut pacer = pacer(300, 20_000);

        let first = wait(&mut pacer, &journal, NO_ROOM, || {});
        assert!(first >= Duration::from_millis(300), "{first:?}");
        let again = wait(&mut pacer, &journal, NO_ROOM, || {});
        assert!(
            again < Duration::from_millis(300),
            "no wait for a stalled applier: {again:?}"
        );

        drain(&journal, 10, 0);
        let after_a_drain = wait(&mut pacer, &journal, NO_ROOM, || {});
        assert!(
            after_a_drain >= Duration::from_millis(300),
            "{after_a_drain:?}"
        );
    }

    #[test]
    fn no_wait_outlasts_the_longest_even_while_rows_keep_leaving() {
        let (_dir, journal) = journal();
        for n in 0..10 {
            stage(&journal, 10 * (n + 1), n as i64);
        }
        let mut pacer = pacer(10_000, 300);
        let waited = wait(&mut pacer, &journal, 10_000, || {
            for n in 0..9 {
                std::thread::sleep(Duration::from_millis(50));
                drain(&journal, 10 * (n + 1), n);
            }
        });
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        assert!(waited < Duration::from_secs(10), "{waited:?}");
    }

    #[test]
    fn a_reader_with_room_does_not_wait() {
        let (_dir, journal) = journal();
        stage(&journal, 10, 0);
        let mut pacer = pacer(10_000, 20_000);
        let waited = wait(&mut pacer, &journal, 1_000, || {});
        assert!(waited < Duration::from_secs(10), "{waited:?}");
        assert!(pacer.gave_up.is_none());
    }
}
