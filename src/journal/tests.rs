use super::*;
use crate::model::*;
use crate::model::{MqPosition, StagedChange};
use std::time::Duration;

fn journal() -> (tempfile::TempDir, Journal) {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    (dir, journal)
}

fn delete(keys: &[i64]) -> Change {
    Change::Delete(DeleteBatch {
        collection: CollectionRef {
            id: 1,
            db_name: "default".into(),
            name: "c".into(),
        },
        partition: String::new(),
        keys: PrimaryKeys::Int64(keys.to_vec()),
    })
}

fn staged(vchannel: &str, ts: u64, key: i64) -> StagedChange {
    StagedChange {
        vchannel: vchannel.into(),
        ts,
        change: delete(&[key]),
    }
}

fn kafka(next_offset: i64) -> MqPosition {
    MqPosition::Kafka { next_offset }
}

#[test]
fn staging_moves_rows_and_offset_together() {
    let (_dir, j) = journal();
    assert_eq!(j.source_offset("t", "p0").unwrap(), None);
    j.stage(
        &TaskRun::unstarted("t"),
        "p0",
        &[staged("p0_1v0", 10, 1), staged("p0_1v0", 10, 2)],
        kafka(5),
        12,
    )
    .unwrap();
    let offset = j.source_offset("t", "p0").unwrap().unwrap();
    assert_eq!(
        offset,
        SourceOffset {
            next: kafka(5),
            tick: 12,
            next_seq: 2,
            last: None,
        }
    );
    let rows = j
        .rows("t", "p0_1v0", None, u64::MAX, 100, usize::MAX)
        .unwrap();
    assert_eq!(
        rows.iter().map(|r| r.position).collect::<Vec<_>>(),
        [
            RowPosition { ts: 10, seq: 0 },
            RowPosition { ts: 10, seq: 1 }
        ]
    );
    assert!(j.journal_bytes().unwrap() > 0);
}

#[test]
fn a_tick_never_moves_back() {
    let (_dir, j) = journal();
    j.stage(&TaskRun::unstarted("t"), "p0", &[], kafka(1), 50)
        .unwrap();
    j.stage(&TaskRun::unstarted("t"), "p0", &[], kafka(2), 40)
        .unwrap();
    assert_eq!(j.source_offset("t", "p0").unwrap().unwrap().tick, 50);
}

#[test]
fn sequence_numbers_are_never_reused_after_rows_are_removed() {
    let (_dir, j) = journal();
    j.stage(
        &TaskRun::unstarted("t"),
        "p0",
        &[staged("v", 10, 1)],
        kafka(1),
        0,
    )
    .unwrap();
    let batch = InFlightBatch {
        ends: vec![("v".into(), RowPosition { ts: 10, seq: 0 })],
    };
    j.commit_batch(&TaskRun::unstarted("t"), &batch, false)
        .unwrap();
    j.stage(
        &TaskRun::unstarted("t"),
        "p0",
        &[staged("v", 10, 2)],
        kafka(2),
        0,
    )
    .unwrap();
    let rows = j
        .rows(
            "t",
            "v",
            j.applied("t", "v").unwrap(),
            u64::MAX,
            10,
            usize::MAX,
        )
        .unwrap();
    assert_eq!(
        rows.len(),
        1,
        "the new row sorts after the applied position"
    );
    assert_eq!(rows[0].position, RowPosition { ts: 10, seq: 1 });
}

#[test]
fn rows_respect_position_timestamp_and_limits() {
    let (_dir, j) = journal();
    let changes: Vec<_> = (0..10).map(|i| staged("v", 100 + i, i as i64)).collect();
    j.stage(&TaskRun::unstarted("t"), "p0", &changes, kafka(10), 0)
        .unwrap();
    let after = Some(RowPosition { ts: 102, seq: 2 });
    let rows = j.rows("t", "v", after, 106, 100, usize::MAX).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.position.ts).collect::<Vec<_>>(),
        [103, 104, 105, 106]
    );
    assert_eq!(
        j.rows("t", "v", after, 106, 2, usize::MAX).unwrap().len(),
        2
    );
    assert_eq!(
        j.rows("t", "v", after, 106, 100, 1).unwrap().len(),
        1,
        "one row even over the byte cap"
    );
}

