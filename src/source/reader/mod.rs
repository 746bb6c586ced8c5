//! The reader of one physical channel (one MQ topic) for one task: fetch, decode, capture,
//! stage. A [`ChannelReader`] owns its consumer, the channel's position and tick, the messages
//! fetched since its last stage, the fingerprints of recent data messages and its pacing; the
//! journal, the scope and the collection lookup it borrows.
//!
//! Invariants:
//! - Staged once. The redelivery rule, enforced in the run loop: a message is staged only if
//!   its id is past the channel's position ([`MqPosition::admits`]: a Kafka offset at or after
//!   the next offset, a Pulsar MessageId after the last one read, by ledger, entry and batch
//!   index). The position starts at the one stored in the journal and moves past every message
//!   read, so a broker or client that delivers a message again (a Pulsar redelivery, a Kafka
//!   re-fetch) cannot get it staged twice. A data message admitted but byte-identical to a
//!   recent one of the channel (a producer's retry) is dropped too (`dedup.rs`). Either repeat
//!   is counted in `milvus_cdc_messages_duplicate_total`.
//! - A message whose collection metadata cannot be read (etcd away or hung) waits: the run
//!   ends with [`ReaderError::Lookup`] before anything after the stored offset is staged, and
//!   the channel is read again from there. A failed read is never taken for a missing
//!   collection.
//! - Nothing is passed over unasked: a message that does not decode or capture (a poison)
//!   ends the reader with [`ReaderError::Poison`] once everything before it is staged, its
//!   bytes kept in the journal for `dump`; the channel stays at it. Only the task's
//!   [`SkipPolicy`] moves past one (the operator's `task skip`, or `skip_poison` at create),
//!   logged and counted.
//! - Nothing is jumped over: a broker that no longer has what follows the channel's position
//!   (retention passed it, or the topic was deleted and created again) ends the reader with
//!   [`ReaderError::NotRetained`], checked at the start of each run and every few seconds while
//!   idle, and the task fails with that reason. Only a broker that reports its bounds (Kafka)
//!   can be checked; a channel that ends before the position counts only once it stays so
//!   for [`ENDS_BEFORE_CONFIRMED`], as a broker may report its end late.
//! - On the replicate-msg topic each event's stamp is its tick, and no event is staged earlier
//!   than the newest stamp seen there (`not_before`).
//! - Pacing: before a new batch the reader waits while its task has more than
//!   [`ReaderSettings::task_cap_bytes`] staged and not yet applied: for the task to fall below
//!   the cap once its channel's tick covers what it staged, and before that while rows of its
//!   channel the tick covers are still to apply, so the applier always has rows it may apply
//!   (`cap.rs`). A batch is staged as soon as it reaches the cap, or a tick covers the reader's
//!   rows while the task is at the cap, so a burst passes the cap by at most one batch per
//!   reader. It waits while the journal's disk is low (`journal/disk.rs`), and a while for room
//!   in the journal's cache of recent rows (`pacer.rs`), so the applier reads from memory.
//!
//! Crash behaviour: messages are staged together with the offset after them (and the channel's
//! tick) in one journal transaction ([`Journal::stage`]); a crash anywhere loses only
//! uncommitted work, which is fetched again from the stored offset on restart. A client that
//! lost its position ends the run with an error, and the task starts over from the stored
//! offset. A channel that cannot be opened (a topic that does not exist yet, a broker that is
//! down) is waited for and retried until the reader is stopped.

mod cap;
mod dedup;
mod pacer;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracing::{info, warn};
use xxhash_rust::xxh3::xxh3_64;

use super::capture::{CaptureError, Captured, CollectionLookup, LookupError, capture};
use super::decode::{SourceMessage, decode, timestamp};
use super::meta::CollectionMeta;
use super::mq::{ChannelSource, Fetched, Holding, MessageQueue, MqError};
use crate::health::Health;
use crate::journal::{Journal, JournalError, StagingPermit, TaskRun};
use crate::metrics::{ErrorKind, METRICS};
use crate::model::{
    MessageId, MqPosition, Poison, PoisonAt, Scope, SkipPolicy, SourceOffset, StagedChange,
    is_replicate_topic,
};
use dedup::RecentPayloads;
use pacer::Pacer;

