//! When events are applied. One of the replicate channel: once every vchannel it waits for
//! has been applied through its timestamp, never holding up the data of other vchannels. A
//! collection event:
//! once every vchannel of its barrier has it at its head or has passed its timestamp.

use super::applier::ddl_name;
use super::order::NOT_READY_RECHECK;
use super::*;
use crate::journal::{InFlightBatch, Journal, TaskRun};
use crate::model::{
    Change, CollectionRef, DdlEvent, DeleteBatch, MqPosition, PrimaryKeys, ReplicatedKind,
    StagedChange,
};

/// The replicate channel: the vchannel of the `{prefix}-replicate-msg` topic.
const REPLICATE_CHANNEL: &str = "by-dev-replicate-msg";
const V0: &str = "p0_1v0";
const V1: &str = "p1_1v1";

/// Records what reached it, in order; says "not ready" to the first `refuse` events asked.
#[derive(Default)]
struct Recorder {
    log: Vec<String>,
    refuse: usize,
    /// Per data call made: whether it was sent as a replay.
    replays: Vec<bool>,
}

impl Target for &mut Recorder {
    fn apply_data(&mut self, lanes: &[Vec<Call>], replay: bool) -> Result<(), TargetError> {
        self.replays.push(replay);
        for call in lanes.iter().flatten() {
            if let Call::Delete {
                keys: PrimaryKeys::Int64(keys),
                ..
            } = call
            {
                self.log.push(format!("delete {keys:?}"));
            }
        }
        Ok(())
    }

    fn apply_ddl(&mut self, ddl: &Ddl) -> Result<(), TargetError> {
        self.log.push(ddl_name(ddl).to_owned());
        Ok(())
    }

    fn not_ready(&mut self, _: &Ddl) -> Result<Option<String>, TargetError> {
        if self.refuse > 0 {
            self.refuse -= 1;
            return Ok(Some("no index yet".into()));
        }
        Ok(None)
    }
}

fn coll() -> CollectionRef {
    CollectionRef {
        id: 1,
        db_name: "default".into(),
        name: "c".into(),
    }
}

fn delete(vchannel: &str, ts: u64, key: i64) -> StagedChange {
    StagedChange {
        vchannel: vchannel.into(),
        ts,
        change: Change::Delete(DeleteBatch {
            collection: coll(),
            partition: String::new(),
            keys: PrimaryKeys::Int64(vec![key]),
        }),
    }
}

/// `event` of the collection, staged on `vchannel` with `barrier` as its barrier.
fn collection_event(vchannel: &str, ts: u64, barrier: &[&str], event: DdlEvent) -> StagedChange {
    StagedChange {
        vchannel: vchannel.into(),
        ts,
        change: Change::Ddl(Ddl {
            collection: coll(),
            barrier: barrier.iter().map(|v| v.to_string()).collect(),
            event,
        }),
    }
}

fn load(ts: u64, waits_for: &[&str]) -> StagedChange {
    let event = DdlEvent::Replicated {
        kind: ReplicatedKind::Load,
        request: vec![],
        waits_for: waits_for.iter().map(|v| v.to_string()).collect(),
    };
    collection_event(REPLICATE_CHANNEL, ts, &[REPLICATE_CHANNEL], event)
}

struct Fixture {
    _dir: tempfile::TempDir,
    journal: Journal,
    offset: i64,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        Self {
            _dir: dir,
            journal,
            offset: 0,
        }
    }

    /// Stages on `channel` as its reader would, with the channel's tick.
    fn stage(&mut self, channel: &str, changes: Vec<StagedChange>, tick: u64) {
        self.offset += 1;
        self.journal
            .stage(
                &TaskRun::unstarted("t"),
                channel,
                &changes,
                MqPosition::Kafka {
                    next_offset: self.offset,
                },
                tick,
            )
            .unwrap();
    }

    /// The task's applier, sending to `target`.
    fn applier<'f>(
        &'f self,
        target: &'f mut Recorder,
        settings: ApplierSettings,
    ) -> Applier<'f, &'f mut Recorder> {
        Applier::new(
            TaskRun::unstarted("t"),
            &self.journal,
            target,
            settings,
            Default::default(),
            Default::default(),
        )
    }

    /// Steps the applier until it has nothing to do; what reached the target.
    fn drain(&self, target: &mut Recorder) -> Vec<String> {
        let mut applier = self.applier(target, ApplierSettings::default());
        while applier.step().unwrap() {}
        std::mem::take(&mut target.log)
    }
}

