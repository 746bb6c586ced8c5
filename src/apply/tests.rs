//! The exactly-once property: any interleaving of staging, applying, crashing (before or after
//! the target got a batch) and recovering leaves the target with every staged change applied
//! once, in order per vchannel.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use milvus::proto::schema::{
    FieldData, LongArray, ScalarField, field_data::Field, scalar_field::Data,
};
use proptest::prelude::*;
use prost::Message;

use super::calls::Call;
use super::{Applier, ApplierSettings, ApplyError, Ddl, Isolated, Target, TargetError};
use crate::journal::{Journal, TaskRun};
use crate::model::{
    Change, CollectionRef, DeleteBatch, EncodedColumn, InsertBatch, MqPosition, PoisonAt,
    PrimaryKeys, RowPosition, StagedChange,
};

/// Where the simulated process dies during the next target call.
#[derive(Debug, Clone, Copy, PartialEq)]
enum CrashPoint {
    BeforeCall,
    AfterCall,
}

/// A target that models Milvus's behaviour on primary keys: a plain insert of an existing key
/// stores a second copy (the duplicate we must never cause), an upsert replaces, a delete removes.
#[derive(Default)]
struct FakeTarget {
    rows: HashMap<i64, Vec<i64>>,
    /// Dies at this point of a call, after letting this many calls through.
    crash: Option<(CrashPoint, usize)>,
    crashed: bool,
    /// Stops the task during a call, after letting this many calls through.
    stop: Option<(usize, Arc<AtomicBool>)>,
    /// Refuses for good every insert of this key (a row the target will never take).
    refuse: Option<i64>,
    /// Refuses every call whatever its rows (credentials broken, say), while set.
    blocked: bool,
}

fn keys_and_values(call: &Call) -> Vec<(i64, i64)> {
    let Call::Insert { fields_data, .. } = call else {
        return vec![];
    };
    let column = |i: usize| match FieldData::decode(fields_data[i].to_vec().as_slice())
        .expect("test columns decode")
        .field
    {
        Some(Field::Scalars(ScalarField {
            data: Some(Data::LongData(a)),
            ..
        })) => a.data.clone(),
        _ => panic!("test columns are int64"),
    };
    column(0).into_iter().zip(column(1)).collect()
}

impl FakeTarget {
    fn apply(&mut self, call: &Call, replay: bool) -> Result<(), TargetError> {
        let crash = match &mut self.crash {
            Some((point, 0)) => Some(*point),
            Some((_, calls)) => {
                *calls -= 1;
                None
            }
            None => None,
        };
        match &mut self.stop {
            Some((0, stop)) => stop.store(true, Ordering::Relaxed),
            Some((calls, _)) => *calls -= 1,
            None => {}
        }
        if crash == Some(CrashPoint::BeforeCall) {
            self.crash = None;
            self.crashed = true;
            return Err(TargetError::Permanent("crash".into()));
        }
        if self.blocked {
            return Err(TargetError::Blocked("authentication failed".into()));
        }
        if self
            .refuse
            .is_some_and(|k| keys_and_values(call).iter().any(|(key, _)| *key == k))
        {
            return Err(TargetError::Permanent(format!(
                "key {:?} refused",
                self.refuse
            )));
        }
        match call {
            Call::Insert { .. } => {
                for (key, value) in keys_and_values(call) {
                    let copies = self.rows.entry(key).or_default();
                    if replay {
                        copies.clear();
                    }
                    copies.push(value);
                }
            }
            Call::Delete {
                keys: PrimaryKeys::Int64(keys),
                ..
            } => {
                for key in keys {
                    self.rows.remove(key);
                }
            }
            Call::Delete { .. } => unreachable!(),
        }
        if crash == Some(CrashPoint::AfterCall) {
            self.crash = None;
            self.crashed = true;
            return Err(TargetError::Permanent("crash".into()));
        }
        Ok(())
    }
}

impl Target for &mut FakeTarget {
    fn apply_data(&mut self, lanes: &[Vec<Call>], replay: bool) -> Result<(), TargetError> {
        for call in lanes.iter().flatten() {
            self.apply(call, replay)?;
        }
        Ok(())
    }

