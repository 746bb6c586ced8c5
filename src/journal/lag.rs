//! How far behind a task is, read from the journal: the age of what the reader has staged and
//! of what the target has not acknowledged yet.

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
}

fn age_seconds(ts: u64, now_ms: u64) -> f64 {
    now_ms.saturating_sub(physical_ms(ts)) as f64 / 1000.0
}

/// How far behind `task` is at `now_ms` (Unix milliseconds).
pub fn task_lag(journal: &Journal, task: &str, now_ms: u64) -> Result<TaskLag, JournalError> {
    let ticks = journal.ticks(task)?;
    // The replicate-msg topic has no ticks, only its last event's stamp: its age says nothing
    // about how far the reader trails.
    let source = ticks
        .iter()
        .filter(|(pchannel, tick)| **tick > 0 && !is_replicate_topic(pchannel))
        .map(|(pchannel, tick)| (pchannel.clone(), age_seconds(*tick, now_ms)))
        .collect();
    let applied: HashMap<String, _> = journal.applied_positions(task)?.into_iter().collect();
    let mut vchannels: Vec<String> = journal.vchannels(task)?;
    vchannels.extend(applied.keys().cloned());
    vchannels.sort();
    vchannels.dedup();
    let mut target = BTreeMap::new();
    for vchannel in vchannels {
        let Some(&tick) = vchannel_pchannel(&vchannel).and_then(|p| ticks.get(p)) else {
            continue;
        };
        let after = applied.get(&vchannel).copied();
        let applied_through = match journal.first_position(task, &vchannel, after, tick)? {
            // Everything before the first pending change is applied.
            Some(pending) => pending.ts.saturating_sub(1),
            // The replicate channel has no ticks of its own (its "tick" is its last event):
            // with nothing pending it is not behind.
            None if is_replicate_topic(&vchannel) => continue,
            None => tick,
        };
        if applied_through > 0 {
            target.insert(vchannel, age_seconds(applied_through, now_ms));
        }
    }
    Ok(TaskLag { source, target })
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