#[test]
fn an_event_waits_for_earlier_rows_and_for_the_tick_of_every_vchannel_it_names() {
    let mut f = Fixture::new();
    let mut target = Recorder::default();
    f.stage("p0", vec![delete(V0, 10, 1)], 5);
    f.stage(REPLICATE_CHANNEL, vec![load(20, &[V0])], 20);
    assert_eq!(
        f.drain(&mut target),
        Vec::<String>::new(),
        "a row before the event is not applicable yet (tick 5): the event waits"
    );
    f.stage("p0", vec![], 15);
    assert_eq!(
        f.drain(&mut target),
        ["delete [1]"],
        "the row is applied; the event still waits: the channel's tick (15) is below it (20)"
    );
    f.stage("p0", vec![], 20);
    assert_eq!(f.drain(&mut target), ["load"]);
    assert_eq!(f.journal.in_flight("t").unwrap(), None);
}

#[test]
fn a_waiting_event_does_not_hold_up_the_data_of_other_vchannels() {
    let mut f = Fixture::new();
    let mut target = Recorder::default();
    f.stage("p1", vec![], 0);
    f.stage(REPLICATE_CHANNEL, vec![load(20, &[V1])], 20);
    f.stage("p0", vec![delete(V0, 30, 7)], 40);
    assert_eq!(f.drain(&mut target), ["delete [7]"]);
    f.stage("p1", vec![delete(V1, 25, 8)], 30);
    assert_eq!(
        f.drain(&mut target),
        ["load", "delete [8]"],
        "V1 has passed the event with nothing before it; its later row follows"
    );
}

#[test]
fn a_channel_whose_ticks_stopped_counts_as_passed_once_the_collections_drop_is_staged() {
    // Ticks of a channel stop when its last collection is dropped: the drop, staged after the
    // event, shows the channel has passed the event even though its tick stays below it.
    let mut f = Fixture::new();
    let mut target = Recorder::default();
    let drop = collection_event(V0, 30, &[V0], DdlEvent::DropCollection);
    f.stage("p0", vec![drop], 10);
    f.stage(REPLICATE_CHANNEL, vec![load(20, &[V0])], 20);
    assert_eq!(f.drain(&mut target), ["load"]);
}

#[test]
fn a_later_data_row_does_not_stand_for_a_tick() {
    // Only ticks say every row up to a stamp is staged; a row after the event does not.
    let mut f = Fixture::new();
    let mut target = Recorder::default();
    f.stage("p0", vec![delete(V0, 30, 1)], 10);
    f.stage(REPLICATE_CHANNEL, vec![load(20, &[V0])], 20);
    assert_eq!(f.drain(&mut target), Vec::<String>::new());
    f.stage("p0", vec![], 30);
    assert_eq!(f.drain(&mut target), ["load", "delete [1]"]);
}

#[test]
fn without_a_later_row_a_tick_below_the_event_keeps_it_waiting() {
    let mut f = Fixture::new();
    let mut target = Recorder::default();
    f.stage("p0", vec![delete(V0, 5, 1)], 10);
    f.stage(REPLICATE_CHANNEL, vec![load(20, &[V0])], 20);
    assert_eq!(f.drain(&mut target), ["delete [1]"]);
}

#[test]
fn database_events_wait_for_nothing() {
    let mut f = Fixture::new();
    let mut target = Recorder::default();
    f.stage("p0", vec![delete(V0, 10, 1)], 0);
    let mut create = load(50, &[]);
    if let Change::Ddl(Ddl {
        event: DdlEvent::Replicated { kind, .. },
        ..
    }) = &mut create.change
    {
        *kind = ReplicatedKind::CreateDatabase;
    }
    f.stage(REPLICATE_CHANNEL, vec![create], 50);
    assert_eq!(f.drain(&mut target), ["create_database"]);
}

