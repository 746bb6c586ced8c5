//! An upgrade keeps the journal: a journal an earlier release wrote, of journal format 1 (before
//! the format was versioned), opens with this code, which reads its task, its source offsets and
//! its pending rows as that release wrote them, and stamps it with the current format.
//!
//! The journal is `tests/fixtures/journal-format-1/journal.redb`, made by `make.py` there from a
//! pinned commit: task `journal-format-1` on collection `journal_format_1`, its target cut off,
//! and on the source the collection created, keys 0..120 inserted and keys 0..10 deleted. What
//! that release's own `dump --json` showed of it is `dump-by-maker.jsonl`, beside it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use milvus::proto::schema::{FieldData, ScalarField, field_data::Field, scalar_field::Data};
use milvus_cdc::journal::dump::JournalSnapshot;
use milvus_cdc::journal::{FORMAT_VERSION, Journal};
use milvus_cdc::model::{Change, DdlEvent, PrimaryKeys, vchannel_pchannel};
use prost::Message;
use serde_json::Value;

const TASK: &str = "journal-format-1";
const NAME: &str = "journal_format_1";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journal-format-1")
}

/// The fixture opened from a copy in a new data dir: opening stamps it, the kept one stays as made.
fn opened() -> (tempfile::TempDir, Journal) {
    let dir = tempfile::tempdir().expect("a temporary dir");
    std::fs::copy(
        fixture().join("journal.redb"),
        dir.path().join("journal.redb"),
    )
    .expect("the fixture copied");
    let journal = Journal::open(dir.path()).expect("a journal of format 1 opens");
    (dir, journal)
}

/// The entries of `kind` the maker's release showed (`dump --json --task journal-format-1`).
fn maker_dump(kind: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(fixture().join("dump-by-maker.jsonl")).expect("the dump");
    text.lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("a JSON line"))
        .filter(|entry| entry["kind"] == kind)
        .collect()
}

#[test]
fn a_journal_of_format_1_is_stamped_with_the_current_format_at_open() {
    let kept = JournalSnapshot::open(&fixture()).expect("dump reads format 1");
    assert_eq!(
        kept.format_version().unwrap(),
        None,
        "the fixture has no version"
    );
    drop(kept);
    let (_dir, journal) = opened();
    assert_eq!(journal.format_version().unwrap(), Some(FORMAT_VERSION));
}

#[test]
fn its_task_reads_as_written() {
    let (_dir, journal) = opened();
    let tasks = journal.tasks().unwrap();
    assert_eq!(tasks.len(), 1);
    let (id, record) = &tasks[0];
    assert_eq!(id, TASK);
    let spec: Value = serde_json::from_slice(record).expect("the task record is JSON");
    assert_eq!(spec["task_id"], TASK);
    assert_eq!(spec["collections"], serde_json::json!([NAME]));
    assert_eq!(spec["target"]["uri"], "http://127.0.0.1:19581");
    assert_eq!(spec["state"], "Running");
    let shown = &maker_dump("task")[0]["spec"];
    for field in ["task_id", "source_cluster", "collections", "start", "state"] {
        assert_eq!(spec[field], shown[field], "{field}");
    }
}

#[test]
fn its_source_offsets_read_as_written() {
    let (_dir, journal) = opened();
    let offsets: BTreeMap<String, Value> = journal
        .source_offsets(TASK)
        .unwrap()
        .into_iter()
        .map(|(pchannel, offset)| (pchannel, serde_json::to_value(offset).unwrap()))
        .collect();
    let written: BTreeMap<String, Value> = maker_dump("source_offset")
        .into_iter()
        .map(|e| {
            (
                e["pchannel"].as_str().unwrap().to_owned(),
                e["offset"].clone(),
            )
        })
        .collect();
    assert_eq!(offsets, written);
    // The source's DML channels and its replicate channel.
    assert!(offsets.len() >= 2, "{offsets:?}");
}

/// The int64 primary keys (field `id`) of an insert.
fn inserted_keys(columns: &[milvus_cdc::model::EncodedColumn]) -> Vec<i64> {
    for column in columns {
        let field = FieldData::decode(&column.0[..]).expect("a column decodes");
        if field.field_name == "id"
            && let Some(Field::Scalars(ScalarField {
                data: Some(Data::LongData(keys)),
                ..
            })) = field.field
        {
            return keys.data;
        }
    }
    panic!("no int64 column `id`")
}

#[test]
fn its_pending_rows_read_as_written_and_none_is_applied() {
    let (_dir, journal) = opened();
    let ticks: BTreeMap<String, u64> = journal
        .source_offsets(TASK)
        .unwrap()
        .into_iter()
        .map(|(pchannel, offset)| (pchannel, offset.tick))
        .collect();
    let (mut positions, mut creates) = (Vec::new(), 0);
    let (mut inserted, mut deleted) = (BTreeSet::new(), BTreeSet::new());
    for vchannel in journal.vchannels(TASK).unwrap() {
        assert_eq!(journal.applied(TASK, &vchannel).unwrap(), None);
        let rows = journal
            .rows(TASK, &vchannel, None, u64::MAX, usize::MAX, usize::MAX)
            .unwrap();
        let pchannel = vchannel_pchannel(&vchannel).expect("a vchannel names its pchannel");
        for row in rows {
            assert_eq!(row.change.collection().name, NAME);
            assert!(
                ticks[pchannel] >= row.position.ts,
                "covered by its channel's tick"
            );
            positions.push((vchannel.clone(), row.position.ts, row.position.seq));
            match row.change {
                Change::Ddl(ddl) if matches!(ddl.event, DdlEvent::CreateCollection { .. }) => {
                    creates += 1
                }
                Change::Insert(batch) => {
                    let keys = inserted_keys(&batch.fields_data);
                    assert_eq!(keys.len() as u64, batch.num_rows);
                    inserted.extend(keys);
                }
                Change::Delete(batch) => match batch.keys {
                    PrimaryKeys::Int64(keys) => deleted.extend(keys),
                    other => panic!("int64 keys deleted, not {other:?}"),
                },
                other => panic!("unexpected change {other:?}"),
            }
        }
    }
    assert_eq!(creates, 1, "the collection's create, once per collection");
    assert_eq!(inserted, (0..120).collect());
    assert_eq!(deleted, (0..10).collect());
    let mut written: Vec<(String, u64, u64)> = maker_dump("row")
        .iter()
        .map(|e| {
            let at = |k: &str| e[k].as_u64().unwrap();
            (
                e["vchannel"].as_str().unwrap().to_owned(),
                at("ts"),
                at("seq"),
            )
        })
        .collect();
    positions.sort();
    written.sort();
    assert_eq!(positions, written);
}