    fn apply_ddl(&mut self, _: &Ddl) -> Result<(), TargetError> {
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Insert `n` fresh keys on vchannel `v`.
    Insert {
        v: usize,
        n: usize,
    },
    /// Upsert (Insert then Delete at one timestamp, as the source writes it) of an earlier key.
    Upsert {
        v: usize,
        pick: usize,
    },
    Delete {
        v: usize,
        pick: usize,
    },
    /// Advance the channel tick so staged rows become applicable.
    Tick,
    Apply,
    /// The process dies at `point` of a target call, after `calls` calls of one applier run.
    Crash {
        point: CrashPoint,
        calls: usize,
    },
    /// The task stops during a target call, after `calls` calls of one applier run.
    Stop {
        calls: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..2usize, 1..4usize).prop_map(|(v, n)| Op::Insert { v, n }),
        (0..2usize, any::<usize>()).prop_map(|(v, pick)| Op::Upsert { v, pick }),
        (0..2usize, any::<usize>()).prop_map(|(v, pick)| Op::Delete { v, pick }),
        Just(Op::Tick),
        Just(Op::Apply),
        Just(Op::Apply),
        (0..6usize).prop_map(|calls| Op::Crash {
            point: CrashPoint::BeforeCall,
            calls
        }),
        (0..6usize).prop_map(|calls| Op::Crash {
            point: CrashPoint::AfterCall,
            calls
        }),
        (0..6usize).prop_map(|calls| Op::Stop { calls }),
    ]
}

const VCHANNELS: [&str; 2] = ["p0_1v0", "p0_1v1"];

fn coll() -> CollectionRef {
    CollectionRef {
        id: 1,
        db_name: "default".into(),
        name: "c".into(),
    }
}

fn long_column(name: &str, values: Vec<i64>) -> EncodedColumn {
    EncodedColumn::from(
        FieldData {
            field_name: name.into(),
            r#type: 5,
            field: Some(Field::Scalars(ScalarField {
                data: Some(Data::LongData(LongArray { data: values })),
                ..Default::default()
            })),
            ..Default::default()
        }
        .encode_to_vec(),
    )
}

fn insert(keys: Vec<i64>, value: i64) -> Change {
    let values = vec![value; keys.len()];
    Change::Insert(InsertBatch {
        collection: coll(),
        partition: "_default".into(),
        num_rows: keys.len() as u64,
        fields_data: vec![long_column("id", keys), long_column("value", values)],
    })
}

fn delete(keys: Vec<i64>) -> Change {
    Change::Delete(DeleteBatch {
        collection: coll(),
        partition: "_default".into(),
        keys: PrimaryKeys::Int64(keys),
    })
}

/// Small batches, so a drain takes several steps and the next batch is read during a send.
fn settings(max_batch_rows: usize) -> ApplierSettings {
    ApplierSettings {
        max_batch_rows,
        ..ApplierSettings::default()
    }
}

/// An applier of task `t` that is never stopped.
fn new_applier<'a>(
    journal: &'a Journal,
    target: &'a mut FakeTarget,
    batch_rows: usize,
) -> Applier<'a, &'a mut FakeTarget> {
    Applier::new(
        TaskRun::unstarted("t"),
        journal,
        target,
        settings(batch_rows),
        Default::default(),
        Default::default(),
    )
}