#[test]
fn an_event_the_target_is_not_ready_for_stays_pending_without_a_marker() {
    let mut f = Fixture::new();
    let mut target = Recorder {
        refuse: 1,
        ..Default::default()
    };
    f.stage("p0", vec![], 100);
    f.stage(REPLICATE_CHANNEL, vec![load(20, &[V0])], 20);
    f.stage("p0", vec![delete(V0, 30, 7)], 100);
    let mut applier = f.applier(&mut target, ApplierSettings::default());
    // Refused: no marker, and the data staged after it on V0 goes on.
    assert!(applier.step().unwrap());
    assert_eq!(applier.target.log, ["delete [7]"]);
    assert_eq!(f.journal.in_flight("t").unwrap(), None);
    // Not asked again at once.
    assert!(!applier.step().unwrap());
    std::thread::sleep(NOT_READY_RECHECK);
    assert!(applier.step().unwrap());
    assert_eq!(applier.target.log, ["delete [7]", "load"]);
}

#[test]
fn an_event_in_flight_at_a_crash_is_sent_again_once_and_then_committed() {
    let mut f = Fixture::new();
    let mut target = Recorder::default();
    f.stage("p0", vec![], 100);
    f.stage(REPLICATE_CHANNEL, vec![load(20, &[V0])], 20);
    // The process died after marking the event in flight: the target may or may not have it.
    let position = f
        .journal
        .first_position("t", REPLICATE_CHANNEL, None, 20)
        .unwrap()
        .unwrap();
    let marker = InFlightBatch {
        ends: vec![(REPLICATE_CHANNEL.to_owned(), position)],
    };
    f.journal
        .begin_batch(&TaskRun::unstarted("t"), &marker)
        .unwrap();
    let mut applier = f.applier(&mut target, ApplierSettings::default());
    applier.recover().unwrap();
    while applier.step().unwrap() {}
    assert_eq!(applier.target.log, ["load"]);
    assert_eq!(f.journal.in_flight("t").unwrap(), None);
    assert_eq!(
        f.journal.applied("t", REPLICATE_CHANNEL).unwrap(),
        Some(position)
    );
}

#[test]
fn of_two_ready_events_the_older_goes_first_whatever_the_vchannel_names() {
    // "a0_1v0" sorts before the replicate channel's name; the drop (ts 30) must still follow the load (20).
    let mut f = Fixture::new();
    let mut target = Recorder::default();
    let drop = collection_event("a0_1v0", 30, &["a0_1v0"], DdlEvent::DropCollection);
    f.stage("a0", vec![drop], 40);
    f.stage(REPLICATE_CHANNEL, vec![load(20, &["a0_1v0"])], 20);
    assert_eq!(f.drain(&mut target), ["load", "drop collection"]);
}

#[test]
fn a_collection_event_read_on_only_some_of_its_vchannels_waits_until_the_others_have_passed_it() {
    // The reader of p1 started after the event (start positions are taken channel by channel):
    // only p0 has its copy. Once p1 is past the event's timestamp, the copy on p0 is applied
    // alone instead of waiting for good, and p0's rows behind it follow.
    let mut f = Fixture::new();
    let mut target = Recorder::default();
    let create = collection_event(
        V0,
        10,
        &[V0, V1],
        DdlEvent::CreateCollection {
            schema: vec![],
            shards_num: 2,
            consistency_level: 0,
        },
    );
    f.stage("p0", vec![create, delete(V0, 12, 1)], 20);
    f.stage("p1", vec![delete(V1, 5, 2)], 8);
    assert_eq!(
        f.drain(&mut target),
        ["delete [2]"],
        "p1 is not past the event yet (tick 8): it may still bring its copy"
    );
    f.stage("p1", vec![], 20);
    assert_eq!(f.drain(&mut target), ["create collection", "delete [1]"]);
    assert_eq!(f.journal.in_flight("t").unwrap(), None);
}

#[test]
fn an_event_that_must_wait_does_not_cut_short_the_run_of_batches_on_other_vchannels() {
    // One step sends batch after batch for as long as more are staged (the next is read while
    // the target takes the last): a waiting event elsewhere changes nothing about that.
    let mut f = Fixture::new();
    let mut target = Recorder::default();
    f.stage("p1", vec![], 0);
    f.stage(REPLICATE_CHANNEL, vec![load(20, &[V1])], 20);
    let deletes = (1..=3)
        .map(|key| delete(V0, 30 + key as u64, key))
        .collect();
    f.stage("p0", deletes, 40);
    let settings = ApplierSettings {
        max_batch_rows: 1,
        ..ApplierSettings::default()
    };
    let mut applier = f.applier(&mut target, settings);
    assert!(applier.step().unwrap());
    assert_eq!(
        applier.target.log,
        ["delete [1]", "delete [2]", "delete [3]"]
    );
}

