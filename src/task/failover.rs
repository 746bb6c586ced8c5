//! Failover: the source is gone (its etcd and broker unreachable) and its target takes over.
//!
//! [`Supervisor::failover`] records the task FailingOver and stops its threads: from then on
//! nothing reads the source. One thread drains the journal: it applies every row up to its
//! channel's last staged tick, as the applier always does (`apply::order`). Rows past a
//! channel's last tick stay: they may be half of an upsert whose other half was never read, so
//! applying them could lose a row. Once nothing more can be applied, the rows left (the held
//! changes) are written to a JSON Lines file, then the report, and the task is recorded
//! FailedOver with the report. FailedOver is terminal: the task never resumes, never reads.
//!
//! Crash behaviour: FailingOver is recorded before the drain starts, and a task recorded so is
//! drained again at start-up (`Supervisor::resume_all`); the drain is the applier's, exactly
//! once (`apply`). The held file and the report are each written whole (a temporary file,
//! synced, renamed) before the task is recorded FailedOver, so a crash in between leaves the
//! task FailingOver, and the next start writes both again from the same journal rows. A
//! failover repeated answers the task as it is.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{info, info_span, warn};

use super::runner::Pause;
use super::{Supervisor, TaskError, TaskSpec, TaskState, record};
use crate::apply::{ApplyError, Isolated, TargetError};
use crate::journal::dump::describe;
use crate::journal::lag::consistency_point;
use crate::journal::{Journal, JournalError, TaskRun};
use crate::milvus_client::RowReader;
use crate::model::{CollectionRef, hybrid_time};

/// How long the drain waits for the target to become ready for an event it is not ready for
/// (a load before its index is built, say) once nothing else is left to apply. Past it, the
/// event is held with the rest.
const NOT_READY_PATIENCE: Duration = Duration::from_secs(60);

/// What a failover did: where the target stands, and what it could not take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FailoverReport {
    /// When the failover ended, RFC 3339 UTC.
    pub finished: String,
    /// The final consistency point: every change of the source at or before it is on the
    /// target. None when nothing of the source was ever staged through a tick.
    pub consistent_through: Option<SourceTime>,
    /// Per physical channel, the last tick staged: every change of the channel up to it is
    /// applied (but a `poison`, and what follows it on its vchannel).
    pub channels: Vec<ChannelTick>,
    /// The task's collections on the target when the failover ended, with their rows.
    pub collections: Vec<CollectionRows>,
    /// The changes that could not be applied, kept in a file.
    pub held: HeldChanges,
    /// The change the target refused for good, if the drain stopped on one: it and the rest of
    /// its vchannel are held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poison: Option<String>,
    /// This report as a file.
    pub report_file: String,
}

/// A source timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SourceTime {
    /// Hybrid: physical milliseconds << 18 | logical.
    pub timestamp: u64,
    /// Its physical time, RFC 3339 UTC.
    pub time: String,
}