#[test]
fn vchannels_lists_each_channel_of_the_task_once() {
    let (_dir, j) = journal();
    j.stage(
        &TaskRun::unstarted("t"),
        "p0",
        &[staged("a", 1, 1), staged("a", 2, 1), staged("b", 1, 1)],
        kafka(3),
        0,
    )
    .unwrap();
    j.stage(
        &TaskRun::unstarted("u"),
        "p0",
        &[staged("c", 1, 1)],
        kafka(1),
        0,
    )
    .unwrap();
    assert_eq!(j.vchannels("t").unwrap(), ["a", "b"]);
    assert_eq!(j.vchannels("u").unwrap(), ["c"]);
}

#[test]
fn commit_moves_positions_clears_marker_and_frees_rows() {
    let (_dir, j) = journal();
    j.stage(
        &TaskRun::unstarted("t"),
        "p0",
        &[staged("a", 1, 1), staged("a", 2, 2), staged("b", 1, 3)],
        kafka(3),
        0,
    )
    .unwrap();
    let batch = InFlightBatch {
        ends: vec![
            ("a".into(), RowPosition { ts: 1, seq: 0 }),
            ("b".into(), RowPosition { ts: 1, seq: 2 }),
        ],
    };
    j.begin_batch(&TaskRun::unstarted("t"), &batch).unwrap();
    assert_eq!(j.in_flight("t").unwrap(), Some(batch.clone()));
    let before = j.journal_bytes().unwrap();
    j.commit_batch(&TaskRun::unstarted("t"), &batch, false)
        .unwrap();
    assert_eq!(j.in_flight("t").unwrap(), None);
    assert_eq!(
        j.applied("t", "a").unwrap(),
        Some(RowPosition { ts: 1, seq: 0 })
    );
    assert_eq!(j.vchannels("t").unwrap(), ["a"]);
    assert!(j.journal_bytes().unwrap() < before);
}

#[test]
fn retained_rows_stay_but_are_not_read_again() {
    let (_dir, j) = journal();
    j.stage(
        &TaskRun::unstarted("t"),
        "p0",
        &[staged("a", 1, 1), staged("a", 2, 2)],
        kafka(2),
        0,
    )
    .unwrap();
    let batch = InFlightBatch {
        ends: vec![("a".into(), RowPosition { ts: 1, seq: 0 })],
    };
    j.commit_batch(&TaskRun::unstarted("t"), &batch, true)
        .unwrap();
    assert_eq!(
        j.rows("t", "a", None, u64::MAX, 10, usize::MAX)
            .unwrap()
            .len(),
        2
    );
    let pending = j
        .rows(
            "t",
            "a",
            j.applied("t", "a").unwrap(),
            u64::MAX,
            10,
            usize::MAX,
        )
        .unwrap();
    assert_eq!(pending.len(), 1);
}

#[test]
fn deleting_a_task_removes_only_its_state() {
    let (_dir, j) = journal();
    j.put_task("t", b"spec-t").unwrap();
    j.put_task("t2", b"spec-t2").unwrap();
    j.stage(
        &TaskRun::unstarted("t"),
        "p0",
        &[staged("a", 1, 1)],
        kafka(1),
        0,
    )
    .unwrap();
    j.stage(
        &TaskRun::unstarted("t2"),
        "p0",
        &[staged("a", 1, 1)],
        kafka(1),
        0,
    )
    .unwrap();
    j.begin_batch(&TaskRun::unstarted("t"), &InFlightBatch { ends: vec![] })
        .unwrap();
    assert!(j.delete_task("t").unwrap());
    assert!(!j.delete_task("t").unwrap());
    assert_eq!(j.task("t").unwrap(), None);
    assert_eq!(j.source_offset("t", "p0").unwrap(), None);
    assert_eq!(j.in_flight("t").unwrap(), None);
    assert!(j.vchannels("t").unwrap().is_empty());
    assert_eq!(j.vchannels("t2").unwrap(), ["a"]);
    assert_eq!(j.tasks().unwrap(), [("t2".to_owned(), b"spec-t2".to_vec())]);
}