fn drain(journal: &Journal, target: &mut FakeTarget, batch_rows: usize) {
    let mut applier = new_applier(journal, target, batch_rows);
    applier.recover().unwrap();
    while applier.step().unwrap() {}
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_staged_change_is_applied_exactly_once(
        ops in proptest::collection::vec(op(), 1..60),
        batch_rows in 1..4usize,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path()).unwrap();
        let mut target = FakeTarget::default();
        // What the source holds: key → value, by keys per vchannel (a key lives in one shard).
        let mut expected: HashMap<i64, i64> = HashMap::new();
        let mut keys_of: [Vec<i64>; 2] = [vec![], vec![]];
        let (mut ts, mut next_key, mut offset) = (1u64, 0i64, 0i64);

        let mut stage = |changes: Vec<StagedChange>, tick: u64, journal: &Journal| {
            offset += 1;
            journal.stage(&TaskRun::unstarted("t"), "p0", &changes, MqPosition::Kafka { next_offset: offset }, tick).unwrap();
        };
        stage(vec![], 0, &journal);

        for op in ops {
            ts += 1;
            match op {
                Op::Insert { v, n } => {
                    let keys: Vec<i64> = (0..n).map(|i| next_key + i as i64).collect();
                    next_key += n as i64;
                    for &k in &keys { expected.insert(k, ts as i64); }
                    keys_of[v].extend(&keys);
                    stage(vec![StagedChange { vchannel: VCHANNELS[v].into(), ts, change: insert(keys, ts as i64) }], 0, &journal);
                }
                Op::Upsert { v, pick } if !keys_of[v].is_empty() => {
                    let key = keys_of[v][pick % keys_of[v].len()];
                    expected.insert(key, ts as i64);
                    let changes = vec![
                        StagedChange { vchannel: VCHANNELS[v].into(), ts, change: insert(vec![key], ts as i64) },
                        StagedChange { vchannel: VCHANNELS[v].into(), ts, change: delete(vec![key]) },
                    ];
                    stage(changes, 0, &journal);
                }
                Op::Delete { v, pick } if !keys_of[v].is_empty() => {
                    let key = keys_of[v][pick % keys_of[v].len()];
                    expected.remove(&key);
                    stage(vec![StagedChange { vchannel: VCHANNELS[v].into(), ts, change: delete(vec![key]) }], 0, &journal);
                }
                Op::Upsert { .. } | Op::Delete { .. } => {}
                Op::Tick => stage(vec![], ts, &journal),
                Op::Apply => drain(&journal, &mut target, batch_rows),
                Op::Crash { point, calls } => {
                    target.crash = Some((point, calls));
                    let mut applier = Applier::new(TaskRun::unstarted("t"), &journal, &mut target, settings(batch_rows), Default::default(), Default::default());
                    // Dies at `point` if that many calls are made; the marker stays behind.
                    if applier.recover().is_ok() {
                        while applier.step().unwrap_or(false) && !applier.target.crashed {}
                    }
                    target.crash = None;
                    target.crashed = false;
                    // The process is gone, and with it what the journal kept in memory.
                    drop(journal);
                    journal = Journal::open(dir.path()).unwrap();
                }
                Op::Stop { calls } => {
                    let stop = Arc::new(AtomicBool::new(false));
                    target.stop = Some((calls, stop.clone()));
                    let mut applier = Applier::new(TaskRun::unstarted("t"), &journal, &mut target, settings(batch_rows), stop.clone(), Default::default());
                    applier.recover().unwrap();
                    while !stop.load(Ordering::Relaxed) && applier.step().unwrap() {}
                    target.stop = None;
                    // A stopped applier leaves nothing in doubt.
                    prop_assert_eq!(journal.in_flight("t").unwrap(), None);
                }
            }
        }
        ts += 1;
        stage(vec![], ts, &journal);
        drain(&journal, &mut target, batch_rows);

        prop_assert_eq!(journal.in_flight("t").unwrap(), None);
        for (key, copies) in &target.rows {
            prop_assert_eq!(copies.len(), 1, "key {} stored {} times", key, copies.len());
        }
        let actual: HashMap<i64, i64> = target.rows.iter().map(|(k, v)| (*k, v[0])).collect();
        prop_assert_eq!(actual, expected);
    }
}

/// Inserts of keys 1 to 4, one row each at timestamps 2 to 5 on one vchannel, all applicable;
/// the target refuses key 3 for good.
fn refused_third_row() -> (tempfile::TempDir, Journal, FakeTarget) {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let run = TaskRun::unstarted("t");
    let rows: Vec<_> = (1..=4)
        .map(|key| StagedChange {
            vchannel: VCHANNELS[0].into(),
            ts: key as u64 + 1,
            change: insert(vec![key], key),
        })
        .collect();
    let at = MqPosition::Kafka { next_offset: 1 };
    journal.stage(&run, "p0", &rows, at, 10).unwrap();
    let target = FakeTarget {
        refuse: Some(3),
        ..FakeTarget::default()
    };
    (dir, journal, target)
}