impl SourceTime {
    pub fn at(timestamp: u64) -> Self {
        Self {
            timestamp,
            time: hybrid_time(timestamp),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChannelTick {
    pub channel: String,
    pub last_tick: SourceTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CollectionRows {
    pub database: String,
    pub collection: String,
    /// Counted by the target; None when it could not count them (`error` says why).
    pub rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeldChanges {
    /// JSON Lines, one change each in journal order per vchannel: `vchannel`, `ts`, `seq`,
    /// `time`, `operation`, `collection`, `rows`, and the whole `change`.
    pub file: String,
    pub changes: u64,
    pub rows: u64,
}

/// One line of the held file.
#[derive(Serialize)]
struct HeldLine<'a> {
    vchannel: &'a str,
    ts: u64,
    seq: u64,
    time: String,
    operation: String,
    collection: String,
    rows: u64,
    change: &'a crate::model::Change,
}

impl Supervisor {
    /// Fails the task over: it reads the source no more, applies what its journal holds that
    /// can be applied consistently, and ends FailedOver with its report (see the module).
    /// Answers at once, the task FailingOver; repeated, it answers the task as it is.
    pub fn failover(self: &Arc<Self>, id: &str) -> Result<TaskSpec, TaskError> {
        self.here(id)?;
        let _turn = self.turn_blocking(id);
        let spec = self.stored(id)?;
        match spec.state {
            TaskState::FailedOver => return Ok(spec),
            TaskState::FailingOver if self.is_running(id) => return Ok(self.with_health(spec)),
            _ => {}
        }
        // Its source is fenced and drained, and its reverse task writes there now: that one is
        // what a lost primary fails over.
        if let Some(report) = spec.switchover.as_ref().and_then(|s| s.report.as_ref()) {
            return Err(TaskError::SwitchedOver {
                task: spec.task_id.clone(),
                reverse: report.reverse_task.clone(),
            });
        }
        // Stopped before the record is read: an ending run's failure cannot overwrite it.
        self.stop(id);
        let mut spec = self.stored(id)?;
        spec.state = TaskState::FailingOver;
        spec.reason = None;
        self.save(&spec)?;
        warn!(
            task = id,
            "failover: the task reads the source no more and applies what its journal holds"
        );
        self.start_failover(spec.clone())?;
        Ok(self.with_health(spec))
    }

    /// Starts the drain of a task recorded FailingOver, as a run of its own.
    pub(super) fn start_failover(self: &Arc<Self>, spec: TaskSpec) -> Result<(), TaskError> {
        self.start_run(spec, &[Self::run_failover])
    }

    fn run_failover(self: Arc<Self>, spec: TaskSpec, run: TaskRun, stop: Arc<AtomicBool>) {
        let _span = info_span!("failover", task = %spec.task_id).entered();
        let Some(poison) =
            self.until_done(&spec, &stop, "apply", || self.drain(&spec, &run, &stop))
        else {
            return;
        };
        if self
            .until_done(&spec, &stop, "write its report", || {
                self.finish_failover(&spec, &run, poison.clone())
            })
            .is_some()
        {
            self.health(&spec.task_id).resolved("failover");
        }
    }

    /// Runs `step` until it succeeds: the target or the journal's disk may be out for a while,
    /// and the task shows why meanwhile. None once the run is stopped or a newer one took over.
    fn until_done<T>(
        &self,
        spec: &TaskSpec,
        stop: &AtomicBool,
        what: &str,
        mut step: impl FnMut() -> Result<T, TaskError>,
    ) -> Option<T> {
        let mut pause = Pause::default();
        loop {
            match step() {
                Ok(done) => return Some(done),
                Err(err) if stale(&err) => return None,
                Err(err) => {
                    warn!(%err, "failover: cannot {what} yet; retrying");
                    self.health(&spec.task_id).problem("failover", &err);
                }
            }
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            pause.wait(stop);
        }
    }

    /// Applies everything that can be applied; answers the change the target refused for
    /// good, if it stopped on one.
    fn drain(
        &self,
        spec: &TaskSpec,
        run: &TaskRun,
        stop: &Arc<AtomicBool>,
    ) -> Result<Option<String>, TaskError> {
        let mut applier = self.applier_of(spec, run.clone(), stop)?;
        applier.recover().map_err(apply_error)?;
        let mut idle_since: Option<Instant> = None;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Err(TaskError::Failover {
                    task: spec.task_id.clone(),
                    reason: "stopped".into(),
                });
            }
            match applier.step() {
                Ok(true) => idle_since = None,
                Ok(false) if applier.waits_for_target() => {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= NOT_READY_PATIENCE {
                        return Ok(None);
                    }
                    std::thread::sleep(crate::apply::NOT_READY_RECHECK);
                }
                Ok(false) => return Ok(None),
                Err(ApplyError::Target(TargetError::Permanent(reason))) => {
                    match applier.isolate().map_err(apply_error)? {
                        Isolated::Poison(poison) => return Ok(Some(poison.to_string())),
                        Isolated::NothingInFlight => return Ok(Some(reason)),
                        Isolated::Applied => idle_since = None,
                    }
                }
                Err(err) => return Err(apply_error(err)),
            }
        }
    }

    /// Writes the held changes and the report, and records the task FailedOver with it.
    fn finish_failover(
        &self,
        spec: &TaskSpec,
        run: &TaskRun,
        poison: Option<String>,
    ) -> Result<(), TaskError> {
        let id = &spec.task_id;
        let failed = |reason: String| TaskError::Failover {
            task: id.clone(),
            reason,
        };
        let dir = self.config.data_dir.join("failover");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| failed(format!("cannot make {}: {e}", dir.display())))?;
        let held_file = dir.join(format!("{id}-held.jsonl"));
        let held = write_held(&self.journal, id, &held_file)?;
        let report_file = dir.join(format!("{id}-report.json"));
        let report = FailoverReport {
            finished: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            consistent_through: failover_point(&self.journal, id)?.map(SourceTime::at),
            channels: last_ticks(&self.journal, id)?,
            collections: self.collection_rows(spec),
            held,
            poison,
            report_file: report_file.display().to_string(),
        };
        let text = serde_json::to_vec_pretty(&report).map_err(|e| failed(e.to_string()))?;
        write_whole(&report_file, |out| out.write_all(&text))
            .map_err(|e| failed(format!("cannot write {}: {e}", report_file.display())))?;
        crate::failpoint::hit("failover-before-record");
        let mut spec = self.stored(id)?;
        spec.state = TaskState::FailedOver;
        spec.reason = None;
        spec.failover = Some(Box::new(report));
        self.journal.put_task_of_run(run, &record(&spec)?)?;
        info!(task = id.as_str(), report = %report_file.display(), "task failed over");
        Ok(())
    }

    /// The task's collections on the target, each with its rows (counted by the target).
    fn collection_rows(&self, spec: &TaskSpec) -> Vec<CollectionRows> {
        let reader = match self.target_client(spec) {
            Ok(client) => RowReader {
                role: "target",
                client,
            },
            Err(err) => return unlisted(err.to_string()),
        };
        let scope = spec.scope();
        self.runtime.block_on(async {
            let listed = match reader.collections().await {
                Ok(listed) => listed,
                Err(err) => return unlisted(err.to_string()),
            };
            let mut found = Vec::new();
            for (database, collection) in listed {
                if !scope.contains_on_target(&database, &collection) {
                    continue;
                }
                let c = CollectionRef {
                    id: 0,
                    db_name: database.clone(),
                    name: collection.clone(),
                };
                let counted = reader.count(&c, "").await;
                found.push(CollectionRows {
                    database,
                    collection,
                    rows: counted.as_ref().ok().copied(),
                    error: counted.err().map(|e| e.to_string()),
                });
            }
            found
        })
    }
}

/// The report's collections when the target's cannot be listed: why.
fn unlisted(error: String) -> Vec<CollectionRows> {
    vec![CollectionRows {
        database: String::new(),
        collection: String::new(),
        rows: None,
        error: Some(error),
    }]
}

/// Whether the error says a newer run of the task took over: this one ends quietly.
fn stale(err: &TaskError) -> bool {
    matches!(err, TaskError::Journal(JournalError::StaleRun { .. }))
}

fn apply_error(err: ApplyError) -> TaskError {
    match err {
        ApplyError::Journal(err) => err.into(),
        ApplyError::Target(err) => err.into(),
        ApplyError::Undecodable(err) => TaskError::Internal(err.to_string()),
    }
}

/// The final consistency point: the smallest last tick over the channels that staged one,
/// or just before the first change left of any vchannel when that comes first. (A channel
/// that never staged a tick has nothing applied: its changes, if any, are held and bound the
/// point.)
fn failover_point(journal: &Journal, task: &str) -> Result<Option<u64>, JournalError> {
    let ticks = journal.ticks(task)?;
    let bounds = ticks
        .iter()
        .filter(|(_, tick)| **tick > 0)
        .map(|(pchannel, tick)| (pchannel.as_str(), *tick));
    let mut first_left = Vec::new();
    for vchannel in journal.vchannels(task)? {
        let after = journal.applied(task, &vchannel)?;
        if let Some(row) = journal
            .rows(task, &vchannel, after, u64::MAX, 1, 0)?
            .first()
        {
            first_left.push(row.position.ts);
        }
    }
    Ok(consistency_point(bounds, first_left))
}

fn last_ticks(journal: &Journal, task: &str) -> Result<Vec<ChannelTick>, JournalError> {
    let mut channels: Vec<ChannelTick> = journal
        .ticks(task)?
        .into_iter()
        .filter(|(pchannel, tick)| *tick > 0 && !crate::model::is_event_channel(pchannel))
        .map(|(channel, tick)| ChannelTick {
            channel,
            last_tick: SourceTime::at(tick),
        })
        .collect();
    channels.sort_by(|a, b| a.channel.cmp(&b.channel));
    Ok(channels)
}

/// Writes every change of `task` not applied to `path`, one JSON line each.
fn write_held(journal: &Journal, task: &str, path: &Path) -> Result<HeldChanges, TaskError> {
    let mut held = HeldChanges {
        file: path.display().to_string(),
        ..HeldChanges::default()
    };
    let mut vchannels = journal.vchannels(task)?;
    vchannels.sort();
    let failed = |reason: String| TaskError::Failover {
        task: task.to_owned(),
        reason: format!("cannot write {}: {reason}", path.display()),
    };
    let mut journal_error = None;
    write_whole(path, |out| {
        for vchannel in &vchannels {
            let mut after = journal.applied(task, vchannel).map_err(|e| other(&e))?;
            loop {
                let rows = match journal.rows(task, vchannel, after, u64::MAX, 256, 4 << 20) {
                    Ok(rows) => rows,
                    Err(err) => {
                        let io = other(&err);
                        journal_error = Some(err);
                        return Err(io);
                    }
                };
                let Some(last) = rows.last() else { break };
                after = Some(last.position);
                for row in &rows {
                    let (operation, collection, count) = describe(&row.change);
                    let line = HeldLine {
                        vchannel,
                        ts: row.position.ts,
                        seq: row.position.seq,
                        time: hybrid_time(row.position.ts),
                        operation,
                        collection,
                        rows: count,
                        change: &row.change,
                    };
                    serde_json::to_writer(&mut *out, &line)?;
                    out.write_all(b"\n")?;
                    held.changes += 1;
                    held.rows += count;
                }
            }
        }
        Ok(())
    })
    .map_err(|e| match journal_error.take() {
        Some(err) => err.into(),
        None => failed(e.to_string()),
    })?;
    Ok(held)
}

fn other(err: &JournalError) -> std::io::Error {
    std::io::Error::other(err.to_string())
}

/// Writes `path` whole or not at all: a temporary file beside it (readable by its owner only:
/// it holds the source's rows), synced, then renamed over it.
fn write_whole(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut temporary = PathBuf::from(path);
    temporary.as_mut_os_string().push(".partial");
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    let mut out = std::io::BufWriter::new(file);
    write(&mut out)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::InFlightBatch;
    use crate::model::{
        Change, CollectionRef, DeleteBatch, MqPosition, PrimaryKeys, RowPosition, StagedChange,
    };

    fn staged(vchannel: &str, ts: u64, key: i64) -> StagedChange {
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
                keys: PrimaryKeys::Int64(vec![key]),
            }),
        }
    }

    #[test]
    fn what_no_tick_covers_is_held_in_the_file_and_the_point_stays_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let run = TaskRun::unstarted("t");
        let (a, b) = ("p0-rootcoord-dml_0_1v0", "p0-rootcoord-dml_1_1v0");
        let next = MqPosition::Kafka { next_offset: 3 };
        journal
            .stage(
                &run,
                "p0-rootcoord-dml_0",
                &[staged(a, 10 << 18, 1), staged(a, 30 << 18, 2)],
                next,
                20 << 18,
            )
            .unwrap();
        journal
            .stage(
                &run,
                "p0-rootcoord-dml_1",
                &[staged(b, 15 << 18, 3)],
                next,
                25 << 18,
            )
            .unwrap();
        // Everything the ticks cover is applied, as the drain leaves it.
        let applied = InFlightBatch {
            ends: vec![
                (
                    a.into(),
                    RowPosition {
                        ts: 10 << 18,
                        seq: 0,
                    },
                ),
                (
                    b.into(),
                    RowPosition {
                        ts: 15 << 18,
                        seq: 2,
                    },
                ),
            ],
        };
        journal.begin_batch(&run, &applied).unwrap();
        journal.commit_batch(&run, &applied, false).unwrap();

        assert_eq!(
            failover_point(&journal, "t").unwrap(),
            Some(20 << 18),
            "the smaller tick: the held row at 30 comes after it"
        );
        let file = dir.path().join("held.jsonl");
        let held = write_held(&journal, "t", &file).unwrap();
        assert_eq!((held.changes, held.rows), (1, 1));
        let text = std::fs::read_to_string(&file).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(line["vchannel"], a);
        assert_eq!(line["ts"], 30u64 << 18);
        assert_eq!(
            line["change"]["Delete"]["keys"]["Int64"],
            serde_json::json!([2])
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the held rows are the owner's only");
    }

    #[test]
    fn a_held_row_before_the_smallest_tick_holds_the_point_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let run = TaskRun::unstarted("t");
        let a = "p0-rootcoord-dml_0_1v0";
        let next = MqPosition::Kafka { next_offset: 1 };
        // A row its tick covers that was not applied (the target refused it for good).
        journal
            .stage(
                &run,
                "p0-rootcoord-dml_0",
                &[staged(a, 10 << 18, 1)],
                next,
                20 << 18,
            )
            .unwrap();
        assert_eq!(failover_point(&journal, "t").unwrap(), Some((10 << 18) - 1));
    }
}