#[test]
fn the_data_dir_and_journal_are_private_to_their_owner_even_if_they_were_not() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("new").join("data");
    drop(Journal::open(&dir).unwrap());
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("journal.redb")), 0o600);

    let open = std::fs::Permissions::from_mode(0o755);
    std::fs::set_permissions(&dir, open.clone()).unwrap();
    std::fs::set_permissions(dir.join("journal.redb"), open).unwrap();
    drop(Journal::open(&dir).unwrap());
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("journal.redb")), 0o600);
}

#[test]
fn a_second_open_of_the_same_file_says_it_is_locked() {
    let (dir, _j) = journal();
    let err = Journal::open(dir.path()).err().unwrap();
    assert!(matches!(err, JournalError::Locked { .. }), "{err}");
}

#[test]
fn state_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let j = Journal::open(dir.path()).unwrap();
        j.stage(
            &TaskRun::unstarted("t"),
            "p0",
            &[staged("a", 1, 1)],
            kafka(1),
            7,
        )
        .unwrap();
    }
    let j = Journal::open(dir.path()).unwrap();
    assert_eq!(j.source_offset("t", "p0").unwrap().unwrap().tick, 7);
    assert_eq!(
        j.rows("t", "a", None, u64::MAX, 10, usize::MAX)
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn committing_a_batch_can_mark_the_next_in_the_same_transaction() {
    let (_dir, j) = journal();
    j.stage(
        &TaskRun::unstarted("t"),
        "p0",
        &[staged("v", 10, 1), staged("v", 11, 2)],
        kafka(1),
        20,
    )
    .unwrap();
    let at = |ts, seq| vec![("v".to_string(), RowPosition { ts, seq })];
    let first = InFlightBatch { ends: at(10, 0) };
    let second = InFlightBatch { ends: at(11, 1) };
    j.begin_batch(&TaskRun::unstarted("t"), &first).unwrap();
    j.commit_batch_and_begin(&TaskRun::unstarted("t"), &first, Some(&second), false)
        .unwrap();
    assert_eq!(
        j.applied("t", "v").unwrap(),
        Some(RowPosition { ts: 10, seq: 0 })
    );
    assert_eq!(
        j.in_flight("t").unwrap(),
        Some(second.clone()),
        "a crash now replays the second batch, which may or may not have been sent"
    );
    j.commit_batch_and_begin(&TaskRun::unstarted("t"), &second, None, false)
        .unwrap();
    assert_eq!(j.in_flight("t").unwrap(), None);
    assert_eq!(j.journal_bytes().unwrap(), 0);
}

#[test]
fn a_wait_for_a_stage_ends_when_one_commits_and_not_before() {
    let (_dir, j) = journal();
    let seen = j.stages();
    let waited = std::thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            let started = std::time::Instant::now();
            j.wait_for_stage(seen, Duration::from_secs(60));
            started.elapsed()
        });
        std::thread::sleep(Duration::from_millis(200));
        assert!(!waiter.is_finished(), "nothing was staged yet");
        j.stage(
            &TaskRun::unstarted("t"),
            "p0",
            &[staged("v", 10, 1)],
            kafka(1),
            20,
        )
        .unwrap();
        waiter.join().unwrap()
    });
    assert!(
        waited < Duration::from_secs(30),
        "woken by the stage, not the timeout"
    );
    assert_eq!(j.stages(), seen + 1);
    let started = std::time::Instant::now();
    j.wait_for_stage(seen, Duration::from_secs(60));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a stage after the one seen ends the wait at once"
    );
}

mod recent_rows {
    //! Rows read through the in-memory cache are exactly the rows on disk.
    use proptest::prelude::*;

    use super::*;

    const VCHANNELS: [&str; 2] = ["p0_1v0", "p0_1v1"];

