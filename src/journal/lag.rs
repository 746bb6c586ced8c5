//! How far behind a task is, read from the journal: the age of what the reader has staged and
//! of what the target has not acknowledged yet, and the task's consistency point.

use std::collections::{BTreeMap, HashMap};

use super::{Journal, JournalError};
use crate::model::{is_event_channel, physical_ms, vchannel_pchannel};

/// How far behind a task is, in seconds, at `now_ms` (Unix milliseconds).
#[derive(Debug, PartialEq)]
pub struct TaskLag {
    /// Per physical channel: age of the newest TimeTick staged (how far the reader trails the
    /// source).
    pub source: BTreeMap<String, f64>,
    /// Per vchannel: age of the oldest change not yet applied, or of the channel's newest
    /// TimeTick when everything up to it is applied (how far the target trails the source).
    pub target: BTreeMap<String, f64>,
    /// The consistency point (a hybrid source timestamp), see [`consistency_point`].
    pub consistent_ts: Option<u64>,
}

fn age_seconds(ts: u64, now_ms: u64) -> f64 {
    now_ms.saturating_sub(physical_ms(ts)) as f64 / 1000.0
}

/// The task's consistency point: the greatest source timestamp T such that every change of
/// every channel of the task at or before T is on the target, so the target holds the source's
/// state as of T (changes after T may be there too, on channels further ahead).
///
/// `bounds` are, per physical channel, the source time through which the reader has staged it
/// (see [`staged_through`]); `first_pending` the timestamp of the first change not applied yet
/// of each vchannel that has one at or below its channel's bound. T is the smallest bound, or
/// just before the earliest pending change when that comes first. An event channel (the
/// replicate-msg topic, the metadata channel) has no ticks (its "tick" is its last event): only
/// its pending event holds T. A channel not
/// staged through any time yet means there is no consistency point yet; so does T = 0.
///
/// T is not written anywhere of its own: it is derived from the ticks and applied positions
/// the journal stores (the stage and apply transactions), so it is stored with them and
/// survives restarts as they do; only the readers' "at the end" times (below) are in memory.
pub fn consistency_point<'a>(
    bounds: impl IntoIterator<Item = (&'a str, u64)>,
    first_pending: impl IntoIterator<Item = u64>,
) -> Option<u64> {
    let mut point: Option<u64> = None;
    for (pchannel, tick) in bounds {
        if is_event_channel(pchannel) {
            continue;
        }
        if tick == 0 {
            return None;
        }
        point = Some(point.map_or(tick, |p| p.min(tick)));
    }
    let point = first_pending
        .into_iter()
        .fold(point?, |p, ts| p.min(ts.saturating_sub(1)));
    (point > 0).then_some(point)
}

/// How long before the moment its reader found nothing more on a channel the source may still
/// stamp a message that reaches the channel after it: a message is stamped before it is
/// written, and the source's clock may run ahead of the appliance's.
pub const AT_END_MARGIN_MS: u64 = 3_000;

/// The source time through which a physical channel is staged: its newest tick, or, when its
/// reader has since been at the channel's end with everything it read staged (`at_end_ms`,
/// Unix ms), a little before that moment. Milvus sends ticks only on the channels some
/// collection uses: a channel no collection writes to, or whose collections were all dropped,
/// would otherwise hold the consistency point back for ever.
pub fn staged_through(tick: u64, at_end_ms: Option<u64>) -> u64 {
    let at_end = at_end_ms.map_or(0, |ms| ms.saturating_sub(AT_END_MARGIN_MS) << 18);
    tick.max(at_end)
}

/// How far the source's bulk inserts let the consistency point go (see `task::imports`): no
/// further than the last scan of them, and below each re-copy they started until it is done.
/// `None` for a task that never scanned them.
fn imports_bound(journal: &Journal, task: &str) -> Result<Option<u64>, JournalError> {
    let Some(seen) = journal.imports_seen(task)? else {
        return Ok(None);
    };
    let held = journal
        .copies(task)?
        .into_iter()
        .filter(|c| !c.is_done())
        .filter_map(|c| c.recopy)
        .map(|r| r.holds_from.saturating_sub(1));
    Ok(Some(held.fold(seen.checked_ts, u64::min)))
}

