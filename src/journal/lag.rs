//! How far behind a task is, read from the journal: the age of what the reader has staged and
//! of what the target has not acknowledged yet, and the task's consistency point.

use std::collections::{BTreeMap, HashMap};

use super::{Journal, JournalError};
use crate::model::{is_replicate_topic, physical_ms, vchannel_pchannel};

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
/// `ticks` are the newest TimeTicks staged per physical channel, `first_pending` the timestamp
/// of the first change not applied yet of each vchannel that has one at or below its channel's
/// tick. T is the smallest tick of a physical channel, or just before the earliest pending
/// change when that comes first. The replicate-msg topic has no ticks (its "tick" is its last
/// event): only its pending event holds T. A channel that has staged no tick yet means there
/// is no consistency point yet; so does T = 0.
///
/// T is not written anywhere of its own: it is derived from the ticks and applied positions
/// the journal stores (the stage and apply transactions), so it is stored with them and
/// survives restarts as they do.
pub fn consistency_point<'a>(
    ticks: impl IntoIterator<Item = (&'a str, u64)>,
    first_pending: impl IntoIterator<Item = u64>,
) -> Option<u64> {
    let mut point: Option<u64> = None;
    for (pchannel, tick) in ticks {
        if is_replicate_topic(pchannel) {
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

/// How far behind `task` is at `now_ms` (Unix milliseconds), and its consistency point.
pub fn task_lag(journal: &Journal, task: &str, now_ms: u64) -> Result<TaskLag, JournalError> {
    let ticks = journal.ticks(task)?;
    // The replicate-msg topic has no ticks, only its last event's stamp: its age says nothing
    // about how far the reader trails.
    let source = ticks
        .iter()
        .filter(|(pchannel, tick)| **tick > 0 && !is_replicate_topic(pchannel))
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
        let Some(&tick) = vchannel_pchannel(&vchannel).and_then(|p| ticks.get(p)) else {
            continue;
        };
        let after = applied.get(&vchannel).copied();
        let applied_through = match journal.first_position(task, &vchannel, after, tick)? {
            // Everything before the first pending change is applied.
            Some(pending) => {
                first_pending.push(pending.ts);
                pending.ts.saturating_sub(1)
            }
            // The replicate channel has no ticks of its own (its "tick" is its last event):
            // with nothing pending it is not behind.
            None if is_replicate_topic(&vchannel) => continue,
            None => tick,
        };
        if applied_through > 0 {
            target.insert(vchannel, age_seconds(applied_through, now_ms));
        }
    }
    let consistent_ts = consistency_point(
        ticks
            .iter()
            .map(|(pchannel, tick)| (pchannel.as_str(), *tick)),
        first_pending,
    );
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
        task_lag(journal, "t", 100_000).unwrap().consistent_ts
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

        let lag = task_lag(&journal, "t", 100_000).unwrap();
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
        let lag = task_lag(&journal, "t", 100_000).unwrap();
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
        let lag = task_lag(&journal, "t", 100_000).unwrap();
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
        let lag = task_lag(&journal, "t", 500_000).unwrap();
        assert!(
            !lag.target.contains_key(replicate),
            "idle is not behind: {lag:?}"
        );
    }
}
