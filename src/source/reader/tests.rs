//! The channel reader against a scripted message queue: the redelivery rule, resuming at a
//! stored position, and a channel that cannot be opened yet. The queue delivers what the
//! script says whatever position it is opened at, as a broker that starts early or redelivers.
//! Also the restamping of replicate-msg events.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use milvus::proto::common::{MsgBase, MsgType};
use milvus::proto::msg;
use milvus::proto::schema::{IDs, LongArray, i_ds::IdField};
use prost::Message as _;

use super::{ChannelReader, ReaderError, ReaderSettings, not_before};
use crate::health::Health;
use crate::journal::{InFlightBatch, Journal, TaskRun};
use crate::model::{
    Change, CollectionRef, Ddl, DdlEvent, MessageId, MqKind, MqPosition, PoisonAt, PrimaryKeys,
    PulsarId, Scope, SkipPolicy, StagedChange,
};
use crate::source::capture::{CollectionLookup, LookupError};
use crate::source::meta::CollectionMeta;
use crate::source::mq::{ChannelSource, Fetched, MessageQueue, MqError, PulsarError, Retained};

const P0: &str = "by-dev-rootcoord-dml_0";
const V0: &str = "by-dev-rootcoord-dml_0_9v0";

fn id(ledger: u64, entry: u64) -> PulsarId {
    PulsarId {
        ledger,
        entry,
        batch: -1,
        partition: -1,
    }
}

/// A Milvus Delete of one key, stamped `ts`.
fn delete(key: i64, ts: u64) -> Vec<u8> {
    msg::DeleteRequest {
        base: Some(MsgBase {
            msg_type: MsgType::Delete as i32,
            timestamp: ts,
            ..Default::default()
        }),
        shard_name: V0.into(),
        collection_id: 9,
        collection_name: "c".into(),
        timestamps: vec![ts],
        primary_keys: Some(IDs {
            id_field: Some(IdField::IntId(LongArray { data: vec![key] })),
        }),
        num_rows: 1,
        ..Default::default()
    }
    .encode_to_vec()
}

fn collections() -> HashMap<i64, CollectionMeta> {
    HashMap::from([(
        9,
        CollectionMeta {
            id: 9,
            db_id: 1,
            db_name: "default".into(),
            name: "c".into(),
            schema: Default::default(),
            shards_num: 1,
            consistency_level: 0,
            virtual_channels: vec![V0.into()],
            physical_channels: vec![P0.into()],
            start_positions: vec![],
            partitions: vec![],
            create_time: 0,
        },
    )])
}

/// A message queue that fails the first `missing` opens (a topic not created yet), then
/// delivers `script` from its start on every open, and stops the reader once it ran dry.
struct ScriptedMq {
    script: Vec<(PulsarId, Vec<u8>)>,
    missing: AtomicUsize,
    opened_at: Mutex<Vec<MqPosition>>,
    stop: Arc<AtomicBool>,
}

struct ScriptedChannel {
    script: std::vec::IntoIter<(PulsarId, Vec<u8>)>,
    stop: Arc<AtomicBool>,
}

/// Only opening a channel is scripted: a reader asks nothing else of its queue.
impl MessageQueue for ScriptedMq {
    fn kind(&self) -> MqKind {
        MqKind::Pulsar
    }

    fn channels(&self) -> Result<Vec<String>, MqError> {
        Ok(vec![P0.to_owned()])
    }

    fn retained(&self, _pchannel: &str) -> Result<Retained, MqError> {
        Ok(Retained {
            oldest: None,
            latest: MqPosition::beginning(MqKind::Pulsar),
        })
    }

    fn start_of(&self, _recorded: &[u8]) -> Result<MqPosition, MqError> {
        Ok(MqPosition::beginning(MqKind::Pulsar))
    }

    fn open(
        &self,
        _task: &str,
        _pchannel: &str,
        from: &MqPosition,
    ) -> Result<Box<dyn ChannelSource>, MqError> {
        if self
            .missing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(PulsarError::Timeout {
                url: "pulsar://test".into(),
                action: "open a reader on a topic that does not exist yet".into(),
                timeout: Duration::ZERO,
            }
            .into());
        }
        self.opened_at.lock().unwrap().push(*from);
        Ok(Box::new(ScriptedChannel {
            script: self.script.clone().into_iter(),
            stop: self.stop.clone(),
        }))
    }
}

impl ChannelSource for ScriptedChannel {
    fn poll(&mut self, _timeout: Duration) -> Result<Option<Fetched>, MqError> {
        match self.script.next() {
            Some((id, payload)) => Ok(Some(Fetched {
                id: MessageId::Pulsar(id),
                payload,
            })),
            None => {
                self.stop.store(true, Ordering::SeqCst);
                Ok(None)
            }
        }
    }
}