/// How far behind `task` is at `now_ms` (Unix milliseconds), and its consistency point.
///
/// `at_end` is when each channel's reader was last at its channel's end (Unix ms).
pub fn task_lag(
    journal: &Journal,
    task: &str,
    now_ms: u64,
    at_end: &BTreeMap<String, u64>,
) -> Result<TaskLag, JournalError> {
    let ticks = journal.ticks(task)?;
    let mut bounds: BTreeMap<String, u64> = ticks
        .iter()
        .map(|(p, tick)| (p.clone(), staged_through(*tick, at_end.get(p).copied())))
        .collect();
    for (p, ms) in at_end {
        bounds
            .entry(p.clone())
            .or_insert_with(|| staged_through(0, Some(*ms)));
    }
    // An event channel has no ticks, only its last event's stamp: its age says nothing about
    // how far the reader trails.
    let source = ticks
        .iter()
        .filter(|(pchannel, tick)| **tick > 0 && !is_event_channel(pchannel))
        .map(|(pchannel, tick)| (pchannel.clone(), age_seconds(*tick, now_ms)))
        .collect();
    // The vchannels before the applied positions: a vchannel leaves the list only once its
    // rows are applied, after its applied position is committed, so none with rows at or below
    // the ticks read above is missed by both reads. (A newer applied position only makes the
    // answer more recent; rows staged after the ticks are above them and not looked at.)
    let mut vchannels: Vec<String> = journal.vchannels(task)?;
    let applied: HashMap<String, _> = journal.applied_positions(task)?.into_iter().collect();
    vchannels.extend(applied.keys().cloned());
    vchannels.sort();
    vchannels.dedup();
    let mut target = BTreeMap::new();
    let mut first_pending = Vec::new();
    for vchannel in vchannels {
        let Some(pchannel) = vchannel_pchannel(&vchannel) else {
            continue;
        };
        let tick = ticks.get(pchannel).copied().unwrap_or(0);
        let bound = bounds.get(pchannel).copied().unwrap_or(tick);
        let after = applied.get(&vchannel).copied();
        let pending = journal.first_position(task, &vchannel, after, bound)?;
        if let Some(pending) = pending {
            first_pending.push(pending.ts);
        }
        let applied_through = match pending {
            // Everything before the first pending change is applied.
            Some(pending) if pending.ts <= tick => pending.ts.saturating_sub(1),
            // An event channel has no ticks of its own (its "tick" is its last event): with
            // nothing pending it is not behind.
            _ if is_event_channel(&vchannel) => continue,
            _ => tick,
        };
        if applied_through > 0 {
            target.insert(vchannel, age_seconds(applied_through, now_ms));
        }
    }
    let mut consistent_ts = consistency_point(
        bounds
            .iter()
            .map(|(pchannel, bound)| (pchannel.as_str(), *bound)),
        first_pending,
    );
    if let (Some(point), Some(bound)) = (consistent_ts, imports_bound(journal, task)?) {
        consistent_ts = Some(point.min(bound)).filter(|p| *p > 0);
    }
    Ok(TaskLag {
        source,
        target,
        consistent_ts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{InFlightBatch, TaskRun};
    use crate::model::{
        Change, CollectionRef, DeleteBatch, MqPosition, PrimaryKeys, RowPosition, StagedChange,
    };

    /// A hybrid timestamp at `ms` Unix milliseconds.
    fn at(ms: u64) -> u64 {
        ms << 18
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 0.01
    }

    fn delete_at(vchannel: &str, ts: u64) -> StagedChange {
        StagedChange {
            vchannel: vchannel.into(),
            ts,
            change: Change::Delete(DeleteBatch {
                collection: CollectionRef {
                    id: 1,
                    db_name: "default".into(),
                    name: "c".into(),
                },
                partition: String::new(),
                keys: PrimaryKeys::Int64(vec![1]),
            }),
        }
    }

    /// Stages `changes` read from `pchannel`, with its newest tick now `tick`.
    fn stage(journal: &Journal, pchannel: &str, changes: &[StagedChange], tick: u64) {
        let next = MqPosition::Kafka {
            next_offset: tick as i64,
        };
        journal
            .stage(&TaskRun::unstarted("t"), pchannel, changes, next, tick)
            .unwrap();
    }

    /// The target acknowledged `vchannel` through its changes at `ts`.
    fn apply_through(journal: &Journal, vchannel: &str, ts: u64) {
        let batch = InFlightBatch {
            ends: vec![(vchannel.into(), RowPosition { ts, seq: u64::MAX })],
        };
        journal
            .commit_batch(&TaskRun::unstarted("t"), &batch, false)
            .unwrap();
    }

    fn consistent(journal: &Journal) -> Option<u64> {
        consistent_with(journal, &BTreeMap::new())
    }

    fn consistent_with(journal: &Journal, at_end: &BTreeMap<String, u64>) -> Option<u64> {
        task_lag(journal, "t", 100_000, at_end)
            .unwrap()
            .consistent_ts
    }

    #[test]
    fn a_channel_without_ticks_is_vouched_for_by_its_reader_being_at_its_end() {
        // p1 carries no collection: Milvus sends it no ticks, and p0's tick alone cannot say
        // that nothing was written to p1. Its reader, at the end at 99 s, vouches for it up
        // to a margin before.
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        stage(&journal, "p0", &[], at(99_500));
        stage(&journal, "p1", &[], 0);
        assert_eq!(consistent(&journal), None);
        let at_end = BTreeMap::from([("p1".to_owned(), 99_000)]);
        assert_eq!(
            consistent_with(&journal, &at_end),
            Some(at(99_000 - AT_END_MARGIN_MS))
        );
        // A channel whose collections were all dropped: its tick stopped at 50 s.
        stage(&journal, "p1", &[], at(50_000));
        assert_eq!(consistent(&journal), Some(at(50_000)));
        assert_eq!(
            consistent_with(&journal, &at_end),
            Some(at(99_000 - AT_END_MARGIN_MS))
        );
        // A reader that was at its end long ago vouches for no more than then.
        let stale = BTreeMap::from([("p1".to_owned(), 60_000)]);
        assert_eq!(
            consistent_with(&journal, &stale),
            Some(at(60_000 - AT_END_MARGIN_MS))
        );
    }

    #[test]
    fn a_change_staged_above_the_tick_holds_the_point_its_reader_vouches_past() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        stage(
            &journal,
            "p0",
            &[delete_at("p0_1v0", at(96_000))],
            at(95_000),
        );
        let at_end = BTreeMap::from([("p0".to_owned(), 99_000 + AT_END_MARGIN_MS)]);
        assert_eq!(consistent_with(&journal, &at_end), Some(at(96_000) - 1));
    }

    #[test]
    fn a_bulk_insert_holds_the_point_below_it_until_its_copy_is_done_and_unseen_ones_past_the_scan()
    {
        use crate::journal::ImportsSeen;
        use crate::model::{CopyProgress, CopyState, Recopy};
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let run = TaskRun::unstarted("t");
        stage(&journal, "p0", &[], at(95_000));
        assert_eq!(consistent(&journal), Some(at(95_000)), "never scanned");
        let seen = |checked_ms| ImportsSeen {
            completed: Default::default(),
            checked_ts: at(checked_ms),
        };
        journal.put_imports_seen(&run, &seen(94_000), &[]).unwrap();
        assert_eq!(
            consistent(&journal),
            Some(at(94_000)),
            "an import completed after the last scan may not be seen yet"
        );
        let c = CollectionRef {
            id: 1,
            db_name: "default".into(),
            name: "c".into(),
        };
        let mut copy = CopyProgress {
            recopy: Some(Recopy {
                cause: "bulk insert 1".into(),
                holds_from: at(90_000),
                segments: vec![],
            }),
            ..CopyProgress::of_test_collection(c, CopyState::beginning())
        };
        journal
            .put_imports_seen(&run, &seen(96_000), std::slice::from_ref(&copy))
            .unwrap();
        assert_eq!(consistent(&journal), Some(at(90_000) - 1), "copying");
        copy.state = CopyState::Done { replay_through: 0 };
        journal.put_copy(&run, &copy).unwrap();
        assert_eq!(consistent(&journal), Some(at(95_000)), "copied");
    }

    #[test]
    fn the_metadata_channels_stamp_is_no_bound_on_the_point() {
        assert_eq!(
            consistency_point([("p0", 500), ("by-dev-etcd-meta", 20)], []),
            Some(500)
        );
        assert_eq!(
            consistency_point([("p0", 500), ("by-dev-etcd-meta", 0)], []),
            Some(500)
        );
    }

    #[test]
    fn there_is_no_consistency_point_until_every_channel_has_staged_a_tick() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(consistent(&journal), None, "nothing staged");
        stage(&journal, "p0", &[], at(95_000));
        stage(&journal, "p1", &[], 0);
        assert_eq!(consistent(&journal), None, "p1 has no tick yet");
        stage(&journal, "p1", &[], at(96_000));
        assert_eq!(consistent(&journal), Some(at(95_000)));
    }

    #[test]
    fn the_slower_channel_decides_the_consistency_point() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        stage(&journal, "p0", &[], at(97_000));
        stage(&journal, "p1", &[], at(93_000));
        assert_eq!(consistent(&journal), Some(at(93_000)));
        stage(&journal, "p1", &[], at(99_000));
        assert_eq!(consistent(&journal), Some(at(97_000)));
    }

    #[test]
    fn a_pending_change_holds_the_consistency_point_just_before_it_until_applied() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        stage(&journal, "p1", &[], at(99_000));
        let rows = [
            delete_at("p0_1v0", at(90_000)),
            delete_at("p0_1v0", at(92_000)),
        ];
        stage(&journal, "p0", &rows, at(95_000));
        assert_eq!(consistent(&journal), Some(at(90_000) - 1));
        apply_through(&journal, "p0_1v0", at(90_000));
        assert_eq!(consistent(&journal), Some(at(92_000) - 1));
        apply_through(&journal, "p0_1v0", at(92_000));
        assert_eq!(
            consistent(&journal),
            Some(at(95_000)),
            "caught up: the smallest tick"
        );
    }

    #[test]
    fn a_change_above_its_channels_tick_does_not_hold_the_consistency_point() {
        // Its channel's tick is below it: the tick decides, whatever is staged above.
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        stage(
            &journal,
            "p0",
            &[delete_at("p0_1v0", at(96_000))],
            at(95_000),
        );
        assert_eq!(consistent(&journal), Some(at(95_000)));
    }

    #[test]
    fn a_pending_event_of_the_replicate_channel_holds_the_consistency_point() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let replicate = "by-dev-replicate-msg";
        stage(&journal, "p0", &[], at(95_000));
        stage(
            &journal,
            replicate,
            &[delete_at(replicate, at(90_000))],
            at(90_000),
        );
        assert_eq!(consistent(&journal), Some(at(90_000) - 1));
        apply_through(&journal, replicate, at(90_000));
        assert_eq!(
            consistent(&journal),
            Some(at(95_000)),
            "its last event's stamp is no tick: it does not hold the point"
        );
    }

    #[test]
    fn the_consistency_point_is_read_again_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let journal = Journal::open(dir.path()).unwrap();
            stage(
                &journal,
                "p0",
                &[delete_at("p0_1v0", at(90_000))],
                at(95_000),
            );
            assert_eq!(consistent(&journal), Some(at(90_000) - 1));
        }
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(consistent(&journal), Some(at(90_000) - 1));
        apply_through(&journal, "p0_1v0", at(90_000));
        drop(journal);
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(consistent(&journal), Some(at(95_000)));
    }

    #[test]
    fn lag_is_the_age_of_the_oldest_unapplied_change_then_of_the_tick() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let delete = Change::Delete(DeleteBatch {
            collection: CollectionRef {
                id: 1,
                db_name: "default".into(),
                name: "c".into(),
            },
            partition: String::new(),
            keys: PrimaryKeys::Int64(vec![1]),
        });
        let change = StagedChange {
            vchannel: "p0_1v0".into(),
            ts: at(90_000),
            change: delete,
        };
        let next = MqPosition::Kafka { next_offset: 2 };
        journal
            .stage(&TaskRun::unstarted("t"), "p0", &[change], next, at(95_000))
            .unwrap();

        let lag = task_lag(&journal, "t", 100_000, &BTreeMap::new()).unwrap();
        assert!(close(lag.source["p0"], 5.0), "{lag:?}");
        assert!(close(lag.target["p0_1v0"], 10.0), "{lag:?}");

        let applied = InFlightBatch {
            ends: vec![(
                "p0_1v0".into(),
                RowPosition {
                    ts: at(90_000),
                    seq: 0,
                },
            )],
        };
        journal
            .commit_batch(&TaskRun::unstarted("t"), &applied, false)
            .unwrap();
        let lag = task_lag(&journal, "t", 100_000, &BTreeMap::new()).unwrap();
        assert!(close(lag.target["p0_1v0"], 5.0), "caught up: {lag:?}");
    }

    #[test]
    fn the_replicate_channel_lags_only_while_an_event_is_pending() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let replicate = "by-dev-replicate-msg";
        let event = StagedChange {
            vchannel: replicate.into(),
            ts: at(90_000),
            change: Change::Ddl(crate::model::Ddl {
                collection: CollectionRef {
                    id: 1,
                    db_name: "default".into(),
                    name: "c".into(),
                },
                barrier: vec![replicate.into()],
                event: crate::model::DdlEvent::Replicated {
                    kind: crate::model::ReplicatedKind::Flush,
                    request: vec![],
                    waits_for: vec![],
                },
            }),
        };
        let next = MqPosition::Kafka { next_offset: 1 };
        journal
            .stage(
                &TaskRun::unstarted("t"),
                replicate,
                &[event],
                next,
                at(90_000),
            )
            .unwrap();
        let lag = task_lag(&journal, "t", 100_000, &BTreeMap::new()).unwrap();
        assert!(close(lag.target[replicate], 10.0), "pending: {lag:?}");
        assert!(lag.source.is_empty(), "no ticks to age: {lag:?}");
        let applied = InFlightBatch {
            ends: vec![(
                replicate.into(),
                RowPosition {
                    ts: at(90_000),
                    seq: 0,
                },
            )],
        };
        journal
            .commit_batch(&TaskRun::unstarted("t"), &applied, false)
            .unwrap();
        let lag = task_lag(&journal, "t", 500_000, &BTreeMap::new()).unwrap();
        assert!(
            !lag.target.contains_key(replicate),
            "idle is not behind: {lag:?}"
        );
    }
}