    #[derive(Debug, Clone)]
    enum Op {
        /// Rows of a vchannel, stamped `back` below the newest timestamp (channels need not
        /// arrive in timestamp order).
        Stage { v: usize, rows: usize, back: u64 },
        /// The first `rows` pending rows of a vchannel are applied.
        Apply { v: usize, rows: usize },
        /// The process restarts: the cache starts empty.
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..2usize, 0..4usize, 0..3u64).prop_map(|(v, rows, back)| Op::Stage { v, rows, back }),
            2 => (0..2usize, 1..5usize).prop_map(|(v, rows)| Op::Apply { v, rows }),
            1 => Just(Op::Reopen),
        ]
    }

    fn positions(rows: &[JournalRow]) -> Vec<(RowPosition, Change)> {
        rows.iter()
            .map(|r| (r.position, r.change.clone()))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(100))]

        #[test]
        fn reads_through_the_cache_equal_reads_from_disk(
            ops in proptest::collection::vec(op(), 1..30),
            budget_rows in 0..6usize,
            max_rows in 1..5usize,
        ) {
            let row_bytes = record::encode(&delete(&[0])).unwrap().len();
            let (cached_dir, uncached_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let open = |dir: &tempfile::TempDir, budget| Journal::open_with(dir.path(), budget).unwrap();
            let mut cached = open(&cached_dir, budget_rows * row_bytes);
            let uncached = open(&uncached_dir, 0);
            let (mut ts, mut key, mut offset) = (10u64, 0i64, 0i64);
            for op in ops {
                match op {
                    Op::Stage { v, rows, back } => {
                        ts += 1;
                        offset += 1;
                        let changes: Vec<_> = (0..rows)
                            .map(|_| { key += 1; staged(VCHANNELS[v], ts - back, key) })
                            .collect();
                        for j in [&cached, &uncached] {
                            j.stage(&TaskRun::unstarted("t"), "p0", &changes, kafka(offset), ts - 3).unwrap();
                        }
                    }
                    Op::Apply { v, rows } => {
                        let after = uncached.applied("t", VCHANNELS[v]).unwrap();
                        let pending = uncached.rows("t", VCHANNELS[v], after, u64::MAX, rows, usize::MAX).unwrap();
                        if let Some(last) = pending.last() {
                            let batch = InFlightBatch { ends: vec![(VCHANNELS[v].into(), last.position)] };
                            for j in [&cached, &uncached] {
                                j.commit_batch(&TaskRun::unstarted("t"), &batch, false).unwrap();
                            }
                        }
                    }
                    Op::Reopen => {
                        drop(cached);
                        cached = open(&cached_dir, budget_rows * row_bytes);
                    }
                }
                prop_assert_eq!(cached.source_offsets("t").unwrap(), uncached.source_offsets("t").unwrap());
                for v in VCHANNELS {
                    let applied = uncached.applied("t", v).unwrap();
                    // From the applied position, and from each row after it.
                    let all = uncached.rows("t", v, applied, u64::MAX, usize::MAX, usize::MAX).unwrap();
                    // A vchannel with rows is listed; one without may be.
                    prop_assert!(all.is_empty() || cached.vchannels("t").unwrap().contains(&v.to_owned()));
                    let starts = std::iter::once(applied).chain(all.iter().map(|r| Some(r.position)));
                    for after in starts {
                        for max_ts in [ts - 2, ts, u64::MAX] {
                            let read = |j: &Journal| j.rows("t", v, after, max_ts, max_rows, 2 * row_bytes).unwrap();
                            prop_assert_eq!(positions(&read(&cached)), positions(&read(&uncached)), "{} after {:?} through {}", v, after, max_ts);
                            prop_assert_eq!(
                                cached.first_position("t", v, after, max_ts).unwrap(),
                                uncached.first_position("t", v, after, max_ts).unwrap()
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn only_the_current_run_of_a_task_may_write_its_state() {
    let (_dir, j) = journal();
    let first = j.begin_run("t").unwrap();
    j.stage(&first, "p0", &[staged("v", 10, 1)], kafka(1), 0)
        .unwrap();
    let stale = |err: JournalError| {
        matches!(
            err,
            JournalError::StaleRun {
                run: 1,
                current: 2,
                ..
            }
        )
    };

    let second = j.begin_run("t").unwrap();
    assert_eq!(second.number(), 2);
    let batch = InFlightBatch {
        ends: vec![("v".into(), RowPosition { ts: 10, seq: 0 })],
    };
    assert!(stale(
        j.stage(&first, "p0", &[staged("v", 11, 2)], kafka(2), 0)
            .unwrap_err()
    ));
    assert!(stale(j.begin_batch(&first, &batch).unwrap_err()));
    assert!(stale(j.commit_batch(&first, &batch, false).unwrap_err()));
    assert_eq!(j.source_offset("t", "p0").unwrap().unwrap().next, kafka(1));
    assert_eq!(j.in_flight("t").unwrap(), None);
    assert!(matches!(
        j.stage(&TaskRun::unstarted("t"), "p0", &[], kafka(2), 0),
        Err(JournalError::StaleRun { run: 0, .. })
    ));

    j.begin_batch(&second, &batch).unwrap();
    j.commit_batch(&second, &batch, false).unwrap();
    j.stage(&second, "p0", &[], kafka(2), 0).unwrap();
    assert!(
        j.begin_run("u").unwrap().number() == 1,
        "runs are counted per task"
    );
}

#[test]
fn a_task_created_again_under_a_deleted_id_refuses_the_old_runs() {
    let (_dir, j) = journal();
    let old = j.begin_run("t").unwrap();
    j.stage(&old, "p0", &[], kafka(1), 0).unwrap();
    j.delete_task("t").unwrap();
    let new = j.begin_run("t").unwrap();
    assert!(new.number() > old.number());
    assert!(j.stage(&old, "p0", &[], kafka(5), 0).is_err());
    j.stage(&new, "p0", &[], kafka(0), 0).unwrap();
}

#[test]
fn pending_bytes_count_each_tasks_rows_until_applied_whether_or_not_they_are_kept() {
    for retain in [false, true] {
        let (_dir, j) = journal();
        let (t, u) = (TaskRun::unstarted("t"), TaskRun::unstarted("u"));
        let rows: Vec<_> = (1..=4).map(|i| staged("v", 10 * i, i as i64)).collect();
        j.stage(&t, "p0", &rows, kafka(4), 0).unwrap();
        j.stage(&u, "p0", &rows[..1], kafka(1), 0).unwrap();
        let all = j.pending_bytes("t").unwrap();
        let one = j.pending_bytes("u").unwrap();
        assert!(
            all > 0 && one > 0 && all == 4 * one,
            "rows of one size: {all} {one}"
        );
        assert_eq!(j.journal_bytes().unwrap(), all + one);

        let half = InFlightBatch {
            ends: vec![("v".into(), RowPosition { ts: 20, seq: 1 })],
        };
        j.commit_batch(&t, &half, retain).unwrap();
        assert_eq!(j.pending_bytes("t").unwrap(), 2 * one, "retain {retain}");
        // Committing the same end again (a replay) applies nothing new.
        j.commit_batch(&t, &half, retain).unwrap();
        assert_eq!(j.pending_bytes("t").unwrap(), 2 * one, "retain {retain}");
        let stored = if retain { all + one } else { 2 * one + one };
        assert_eq!(j.journal_bytes().unwrap(), stored, "retain {retain}");
        assert_eq!(
            j.pending_bytes("u").unwrap(),
            one,
            "another task's count is its own"
        );

        j.delete_task("t").unwrap();
        assert_eq!(j.pending_bytes("t").unwrap(), 0);
        assert_eq!(j.journal_bytes().unwrap(), one);
    }
}

#[test]
fn a_journal_from_before_pending_bytes_were_kept_has_them_counted_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let t = TaskRun::unstarted("t");
    let expected = {
        let j = Journal::open(dir.path()).unwrap();
        let rows: Vec<_> = (1..=3).map(|i| staged("v", 10 * i, i as i64)).collect();
        j.stage(&t, "p0", &rows, kafka(3), 0).unwrap();
        let first = InFlightBatch {
            ends: vec![("v".into(), RowPosition { ts: 10, seq: 0 })],
        };
        j.commit_batch(&t, &first, true).unwrap();
        let expected = j.pending_bytes("t").unwrap();
        // As an older version left it: no counts.
        let db = j.db().unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut stats = txn.open_table(STATS).unwrap();
            stats.remove(pending_key("t").as_str()).unwrap();
            stats.remove(PENDING_COUNTED).unwrap();
        }
        txn.commit().unwrap();
        assert_eq!(j.pending_bytes("t").unwrap(), 0);
        expected
    };
    let j = Journal::open(dir.path()).unwrap();
    assert!(expected > 0);
    assert_eq!(j.pending_bytes("t").unwrap(), expected);
}

#[test]
fn a_snapshot_copy_is_written_by_the_current_run_only_and_goes_with_its_task() {
    let (_dir, j) = journal();
    let copy = |id: i64, rows_copied: u64| CopyProgress {
        source: CollectionRef {
            id,
            db_name: "default".into(),
            name: format!("c{id}"),
        },
        target: CollectionRef {
            id,
            db_name: "default".into(),
            name: format!("c{id}"),
        },
        primary_key: "id".into(),
        fields: vec!["id".into(), "v".into()],
        partitions: vec!["_default".into()],
        partition_key: false,
        dynamic_field: None,
        page_rows: 100,
        source_rows: 10,
        rows_copied,
        began_ms: 1,
        ended_ms: 0,
        start_ts: 5 << 18,
        state: CopyState::Copying {
            partition: 0,
            after: Some(PrimaryKey::Str("k\"1".into())),
            in_doubt: true,
            doubt_through: Some(PrimaryKey::Str("k\"9".into())),
        },
        recopy: None,
        repair: false,
    };
    let first = j.begin_run("t").unwrap();
    j.put_copy(&first, &copy(7, 0)).unwrap();
    j.put_copy(&first, &copy(3, 0)).unwrap();
    let second = j.begin_run("t").unwrap();
    assert!(matches!(
        j.put_copy(&first, &copy(7, 5)),
        Err(JournalError::StaleRun { .. })
    ));
    j.put_copy(&second, &copy(7, 6)).unwrap();
    j.put_copy(&j.begin_run("u").unwrap(), &copy(7, 1)).unwrap();
    assert_eq!(j.copies("t").unwrap(), [copy(3, 0), copy(7, 6)]);
    j.delete_task("t").unwrap();
    assert_eq!(j.copies("t").unwrap(), []);
    assert_eq!(j.copies("u").unwrap(), [copy(7, 1)]);
}

#[test]
fn the_metadata_watchers_revision_is_staged_with_its_rows_and_counts_as_a_tick_not_a_position() {
    let dir = tempfile::tempdir().unwrap();
    let run = TaskRun::unstarted("t");
    {
        let j = Journal::open(dir.path()).unwrap();
        j.put_task("t", b"spec").unwrap();
        j.stage(&run, "p0", &[], kafka(1), 7).unwrap();
        j.stage_meta(
            &run,
            "by-dev-etcd-meta",
            &[staged("by-dev-etcd-meta", 5, 1)],
            42,
            5,
        )
        .unwrap();
        j.stage_meta(&run, "by-dev-etcd-meta", &[], 43, 3).unwrap();
    }
    let j = Journal::open(dir.path()).unwrap();
    let offset = j.meta_offset("t", "by-dev-etcd-meta").unwrap();
    assert_eq!(
        (offset.next_revision, offset.tick, offset.next_seq),
        (43, 5, 1),
        "survives a reopen; the tick never goes back"
    );
    assert_eq!(
        j.ticks("t").unwrap(),
        HashMap::from([("p0".to_owned(), 7), ("by-dev-etcd-meta".to_owned(), 5)])
    );
    let positions: Vec<String> = j
        .source_offsets("t")
        .unwrap()
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(
        positions,
        ["p0"],
        "the reported positions are the message queue's only"
    );
    assert_eq!(j.vchannels("t").unwrap(), ["by-dev-etcd-meta"]);
    assert!(j.delete_task("t").unwrap());
    assert_eq!(j.meta_offset("t", "by-dev-etcd-meta"), None);
    drop(j);
    let reopened = Journal::open(dir.path()).unwrap();
    assert_eq!(reopened.meta_offset("t", "by-dev-etcd-meta"), None);
}

#[test]
fn a_deleted_task_s_run_writes_nothing_more() {
    let (_dir, journal) = journal();
    let run = journal.begin_run("t").unwrap();
    journal.put_task("t", b"{}").unwrap();
    assert!(journal.delete_task("t").unwrap());
    assert!(matches!(
        journal.stage(&run, "ch", &[], kafka(0), 0),
        Err(JournalError::StaleRun { .. })
    ));
    assert!(matches!(
        journal.put_task_of_run(&run, b"{\"state\":\"failed\"}"),
        Err(JournalError::StaleRun { .. })
    ));
    assert_eq!(journal.task("t").unwrap(), None, "no record comes back");
}

#[test]
fn a_checkpoint_is_the_newest_offset_below_every_pending_row_of_its_channel() {
    let (_dir, j) = journal();
    let run = TaskRun::unstarted("t");
    let reader = |next_offset, tick, next_seq| {
        ChannelCheckpoint::Reader(SourceOffset {
            next: kafka(next_offset),
            tick,
            next_seq,
            last: None,
        })
    };
    // Timestamps of one channel need not arrive in order: the row at 10 is staged after 30.
    j.stage(
        &run,
        "p0",
        &[staged("p0_1v0", 30, 1), staged("p0_1v0", 10, 2)],
        kafka(5),
        9,
    )
    .unwrap();
    j.stage(&run, "p0", &[staged("p0_1v0", 40, 3)], kafka(8), 35)
        .unwrap();
    assert_eq!(
        j.checkpoint("t", None).unwrap(),
        None,
        "nothing applied, no mark below"
    );

    // The row at 10 applied, the one at 30 (sequence 0) not: still nothing.
    let first = InFlightBatch {
        ends: vec![("p0_1v0".into(), RowPosition { ts: 10, seq: 1 })],
    };
    j.commit_batch(&run, &first, false).unwrap();
    assert_eq!(j.checkpoint("t", None).unwrap(), None);

    let through_30 = InFlightBatch {
        ends: vec![("p0_1v0".into(), RowPosition { ts: 30, seq: 0 })],
    };
    j.commit_batch(&run, &through_30, false).unwrap();
    let taken = j.checkpoint("t", None).unwrap().unwrap();
    assert_eq!(taken.channels["p0"], reader(5, 9, 2));

    let all = InFlightBatch {
        ends: vec![("p0_1v0".into(), RowPosition { ts: 40, seq: 2 })],
    };
    j.commit_batch(&run, &all, false).unwrap();
    let taken = j.checkpoint("t", None).unwrap().unwrap();
    assert_eq!(taken.channels["p0"], reader(8, 35, 3));

    // Another journal carries on from it, replaying what the first may have applied.
    let (_other_dir, other) = journal();
    let run = other.begin_run("t").unwrap();
    other.restore(&run, &taken, 1_000).unwrap();
    let offset = other.source_offset("t", "p0").unwrap().unwrap();
    assert_eq!(
        (offset.next, offset.tick, offset.next_seq),
        (kafka(8), 35, 0)
    );
    assert_eq!(other.replay_through("t").unwrap(), 1_000);
    assert!(other.delete_task("t").is_ok());
    assert_eq!(other.replay_through("t").unwrap(), 0);
}

#[test]
fn a_channel_with_no_mark_below_its_pending_rows_keeps_the_previous_checkpoint() {
    let (_dir, j) = journal();
    let run = TaskRun::unstarted("t");
    j.stage(&run, "p0", &[], kafka(1), 1).unwrap();
    let previous = j.checkpoint("t", None).unwrap().unwrap();
    for n in 0..3 {
        j.stage(
            &run,
            "p0",
            &[staged("p0_1v0", 10 + n, n as i64)],
            kafka(2 + n as i64),
            0,
        )
        .unwrap();
    }
    assert_eq!(j.checkpoint("t", Some(&previous)).unwrap(), Some(previous));
}

#[test]
fn a_run_begun_at_a_claim_s_revision_outnumbers_every_earlier_run() {
    let (_dir, j) = journal();
    let early = j.begin_run("t").unwrap();
    let claimed = j.begin_run_at("t", 1_000).unwrap();
    assert_eq!(claimed.number(), 1_000);
    assert!(
        j.stage(&early, "p0", &[], kafka(1), 1).is_err(),
        "an earlier run writes nothing"
    );
    assert_eq!(
        j.begin_run_at("t", 10).unwrap().number(),
        1_001,
        "never back"
    );
}