/// A journal with the channel's start staged, and a reader over a scripted queue.
struct Setup {
    _dir: tempfile::TempDir,
    journal: Journal,
    mq: ScriptedMq,
    run: TaskRun,
    settings: ReaderSettings,
    scope: Scope,
    health: Health,
    skip: SkipPolicy,
}

impl Setup {
    fn new(start: MqPosition, script: Vec<(PulsarId, Vec<u8>)>, missing: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let run = TaskRun::unstarted("t");
        journal.stage(&run, P0, &[], start, 0).unwrap();
        let mq = ScriptedMq {
            script,
            missing: AtomicUsize::new(missing),
            opened_at: Mutex::new(Vec::new()),
            stop: Arc::new(AtomicBool::new(false)),
        };
        Self {
            _dir: dir,
            journal,
            mq,
            run,
            settings: ReaderSettings::default(),
            scope: Scope::all(),
            health: Health::default(),
            skip: SkipPolicy::default(),
        }
    }

    fn reader(&self) -> ChannelReader<'_> {
        ChannelReader {
            run: &self.run,
            pchannel: P0,
            queue: &self.mq,
            scope: &self.scope,
            journal: &self.journal,
            settings: &self.settings,
            stop: self.mq.stop.clone(),
            health: &self.health,
            skip: &self.skip,
        }
    }

    /// The keys of the deletes staged, in order.
    fn staged_keys(&self) -> Vec<i64> {
        self.journal
            .rows("t", V0, None, u64::MAX, usize::MAX, usize::MAX)
            .unwrap()
            .into_iter()
            .flat_map(|row| match row.change {
                Change::Delete(d) => match d.keys {
                    PrimaryKeys::Int64(keys) => keys,
                    PrimaryKeys::VarChar(_) => vec![],
                },
                _ => vec![],
            })
            .collect()
    }

    fn stored(&self) -> MqPosition {
        self.journal.source_offset("t", P0).unwrap().unwrap().next
    }
}

/// Runs a reader from `start` over `script`; answers the keys staged, in order, the stored
/// position after the run and the positions the queue was opened at.
fn read(
    start: MqPosition,
    script: Vec<(PulsarId, Vec<u8>)>,
    missing: usize,
) -> (Vec<i64>, MqPosition, Vec<MqPosition>) {
    let setup = Setup::new(start, script, missing);
    setup.reader().run(&mut collections()).unwrap();
    let opened_at = setup.mq.opened_at.lock().unwrap().clone();
    (setup.staged_keys(), setup.stored(), opened_at)
}

fn earliest() -> MqPosition {
    MqPosition::Pulsar {
        from: PulsarId::EARLIEST,
        inclusive: true,
    }
}

#[test]
fn a_redelivered_message_is_staged_once() {
    let (keys, stored, _) = read(
        earliest(),
        vec![
            (id(5, 1), delete(1, 10)),
            (id(5, 2), delete(2, 11)),
            // The broker redelivers both (a reconnect, an ack timeout), then goes on.
            (id(5, 1), delete(1, 10)),
            (id(5, 2), delete(2, 11)),
            (id(6, 0), delete(3, 12)),
        ],
        0,
    );
    assert_eq!(keys, [1, 2, 3]);
    assert_eq!(stored, MqPosition::after(&MessageId::Pulsar(id(6, 0))));
}

#[test]
fn a_message_with_an_older_id_is_skipped_even_with_new_bytes() {
    // The id rule decides, not the payload: an id at or before the position was read already.
    let (keys, _, _) = read(
        earliest(),
        vec![
            (id(5, 2), delete(2, 11)),
            (id(5, 1), delete(7, 13)),
            (id(5, 3), delete(3, 14)),
        ],
        0,
    );
    assert_eq!(keys, [2, 3]);
}

#[test]
fn a_resumed_reader_seeks_to_its_stored_position_and_stages_only_what_follows() {
    let stored = MqPosition::after(&MessageId::Pulsar(id(5, 2)));
    let (keys, after, opened_at) = read(
        stored,
        // The broker starts earlier than asked (or treats the start as inclusive).
        vec![
            (id(5, 1), delete(1, 10)),
            (id(5, 2), delete(2, 11)),
            (id(5, 3), delete(3, 12)),
        ],
        0,
    );
    assert_eq!(
        opened_at,
        [stored],
        "the queue is opened at the stored position"
    );
    assert_eq!(keys, [3]);
    assert_eq!(after, MqPosition::after(&MessageId::Pulsar(id(5, 3))));
}

