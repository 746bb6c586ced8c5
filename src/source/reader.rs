//! The reader of one physical channel for one task: fetch, decode, capture, stage.
//!
//! Crash behaviour: messages are staged together with the offset after them in one journal
//! transaction ([`Journal::stage`]); a crash anywhere loses only uncommitted work, which is
//! fetched again from the stored offset on restart. A message that does not decode is logged
//! with its channel and offset, counted, and passed over; it never stops the channel.
//! The redelivery rule, enforced here: a message is staged only if its id is past the
//! channel's position ([`MqPosition::admits`]: a Kafka offset at or after the next offset, a
//! Pulsar MessageId after the last one read, by ledger, entry and batch index). The position
//! starts at the one stored in the journal and moves past every message read, so a broker or
//! client that delivers a message again (a Pulsar redelivery, a Kafka re-fetch) cannot get it
//! staged twice; the repeat is counted in `milvus_cdc_messages_duplicate_total`.
//! A channel that cannot be opened (a topic that does not exist yet, a broker that is down) is
//! waited for and retried until the reader is stopped.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracing::{info, warn};
use xxhash_rust::xxh3::xxh3_64;

use super::capture::{Captured, CollectionLookup, capture};
use super::decode::{SourceMessage, decode, timestamp};
use super::mq::{ChannelSource, MessageQueue, MqError};
use crate::journal::{Journal, JournalError};
use crate::metrics::{ErrorKind, METRICS};
use crate::model::Scope;
use crate::model::is_replicate_topic;
use crate::model::{MqPosition, StagedChange};

#[derive(Debug, Clone)]
pub struct ReaderSettings {
    /// Group commit: a staging transaction closes at this many messages, bytes or this delay.
    pub max_batch_messages: usize,
    pub max_batch_bytes: usize,
    pub max_batch_delay: Duration,
    /// Past this many journal bytes the reader waits for the applier to drain.
    pub journal_cap_bytes: u64,
}