/// The snapshot copy of collection 1 (`coll()`), in `state`.
fn copy(state: crate::model::CopyState) -> crate::model::CopyProgress {
    crate::model::CopyProgress::of_test_collection(coll(), state)
}

#[test]
fn a_collection_being_copied_gets_only_its_creation_then_its_changes_as_replays() {
    use crate::model::CopyState;
    let mut f = Fixture::new();
    let mut target = Recorder::default();
    let create = DdlEvent::CreateCollection {
        schema: vec![],
        shards_num: 1,
        consistency_level: 0,
    };
    f.stage("p0", vec![collection_event(V0, 0, &[V0], create)], 0);
    f.stage("p0", vec![delete(V0, 10, 1)], 20);
    let copying = CopyState::beginning();
    f.journal
        .put_copy(&TaskRun::unstarted("t"), &copy(copying))
        .unwrap();
    assert_eq!(
        f.drain(&mut target),
        ["create collection"],
        "the copy needs the collection; its change waits for the copy"
    );
    f.stage("p0", vec![delete(V0, 30, 2)], 40);
    f.journal
        .put_copy(
            &TaskRun::unstarted("t"),
            &copy(CopyState::Done { replay_through: 20 }),
        )
        .unwrap();
    let mut applier = f.applier(
        &mut target,
        ApplierSettings {
            max_batch_rows: 1,
            ..ApplierSettings::default()
        },
    );
    while applier.step().unwrap() {}
    assert_eq!(target.log, ["delete [1]", "delete [2]"]);
    assert_eq!(
        target.replays,
        [true, false],
        "a change up to the copy's end may be in it already: replayed; a later one is not"
    );
}

#[test]
fn changes_a_snapshot_copy_already_carries_are_passed_over_also_when_in_doubt() {
    use crate::model::CopyState;
    let mut f = Fixture::new();
    let mut target = Recorder::default();
    // The task started between an upsert's Insert and Delete at ts 10 (before the copy's
    // start_ts, 15): the journal has the Delete alone; then a delete at ts 30 after the start.
    f.stage("p0", vec![delete(V0, 10, 1), delete(V0, 30, 2)], 40);
    let mut done = copy(CopyState::Done { replay_through: 50 });
    done.start_ts = 15;
    f.journal.put_copy(&TaskRun::unstarted("t"), &done).unwrap();
    // A crash left both rows in doubt.
    let rows = f.journal.rows("t", V0, None, 30, 10, usize::MAX).unwrap();
    let end = rows.last().unwrap().position;
    let marker = InFlightBatch {
        ends: vec![(V0.to_owned(), end)],
    };
    f.journal
        .begin_batch(&TaskRun::unstarted("t"), &marker)
        .unwrap();
    let mut applier = f.applier(&mut target, ApplierSettings::default());
    applier.recover().unwrap();
    assert_eq!(
        applier.target.log,
        ["delete [2]"],
        "the Delete at 10 is in the copy"
    );
    assert_eq!(f.journal.applied("t", V0).unwrap(), Some(end));
    target.log.clear();

    f.stage("p1", vec![delete(V1, 12, 3)], 20);
    f.stage("p0", vec![delete(V0, 45, 4)], 50);
    assert_eq!(
        f.drain(&mut target),
        ["delete [4]"],
        "the same on another vchannel of the collection, without a crash"
    );
}

#[test]
fn copies_of_a_collection_event_named_before_and_after_a_rename_are_one_event() {
    // Each shard's reader names the collection as the metadata had it when it read the
    // message: one read before a rename, the other after it.
    let mut f = Fixture::new();
    let mut target = Recorder::default();
    let drop = |vchannel: &str, name: &str| {
        let mut copy = collection_event(vchannel, 10, &[V0, V1], DdlEvent::DropCollection);
        if let Change::Ddl(ddl) = &mut copy.change {
            ddl.collection.name = name.into();
        }
        copy
    };
    f.stage("p0", vec![drop(V0, "before")], 20);
    f.stage("p1", vec![drop(V1, "after")], 20);
    assert_eq!(f.drain(&mut target), ["drop collection"]);
}