fn stored_keys(target: &FakeTarget) -> Vec<(i64, usize)> {
    let mut keys: Vec<_> = target.rows.iter().map(|(k, v)| (*k, v.len())).collect();
    keys.sort();
    keys
}

#[test]
fn a_refused_batch_is_taken_apart_and_the_task_stops_on_the_one_row_refused() {
    let (_dir, journal, mut target) = refused_third_row();
    let mut applier = new_applier(&journal, &mut target, 512);
    applier.recover().unwrap();
    let refused = applier.step().unwrap_err();
    assert!(
        matches!(refused, ApplyError::Target(TargetError::Permanent(_))),
        "{refused}"
    );

    let Isolated::Poison(poison) = applier.isolate().unwrap() else {
        panic!("the refused row is found")
    };
    let third = RowPosition { ts: 4, seq: 2 };
    assert_eq!(
        poison.at,
        PoisonAt::Row {
            vchannel: VCHANNELS[0].into(),
            position: third
        }
    );
    assert_eq!(poison.ts, Some(4));
    assert!(poison.error.contains("refused"), "{}", poison.error);
    assert_eq!(
        stored_keys(&target),
        [(1, 1), (2, 1)],
        "the rows before it, once each"
    );
    assert!(
        journal.in_flight("t").unwrap().is_some(),
        "the marker stays over the rest"
    );

    // A restart (no approval) stops on the same row again, and sends nothing twice.
    let mut applier = new_applier(&journal, &mut target, 512);
    assert!(applier.recover().is_err());
    assert_eq!(applier.isolate().unwrap(), Isolated::Poison(poison.clone()));

    // The operator approves skipping exactly that row: the rest goes through.
    applier.skip.approved = Some(poison.at);
    assert!(
        applier.recover().is_err(),
        "the batch as a whole is still refused"
    );
    assert_eq!(applier.isolate().unwrap(), Isolated::Applied);
    while applier.step().unwrap() {}
    assert_eq!(journal.in_flight("t").unwrap(), None);
    assert_eq!(stored_keys(&target), [(1, 1), (2, 1), (4, 1)]);
}

#[test]
fn with_skip_poison_every_refused_row_is_passed_over_and_the_rest_applied_once() {
    let (_dir, journal, mut target) = refused_third_row();
    let mut applier = new_applier(&journal, &mut target, 512);
    applier.skip.every = true;
    assert!(applier.step().is_err());
    assert_eq!(applier.isolate().unwrap(), Isolated::Applied);
    assert_eq!(journal.in_flight("t").unwrap(), None);
    assert_eq!(stored_keys(&target), [(1, 1), (2, 1), (4, 1)]);
}

#[test]
fn a_refusal_with_nothing_in_flight_is_not_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let mut target = FakeTarget::default();
    let mut applier = new_applier(&journal, &mut target, 512);
    assert_eq!(applier.isolate().unwrap(), Isolated::NothingInFlight);
}

#[test]
fn a_target_that_refuses_every_call_names_no_row_and_skip_poison_skips_nothing() {
    let (_dir, journal, mut target) = refused_third_row();
    target.refuse = None;
    target.blocked = true;
    let mut applier = new_applier(&journal, &mut target, 512);
    applier.skip.every = true;
    applier.settings.retry_initial = std::time::Duration::from_millis(1);
    applier.settings.retry_max = std::time::Duration::from_millis(1);
    applier.settings.retry_attempts = 2;
    let refused = applier.step().unwrap_err();
    assert!(
        matches!(refused, ApplyError::Target(TargetError::Blocked(_))),
        "{refused}"
    );
    // Taken apart, it still refuses no row in particular: nothing is passed over.
    assert!(matches!(
        applier.isolate(),
        Err(ApplyError::Target(TargetError::Blocked(_)))
    ));
    assert!(journal.in_flight("t").unwrap().is_some(), "the batch waits");

    // Repaired: every row arrives, once.
    applier.target.blocked = false;
    applier.recover().unwrap();
    while applier.step().unwrap() {}
    drop(applier);
    assert_eq!(journal.in_flight("t").unwrap(), None);
    assert_eq!(stored_keys(&target), [(1, 1), (2, 1), (3, 1), (4, 1)]);
}