#[derive(Debug, Clone)]
pub struct ReaderSettings {
    /// Group commit: a staging transaction closes at this many messages, bytes or this delay.
    pub max_batch_messages: usize,
    pub max_batch_bytes: usize,
    pub max_batch_delay: Duration,
    /// Past this many bytes of its task staged and not yet applied, the reader waits for the
    /// task's applier to drain: one task's backlog never holds up another's readers.
    pub task_cap_bytes: u64,
}

impl Default for ReaderSettings {
    fn default() -> Self {
        Self {
            max_batch_messages: 2_000,
            max_batch_bytes: 8 << 20,
            max_batch_delay: Duration::from_millis(5),
            task_cap_bytes: 1 << 30,
        }
    }
}

/// How often an idle reader asks the broker whether it still has what follows its position.
const RETENTION_CHECK: Duration = Duration::from_secs(5);

/// How long a channel must keep ending before the reader's position before the task fails.
const ENDS_BEFORE_CONFIRMED: Duration = Duration::from_secs(12);

/// A reader held back for the applier (its cap, the cache of recent rows) looks again at each
/// applied batch, and at least this often at its stop flag, its own deadlines and what the
/// applier does not announce (a task's rows dropped).
const RECHECK: Duration = Duration::from_millis(100);

/// The reader's last retention answer: when asked, and since when the channel ends before it.
struct RetentionCheck {
    checked: Instant,
    ends_before_since: Option<Instant>,
}

impl Default for RetentionCheck {
    fn default() -> Self {
        Self {
            checked: Instant::now(),
            ends_before_since: None,
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
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(
        "channel {channel}: the broker no longer has what follows the task's position {position} \
         (it holds {oldest} to {latest}): the topic was deleted and created again, or its \
         retention passed the task. Nothing was skipped; delete the task and create it again, \
         copying what is missing another way"
    )]
    NotRetained {
        channel: String,
        position: MqPosition,
        oldest: MqPosition,
        latest: MqPosition,
    },
    #[error(
        "channel {channel}: the message before the task's position {position} is not the one \
         the task read there: the topic was deleted and created again. Nothing was skipped; \
         delete the task and create it again, copying what is missing another way"
    )]
    OtherTopic {
        channel: String,
        position: MqPosition,
    },
    #[error("cannot replicate {0}")]
    Poison(Poison),
}

pub struct ChannelReader<'a> {
    /// The run of the task this reader belongs to: every stage checks it.
    pub run: &'a TaskRun,
    pub pchannel: &'a str,
    pub queue: &'a dyn MessageQueue,
    pub scope: &'a Scope,
    pub journal: &'a Journal,
    pub settings: &'a ReaderSettings,
    pub stop: Arc<AtomicBool>,
    /// Where this channel's fault is cleared once it stages again.
    pub health: &'a Health,
    /// The poisons this run may move past.
    pub skip: &'a SkipPolicy,
}