#[test]
fn an_inclusive_start_position_stages_its_own_message() {
    let start = MqPosition::Pulsar {
        from: id(5, 2),
        inclusive: true,
    };
    let (keys, _, _) = read(
        start,
        vec![(id(5, 1), delete(1, 10)), (id(5, 2), delete(2, 11))],
        0,
    );
    assert_eq!(keys, [2]);
}

#[test]
fn a_topic_that_does_not_exist_yet_is_waited_for() {
    let (keys, _, opened_at) = read(earliest(), vec![(id(1, 0), delete(1, 10))], 3);
    assert_eq!(
        opened_at,
        [earliest()],
        "opened once it exists, at the stored position"
    );
    assert_eq!(keys, [1]);
}

#[test]
fn a_reader_waiting_for_its_topic_ends_when_stopped() {
    let setup = Setup::new(earliest(), vec![], usize::MAX);
    let stopper = {
        let stop = setup.mq.stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, Ordering::SeqCst);
        })
    };
    assert!(setup.reader().run(&mut collections()).is_ok());
    stopper.join().unwrap();
    assert!(setup.mq.opened_at.lock().unwrap().is_empty());
}

#[test]
fn a_kafka_journal_is_not_read_with_pulsar_ids() {
    // A stored Kafka offset and Pulsar ids cannot be compared: an error, never a guess.
    let setup = Setup::new(
        MqPosition::Kafka { next_offset: 0 },
        vec![(id(1, 0), delete(1, 10))],
        0,
    );
    assert!(setup.reader().run(&mut collections()).is_err());
}

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

/// Metadata that cannot be read until `fail_for` lookups have failed.
struct FlakyEtcd {
    fail_for: usize,
}

impl CollectionLookup for FlakyEtcd {
    fn collection(&mut self, id: i64) -> Result<Option<CollectionMeta>, LookupError> {
        if self.fail_for > 0 {
            self.fail_for -= 1;
            return Err(LookupError("etcd: deadline exceeded".into()));
        }
        Ok(collections().remove(&id))
    }

    fn collection_named(
        &mut self,
        _: &str,
        _: &str,
    ) -> Result<Option<CollectionMeta>, LookupError> {
        unreachable!("no replicate-msg events here")
    }
}

#[test]
fn a_failed_metadata_read_stops_the_run_before_the_message_and_it_is_staged_once_etcd_answers() {
    let setup = Setup::new(
        earliest(),
        vec![(id(1, 0), delete(1, 10)), (id(1, 1), delete(2, 11))],
        0,
    );
    let mut etcd = FlakyEtcd { fail_for: 1 };
    let err = setup.reader().run(&mut etcd).unwrap_err();
    assert!(err.to_string().contains("deadline exceeded"), "{err}");
    assert_eq!(setup.stored(), earliest(), "nothing skipped");

    setup.reader().run(&mut etcd).unwrap();
    assert_eq!(
        setup.staged_keys(),
        [1, 2],
        "both deletes staged, once each"
    );
}

const GARBAGE: &[u8] = b"not a milvus message \xff";

fn poison_at(message: PulsarId) -> PoisonAt {
    PoisonAt::Message {
        channel: P0.into(),
        id: MessageId::Pulsar(message),
    }
}

#[test]
fn a_message_that_does_not_decode_stops_the_reader_at_it_once_what_came_before_is_staged() {
    let setup = Setup::new(
        earliest(),
        vec![
            (id(1, 0), delete(1, 10)),
            (id(1, 1), GARBAGE.to_vec()),
            (id(1, 2), delete(2, 11)),
        ],
        0,
    );
    let err = setup.reader().run(&mut collections()).unwrap_err();
    let ReaderError::Poison(poison) = err else {
        panic!("not a poison: {err}")
    };
    assert_eq!(poison.at, poison_at(id(1, 1)));
    assert_eq!(poison.ts, None, "it has no timestamp: it does not decode");
    assert_eq!(setup.staged_keys(), [1]);
    assert_eq!(
        setup.stored(),
        MqPosition::after(&MessageId::Pulsar(id(1, 0))),
        "the channel stays at the poison"
    );
    assert_eq!(
        setup.journal.poison_message("t").unwrap().as_deref(),
        Some(GARBAGE),
        "kept for dump"
    );
}

#[test]
fn an_approved_skip_passes_exactly_that_message() {
    let mut setup = Setup::new(
        earliest(),
        vec![
            (id(1, 0), delete(1, 10)),
            (id(1, 1), GARBAGE.to_vec()),
            (id(1, 2), delete(2, 11)),
            (id(1, 3), GARBAGE.to_vec()),
            (id(1, 4), delete(4, 12)),
        ],
        0,
    );
    setup.skip.approved = Some(poison_at(id(1, 1)));
    let err = setup.reader().run(&mut collections()).unwrap_err();
    assert!(
        matches!(&err, ReaderError::Poison(p) if p.at == poison_at(id(1, 3))),
        "the next poison stops it again: {err}"
    );
    assert_eq!(setup.staged_keys(), [1, 2]);
}