impl Default for ReaderSettings {
    fn default() -> Self {
        Self {
            max_batch_messages: 2_000,
            max_batch_bytes: 8 << 20,
            max_batch_delay: Duration::from_millis(5),
            journal_cap_bytes: 1 << 30,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Mq(#[from] MqError),
    #[error("no stored source offset for channel {0}: the task was not seeded")]
    NotSeeded(String),
}

pub struct ChannelReader<'a> {
    pub task: &'a str,
    pub pchannel: &'a str,
    pub queue: &'a dyn MessageQueue,
    pub scope: &'a Scope,
    pub journal: &'a Journal,
    pub settings: &'a ReaderSettings,
    pub stop: Arc<AtomicBool>,
}

impl ChannelReader<'_> {
    pub fn run(&self, lookup: &mut dyn CollectionLookup) -> Result<(), ReaderError> {
        let offset = self
            .journal
            .source_offset(self.task, self.pchannel)?
            .ok_or_else(|| ReaderError::NotSeeded(self.pchannel.to_owned()))?;
        info!(task = self.task, channel = self.pchannel, from = %offset.next, "reading");
        let Some(mut consumer) = self.open(&offset.next) else {
            return Ok(());
        };

        let mut pending = PendingStage::default();
        let mut position = offset.next;
        let mut tick = offset.tick;
        let mut recent = RecentPayloads::default();
        let mut pacer = Pacer::default();
        // The replicate-msg topic carries no TimeTicks: each event's own stamp is its tick, so
        // what is staged there is applicable at once, in the order of the topic.
        let stamps_are_ticks = is_replicate_topic(self.pchannel);

        while !self.stop.load(Ordering::Relaxed) {
            if pending.since.is_none() {
                self.wait_below_cap()?;
                pacer.wait_for_room(self.journal, self.settings.max_batch_bytes, &self.stop);
            }
            let timeout = if pending.since.is_some() {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(100)
            };
            // Clients reconnect by themselves, but one that lost its position (a Kafka offset
            // out of range, a closed Pulsar reader) stays lost: the error ends this run and the
            // task starts over from the stored position, dropping what was pending.
            let fetched = consumer.poll(timeout)?;
            let idle = fetched.is_none();
            if let Some(message) = fetched {
                // The redelivery rule (module doc): ids only grow along a channel, so one the
                // position does not admit was read already (staged, or pending in this very
                // batch) and must not be staged again.
                if !position.admits(&message.id).map_err(MqError::from)? {
                    METRICS.messages_duplicate.inc();
                    warn!(
                        task = self.task,
                        channel = self.pchannel,
                        id = %message.id,
                        %position,
                        "message skipped: it was read already"
                    );
                    continue;
                }
                position = MqPosition::after(&message.id);
                pending.fetched(message.payload.len());
                METRICS.messages_read.inc();
                let decoded = decode(&message.payload);
                if matches!(
                    decoded,
                    Ok(SourceMessage::Insert(_) | SourceMessage::Delete(_))
                ) && !recent.first_time(&message.payload)
                {
                    METRICS.messages_duplicate.inc();
                    warn!(
                        task = self.task,
                        channel = self.pchannel,
                        id = %message.id,
                        "message skipped: byte-identical to an earlier message of this channel"
                    );
                    continue;
                }
                // The proxy runs some of these requests in different queues, so one may reach
                // the topic after a later-stamped one. Staged at its own stamp it could sort
                // behind an event already applied and never be read: it is staged no earlier
                // than the newest stamp of the topic instead (it then waits a little longer).
                let floor = tick;
                if stamps_are_ticks && let Ok(message) = &decoded {
                    tick = tick.max(timestamp(message));
                }
                match decoded.map_err(|e| e.to_string()).and_then(|decoded| {
                    capture(decoded, self.pchannel, self.scope, lookup).map_err(|e| e.to_string())
                }) {
                    Ok(Captured::Changes(changes)) if stamps_are_ticks => {
                        pending.changes.extend(not_before(changes, floor));
                    }
                    Ok(Captured::Changes(changes)) => pending.changes.extend(changes),
                    Ok(Captured::Tick(ts)) => tick = tick.max(ts),
                    Ok(Captured::Skipped) => {}
                    Err(reason) => {
                        METRICS.messages_rejected.inc();
                        METRICS.error(ErrorKind::MessageRejected);
                        warn!(task = self.task, channel = self.pchannel, id = %message.id, %reason,
                              "message skipped: not a usable Milvus message");
                    }
                }
            }
            if pending.due(self.settings, idle) {
                crate::failpoint::hit("stage-before-commit");
                self.journal
                    .stage(self.task, self.pchannel, &pending.changes, position, tick)?;
                METRICS.changes_staged.inc_by(pending.changes.len() as u64);
                METRICS.staged(self.task, pending.changes.iter().map(|c| &c.change));
                pending = PendingStage::default();
            }
        }
        Ok(())
    }

    /// The channel opened at `from`, waiting while it cannot be (a topic that does not exist
    /// yet, a broker that is down); None once the reader is stopped.
    fn open(&self, from: &MqPosition) -> Option<Box<dyn ChannelSource>> {
        let mut backoff = Duration::from_millis(100);
        while !self.stop.load(Ordering::Relaxed) {
            match self.queue.open(self.task, self.pchannel, from) {
                Ok(consumer) => return Some(consumer),
                Err(err) => {
                    METRICS.error(ErrorKind::Broker);
                    warn!(task = self.task, channel = self.pchannel, %err,
                          "cannot open the channel; waiting for it");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        None
    }

    fn wait_below_cap(&self) -> Result<(), ReaderError> {
        while self.journal.journal_bytes()? > self.settings.journal_cap_bytes
            && !self.stop.load(Ordering::Relaxed)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

/// Keeps a reader within the journal's cache of recent rows while an applier drains it, so the
/// applier takes rows from memory instead of reading them back from disk.
///
/// It never holds a reader back for long: a wait ends once `patience` passes with no rows
/// leaving the cache (a target that is down, a barrier waiting for this very channel), and after
/// such a wait the reader waits again only once rows have left the cache since. Staging at full
/// speed then keeps the backlog in the journal rather than in the broker's retention. No wait
/// lasts longer than `longest` either, so a busy applier of another task cannot starve a reader.
struct Pacer {
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
    const POLL: Duration = Duration::from_millis(2);

    /// Waits, while the cache is being drained, until it has room for a stage of `bytes` and
    /// for two more staged meanwhile by other readers: a stage that does not fit ends the
    /// cache's window, and the applier reads the rows after it from disk.
    fn wait_for_room(&mut self, journal: &Journal, bytes: usize, stop: &AtomicBool) {
        let began = Instant::now();
        loop {
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
            std::thread::sleep(Self::POLL);
        }
    }
}

/// `changes` restamped no earlier than `floor`, so they sort after what was staged before.
fn not_before(changes: Vec<StagedChange>, floor: u64) -> impl Iterator<Item = StagedChange> {
    changes.into_iter().map(move |mut c| {
        c.ts = c.ts.max(floor);
        c
    })
}

/// What the reader fetched since its last staging transaction (group commit).
#[derive(Default)]
struct PendingStage {
    changes: Vec<StagedChange>,
    messages: usize,
    bytes: usize,
    /// When the first of these messages was fetched; None while nothing is pending.
    since: Option<Instant>,
}

impl PendingStage {
    fn fetched(&mut self, payload_len: usize) {
        self.messages += 1;
        self.bytes += payload_len;
        self.since.get_or_insert_with(Instant::now);
    }

    /// Time to commit: the channel went idle, or a count, size or delay bound was reached.
    fn due(&self, settings: &ReaderSettings, idle: bool) -> bool {
        self.since.is_some_and(|since| {
            idle || self.messages >= settings.max_batch_messages
                || self.bytes >= settings.max_batch_bytes
                || since.elapsed() >= settings.max_batch_delay
        })
    }
}

/// Fingerprints of the channel's most recent data messages. A broker or producer retry can store
/// one message twice; two distinct Milvus data messages are never byte-identical (their
/// timestamps and row ids differ), so an exact repeat is dropped rather than applied twice.
#[derive(Default)]
struct RecentPayloads {
    set: HashSet<(u64, usize)>,
    order: VecDeque<(u64, usize)>,
}

impl RecentPayloads {
    const WINDOW: usize = 100_000;

    fn first_time(&mut self, payload: &[u8]) -> bool {
        // Every data byte passes through here, so the hash is a fast one (SipHash took a few
        // percent of the appliance's CPU). Payloads carry the stamps and row ids Milvus
        // assigns, so a user cannot craft two that collide.
        let key = (xxh3_64(payload), payload.len());
        if !self.set.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > Self::WINDOW
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::{RecentPayloads, not_before};
    use crate::model::{Change, CollectionRef, Ddl, DdlEvent, StagedChange};

    #[test]
    fn a_replicate_msg_event_stamped_before_the_newest_one_is_staged_after_it() {
        let event = |ts| StagedChange {
            vchannel: "by-dev-replicate-msg".into(),
            ts,
            change: Change::Ddl(Ddl {
                collection: CollectionRef {
                    id: 1,
                    db_name: "default".into(),
                    name: "c".into(),
                },
                barrier: vec![],
                event: DdlEvent::DropCollection,
            }),
        };
        let staged: Vec<u64> = not_before(vec![event(5), event(9)], 7)
            .map(|c| c.ts)
            .collect();
        assert_eq!(staged, [7, 9]);
    }

    #[test]
    fn an_exact_repeat_is_recognised_and_a_different_payload_is_not() {
        let mut recent = RecentPayloads::default();
        assert!(recent.first_time(b"insert 1"));
        assert!(recent.first_time(b"insert 2"));
        assert!(!recent.first_time(b"insert 1"));
    }

    #[test]
    fn the_window_is_bounded() {
        let mut recent = RecentPayloads::default();
        for i in 0..RecentPayloads::WINDOW + 10 {
            recent.first_time(&i.to_le_bytes());
        }
        assert_eq!(recent.order.len(), RecentPayloads::WINDOW);
        assert!(
            recent.first_time(&0usize.to_le_bytes()),
            "the oldest fell out of the window"
        );
    }
}

#[cfg(test)]
mod pacing_tests {
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    use super::Pacer;
    use crate::journal::{InFlightBatch, Journal};
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
        journal.stage("t", "p", &[staged], next, ts).unwrap();
    }

    /// The applier applied the rows through `ts` (the `n`th of the channel).
    fn drain(journal: &Journal, ts: u64, n: u64) {
        let batch = InFlightBatch {
            ends: vec![("v".into(), RowPosition { ts, seq: n })],
        };
        journal.commit_batch("t", &batch, false).unwrap();
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