impl ChannelReader<'_> {
    pub fn run(&self, lookup: &mut dyn CollectionLookup) -> Result<(), ReaderError> {
        let mut lookup = WithJournal {
            lookup,
            journal: self.journal,
            task: self.run.task(),
        };
        self.read(&mut lookup)
    }

    fn read(&self, lookup: &mut dyn CollectionLookup) -> Result<(), ReaderError> {
        let offset = self
            .journal
            .source_offset(self.run.task(), self.pchannel)?
            .ok_or_else(|| ReaderError::NotSeeded(self.pchannel.to_owned()))?;
        info!(task = self.run.task(), channel = self.pchannel, from = %offset.next, "reading");
        let mut retention = RetentionCheck::default();
        self.check_retained(&offset.next, &mut retention)?;
        // The message before the position is read again, to check it is the one read there.
        let (from, verify) = match message_before(&offset) {
            Some((from, id, fingerprint)) => (from, Some((id, fingerprint))),
            None => (offset.next, None),
        };
        let Some(mut consumer) = self.open(&from) else {
            return Ok(());
        };
        let mut state = ReadState::new(&offset, self.pchannel);
        state.verify = verify;
        while !self.stop.load(Ordering::Relaxed) {
            if state.pending.since.is_none() {
                self.wait_before_batch(&mut state)?;
            }
            let timeout = if state.pending.since.is_some() {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(100)
            };
            // Clients reconnect by themselves, but one that lost its position (a Kafka offset
            // out of range, a closed Pulsar reader) stays lost: the error ends this run and the
            // task starts over from the stored position, dropping what was pending.
            let fetched = consumer.poll(timeout)?;
            let idle = fetched.is_none();
            if idle && state.pending.since.is_none() {
                // A channel no collection writes to has no ticks: being at its end, with
                // everything read staged, is what vouches for it (`journal::lag`).
                self.health.at_end(self.pchannel, crate::model::now_ms());
            }
            // A consumer waiting past the end of a topic that was created again would wait
            // through its first messages: while idle, the broker's bounds are checked.
            if idle && retention.checked.elapsed() >= RETENTION_CHECK {
                self.check_retained(&state.position, &mut retention)?;
            }
            if let Some(message) = fetched {
                self.take(&mut state, message, lookup)?;
            }
            let covered = cap::covered(state.newest_staged, state.tick);
            if state.pending.due(self.settings, idle) || state.pending.fills(state.room, covered) {
                self.stage_pending(&mut state)?;
            }
        }
        Ok(())
    }

    /// Before a new batch: the task's cap (`cap.rs`), the journal's disk, and room in the
    /// journal's cache of recent rows; then how much the batch may add before the cap.
    fn wait_before_batch(&self, state: &mut ReadState) -> Result<(), ReaderError> {
        let (task, cap) = (self.run.task(), self.settings.task_cap_bytes);
        if cap::covered(state.newest_staged, state.tick) {
            self.wait_below_cap()?;
        } else if state.newest_staged.is_some() {
            cap::wait_for_covered_rows(
                self.journal,
                task,
                self.pchannel,
                state.tick,
                cap,
                &self.stop,
            )?;
        }
        let max_bytes = self.settings.max_batch_bytes;
        state
            .pacer
            .wait_for_room(self.journal, max_bytes, &self.stop);
        state.room = cap::room(self.journal, task, cap)?;
        Ok(())
    }

    /// One fetched message: passed over when read already, else decoded, captured and added to
    /// what is pending, or the run stops on it as a poison.
    fn take(
        &self,
        state: &mut ReadState,
        message: Fetched,
        lookup: &mut dyn CollectionLookup,
    ) -> Result<(), ReaderError> {
        // A later message first: retention took the one before the position, and the
        // broker's bounds vouch for the position instead.
        if let Some((id, fingerprint)) = state.verify.take()
            && message.id == id
        {
            if xxh3_64(&message.payload) != fingerprint {
                return Err(ReaderError::OtherTopic {
                    channel: self.pchannel.to_owned(),
                    position: state.position,
                });
            }
            return Ok(());
        }
        // The redelivery rule (module doc): ids only grow along a channel, so one the
        // position does not admit was read already (staged, or pending in this very batch)
        // and must not be staged again.
        if !state.position.admits(&message.id).map_err(MqError::from)? {
            METRICS.messages_duplicate.inc();
            warn!(task = self.run.task(), channel = self.pchannel, id = %message.id,
                  position = %state.position, "message skipped: it was read already");
            return Ok(());
        }
        let before = (state.position, state.last);
        state.position = MqPosition::after(&message.id);
        state.last = Some(xxh3_64(&message.payload));
        state.pending.fetched(message.payload.len());
        METRICS.messages_read.inc();
        let decoded = decode(&message.payload);
        let ts = decoded.as_ref().ok().map(timestamp);
        if let Ok(SourceMessage::Ignored { msg_type }) = &decoded
            && METRICS.ignored(msg_type.as_str_name())
        {
            info!(task = self.run.task(), channel = self.pchannel, id = %message.id, msg_type = msg_type.as_str_name(),
                  "a message of a type that carries nothing for the target passed over (the first of its type; the others are counted in milvus_cdc_messages_ignored_total)");
        }
        if matches!(
            decoded,
            Ok(SourceMessage::Insert(_) | SourceMessage::Delete(_))
        ) && !state.recent.first_time(&message.payload)
        {
            METRICS.messages_duplicate.inc();
            warn!(task = self.run.task(), channel = self.pchannel, id = %message.id,
                  "message skipped: byte-identical to an earlier message of this channel");
            return Ok(());
        }
        // The proxy runs some of these requests in different queues, so one may reach the
        // topic after a later-stamped one. Staged at its own stamp it could sort behind an
        // event already applied and never be read: it is staged no earlier than the newest
        // stamp of the topic instead (it then waits a little longer).
        let floor = state.tick;
        if state.stamps_are_ticks
            && let Ok(message) = &decoded
        {
            state.tick = state.tick.max(timestamp(message));
        }
        let captured = match decoded {
            Ok(decoded) => match capture(decoded, self.pchannel, self.scope, lookup) {
                // Not knowing is not "no such collection": this run ends, dropping what is
                // pending, and the channel is read again from its stored offset once the
                // metadata can be read.
                Err(CaptureError::Lookup(err)) => return Err(err.into()),
                other => other.map_err(|e| e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        match captured {
            Ok(Captured::Changes(changes)) if state.stamps_are_ticks => {
                state.pending.changes.extend(not_before(changes, floor));
            }
            Ok(Captured::Changes(changes)) => state.pending.changes.extend(changes),
            Ok(Captured::Tick(ts)) => state.tick = state.tick.max(ts),
            Ok(Captured::Skipped) => {}
            Err(error) => {
                let poison = Poison {
                    at: PoisonAt::Message {
                        channel: self.pchannel.to_owned(),
                        id: message.id,
                    },
                    ts,
                    error,
                };
                self.poisoned(state, poison, &message.payload, before, floor)?;
            }
        }
        Ok(())
    }

    /// A message that does not decode or capture: the run stops on it, what came before staged
    /// and the message kept for `dump`, unless the task's skip policy passes over it.
    fn poisoned(
        &self,
        state: &ReadState,
        poison: Poison,
        payload: &[u8],
        (before, last): (MqPosition, Option<u64>),
        floor: u64,
    ) -> Result<(), ReaderError> {
        METRICS.messages_rejected.inc();
        METRICS.error(ErrorKind::MessageRejected);
        if !self.skip.allows(&poison.at) {
            // The channel stays at this message: what came before is staged, the message
            // kept for `dump`, and the task stops on it.
            let pending = &state.pending.changes;
            self.journal
                .stage_read(self.run, self.pchannel, pending, before, last, floor)?;
            self.journal.put_poison_message(self.run, payload)?;
            return Err(ReaderError::Poison(poison));
        }
        let approved = self.skip.approved.as_ref() == Some(&poison.at);
        METRICS.poison_skipped.inc();
        warn!(task = self.run.task(), channel = self.pchannel, at = %poison.at, reason = %poison.error,
              approved_by_operator = approved, "message skipped: not a usable Milvus message");
        Ok(())
    }

    /// Commits what is pending with the position and tick after it (group commit).
    fn stage_pending(&self, state: &mut ReadState) -> Result<(), ReaderError> {
        let Some(_room) = self.disk_room()? else {
            return Ok(()); // stopped: what is pending is read again from the stored position
        };
        crate::failpoint::hit("stage-before-commit");
        let changes = std::mem::take(&mut state.pending).changes;
        self.journal.stage_read(
            self.run,
            self.pchannel,
            &changes,
            state.position,
            state.last,
            state.tick,
        )?;
        let newest = changes.iter().map(|c| c.ts).max();
        state.newest_staged = state.newest_staged.max(newest);
        let data = changes.iter().filter(|c| {
            matches!(
                c.change,
                crate::model::Change::Insert(_) | crate::model::Change::Delete(_)
            )
        });
        if let Some(ts) = data.map(|c| c.ts).max() {
            self.health.data_staged(ts);
        }
        self.health.resolved(self.pchannel);
        METRICS.changes_staged.inc_by(changes.len() as u64);
        METRICS.staged(self.run.task(), changes.iter().map(|c| &c.change));
        Ok(())
    }

    /// The channel opened at `from`, waiting while it cannot be (a topic that does not exist
    /// yet, a broker that is down); None once the reader is stopped.
    fn open(&self, from: &MqPosition) -> Option<Box<dyn ChannelSource>> {
        let mut backoff = Duration::from_millis(100);
        while !self.stop.load(Ordering::Relaxed) {
            match self.queue.open(self.run.task(), self.pchannel, from) {
                Ok(consumer) => return Some(consumer),
                Err(err) => {
                    METRICS.error(ErrorKind::Broker);
                    warn!(task = self.run.task(), channel = self.pchannel, %err,
                          "cannot open the channel; waiting for it");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        None
    }

    /// Fails with [`ReaderError::NotRetained`] when the broker no longer has what follows
    /// `position`: at once when retention passed it, and when the channel ends before it only
    /// once every answer for [`ENDS_BEFORE_CONFIRMED`] said so (a broker may answer a stale
    /// end, and a topic created again stays short until written past the position).
    fn check_retained(
        &self,
        position: &MqPosition,
        check: &mut RetentionCheck,
    ) -> Result<(), ReaderError> {
        let retained = self.queue.retained(self.pchannel)?;
        check.checked = Instant::now();
        let confirmed = match retained.holding(position) {
            Holding::Everything => {
                check.ends_before_since = None;
                false
            }
            Holding::Passed => true,
            Holding::EndsBefore => {
                let since = *check.ends_before_since.get_or_insert_with(Instant::now);
                warn!(task = self.run.task(), channel = self.pchannel, %position, end = %retained.latest,
                      "the channel ends before the task's position; asking again");
                since.elapsed() >= ENDS_BEFORE_CONFIRMED
            }
        };
        match retained.oldest {
            Some(oldest) if confirmed => Err(ReaderError::NotRetained {
                channel: self.pchannel.to_owned(),
                position: *position,
                oldest,
                latest: retained.latest,
            }),
            _ => Ok(()),
        }
    }

    /// Waits while the task's rows to apply are past its cap, looking again at each batch the
    /// applier commits.
    fn wait_below_cap(&self) -> Result<(), ReaderError> {
        loop {
            let seen = self.journal.batches_applied();
            if self.journal.pending_bytes(self.run.task())? <= self.settings.task_cap_bytes
                || self.stop.load(Ordering::Relaxed)
            {
                return self.wait_for_disk_room();
            }
            self.journal.wait_for_applied(seen, RECHECK);
        }
    }

    /// Waits, before a batch is read, while the journal's disk has no room to stage it.
    fn wait_for_disk_room(&self) -> Result<(), ReaderError> {
        self.disk_room().map(drop)
    }

    /// Leave to stage, once the journal's disk has the free space it keeps
    /// (`journal/disk.rs`); the hold is the task's reason meanwhile. None once stopped.
    /// Nothing announces room on a disk, so it is looked at again every quarter second.
    fn disk_room(&self) -> Result<Option<StagingPermit<'_>>, ReaderError> {
        loop {
            match self.journal.staging_permit()? {
                Ok(permit) => {
                    self.health.resolved("journal disk");
                    return Ok(Some(permit));
                }
                Err(hold) => self.health.problem("journal disk", &hold),
            }
            if self.stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// The task's collection lookup, and what its journal knows of collections the metadata no
/// longer has.
struct WithJournal<'l> {
    lookup: &'l mut dyn CollectionLookup,
    journal: &'l Journal,
    task: &'l str,
}

impl CollectionLookup for WithJournal<'_> {
    fn collection(&mut self, id: i64) -> Result<Option<CollectionMeta>, LookupError> {
        self.lookup.collection(id)
    }

    fn collection_named(
        &mut self,
        db_name: &str,
        name: &str,
    ) -> Result<Option<CollectionMeta>, LookupError> {
        self.lookup.collection_named(db_name, name)
    }

    fn database_at(&mut self, id: i64, ts: u64) -> Result<Option<String>, LookupError> {
        self.lookup.database_at(id, ts)
    }

    fn vchannels_seen(&mut self, id: i64) -> Result<Vec<String>, LookupError> {
        self.journal
            .vchannels_of_collection(self.task, id)
            .map_err(|e| LookupError(format!("the journal's vchannels of collection {id}: {e}")))
    }
}

/// `changes` restamped no earlier than `floor`, so they sort after what was staged before.
fn not_before(changes: Vec<StagedChange>, floor: u64) -> impl Iterator<Item = StagedChange> {
    changes.into_iter().map(move |mut c| {
        c.ts = c.ts.max(floor);
        c
    })
}

/// Where to open the channel to read the message right before `offset` again, that message's
/// id and its fingerprint, where the broker's ids say which message that is (a Kafka offset; a
/// Pulsar id does not).
fn message_before(offset: &SourceOffset) -> Option<(MqPosition, MessageId, u64)> {
    match (offset.next, offset.last) {
        (MqPosition::Kafka { next_offset }, Some(fingerprint)) if next_offset > 0 => {
            let id = MessageId::Kafka(next_offset - 1);
            let from = MqPosition::Kafka {
                next_offset: next_offset - 1,
            };
            Some((from, id, fingerprint))
        }
        _ => None,
    }
}

/// What one run of a reader carries from message to message.
struct ReadState {
    pending: PendingStage,
    /// Right after the last message read (staged or pending).
    position: MqPosition,
    /// The channel's newest tick read.
    tick: u64,
    /// The fingerprint of the message right before `position` ([`SourceOffset::last`]).
    last: Option<u64>,
    /// The message expected first, read again to be compared with the fingerprint stored.
    verify: Option<(MessageId, u64)>,
    /// The newest row staged in this run. Rows past the channel's tick cannot be applied
    /// until a later tick is staged, so the cap waits only once the tick covers them: waiting
    /// before would leave the applier nothing it may apply, for ever.
    newest_staged: Option<u64>,
    recent: RecentPayloads,
    pacer: Pacer,
    /// What the pending batch may add before the task passes its cap: the batch is staged
    /// once it reaches it, so a burst is not staged whole before the cap is looked at.
    room: u64,
    /// The replicate-msg topic carries no TimeTicks: each event's own stamp is its tick, so
    /// what is staged there is applicable at once, in the order of the topic.
    stamps_are_ticks: bool,
}

impl ReadState {
    fn new(offset: &SourceOffset, pchannel: &str) -> Self {
        Self {
            pending: PendingStage::default(),
            position: offset.next,
            tick: offset.tick,
            last: offset.last,
            verify: None,
            newest_staged: None,
            recent: RecentPayloads::default(),
            pacer: Pacer::default(),
            room: u64::MAX,
            stamps_are_ticks: is_replicate_topic(pchannel),
        }
    }
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

    /// Time to stage for the task's cap: the messages fetched reach `room`, the bytes the task
    /// may stage before its cap, and either the batch has rows or its tick now `covers` every
    /// row the reader staged (staged at once, the reader waits for the cap before a later row
    /// joins the batch; a batch of neither adds nothing to the cap and keeps its usual bounds).
    /// The payloads stand for the rows they stage: a message's columns are staged as it
    /// carries them, its per-row ids and stamps are not, so the estimate errs early.
    fn fills(&self, room: u64, covers: bool) -> bool {
        (covers || !self.changes.is_empty()) && self.since.is_some() && self.bytes as u64 >= room
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