#[test]
fn a_task_with_skip_poison_passes_every_poison() {
    let mut setup = Setup::new(
        earliest(),
        vec![
            (id(1, 0), delete(1, 10)),
            (id(1, 1), GARBAGE.to_vec()),
            (id(1, 2), delete(2, 11)),
            (id(1, 3), Vec::new()),
            (id(1, 4), delete(4, 12)),
        ],
        0,
    );
    setup.skip.every = true;
    setup.reader().run(&mut collections()).unwrap();
    assert_eq!(setup.staged_keys(), [1, 2, 4]);
    assert_eq!(
        setup.stored(),
        MqPosition::after(&MessageId::Pulsar(id(1, 4)))
    );
}

/// A Milvus TimeTick stamped `ts`.
fn tick(ts: u64) -> Vec<u8> {
    msg::TimeTickMsg {
        base: Some(MsgBase {
            msg_type: MsgType::TimeTick as i32,
            timestamp: ts,
            ..Default::default()
        }),
    }
    .encode_to_vec()
}

/// Applies every row the channel's tick covers, as the applier does; answers whether any.
fn apply_through_tick(journal: &Journal, run: &TaskRun) -> bool {
    let tick = journal.source_offset("t", P0).unwrap().unwrap().tick;
    let rows = journal
        .rows("t", V0, None, tick, usize::MAX, usize::MAX)
        .unwrap();
    let Some(last) = rows.last() else {
        return false;
    };
    let batch = InFlightBatch {
        ends: vec![(V0.to_owned(), last.position)],
    };
    journal.commit_batch(run, &batch, false).unwrap();
    true
}

/// Runs a reader over `script` with a cap of two staged rows, applying what the channel's tick
/// covers beside it; answers the most bytes staged and not applied seen, and one row's bytes.
/// Every group-commit bound but the cap is out of reach: the script is fetched at once.
fn most_pending_under_a_cap_of_two_rows(script: Vec<(PulsarId, Vec<u8>)>) -> (u64, u64) {
    // The bytes of one staged delete of one key: each delete of the scripts stages one.
    let one = Setup::new(earliest(), vec![(id(1, 0), delete(0, 10))], 0);
    one.reader().run(&mut collections()).unwrap();
    let row = one.journal.pending_bytes("t").unwrap();

    let end = script
        .last()
        .map(|(id, _)| MqPosition::after(&MessageId::Pulsar(*id)));
    let mut setup = Setup::new(earliest(), script, 0);
    setup.settings.task_cap_bytes = 2 * row;
    setup.settings.max_batch_delay = Duration::from_secs(3600);
    let setup = setup;
    let mut most = 0;
    std::thread::scope(|s| {
        let reader = s.spawn(|| setup.reader().run(&mut collections()));
        while !reader.is_finished() {
            most = most.max(setup.journal.pending_bytes("t").unwrap());
            if !apply_through_tick(&setup.journal, &setup.run) {
                std::thread::yield_now();
            }
        }
        reader.join().unwrap().unwrap();
    });
    most = most.max(setup.journal.pending_bytes("t").unwrap());
    assert_eq!(
        Some(setup.stored()),
        end,
        "the reader read the burst to its end"
    );
    (most, row)
}

#[test]
fn a_burst_is_staged_no_further_than_one_row_past_the_cap_and_read_whole_as_it_drains() {
    // Twenty deletes, each with the tick that covers it after it.
    let script = (0..20u64)
        .flat_map(|n| {
            let ts = 10 + 2 * n;
            [
                (id(1, 2 * n), delete(n as i64, ts)),
                (id(1, 2 * n + 1), tick(ts + 1)),
            ]
        })
        .collect();
    let (most, row) = most_pending_under_a_cap_of_two_rows(script);
    assert!(
        most <= 3 * row,
        "{most} bytes pending: more than a cap of two rows and one row of {row}"
    );
}

#[test]
fn a_burst_whose_ticks_come_one_row_late_is_held_at_the_cap_too() {
    // As Milvus writes while rows flow: the tick covering a delete comes after the next delete,
    // so the reader's newest row is never covered at a batch's end.
    let script = (0..20u64)
        .flat_map(|n| {
            let ts = 10 + 2 * n;
            [
                (id(1, 2 * n), delete(n as i64, ts)),
                (id(1, 2 * n + 1), tick(ts - 1)),
            ]
        })
        .collect();
    let (most, row) = most_pending_under_a_cap_of_two_rows(script);
    assert!(
        most <= 3 * row,
        "{most} bytes pending: more than a cap of two rows and one row of {row}"
    );
}
