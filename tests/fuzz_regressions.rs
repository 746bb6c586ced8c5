//! Every input the fuzz targets found a fault with, replayed through the very function its
//! target calls (`fuzz/src/lib.rs`, included below): a bug that comes back fails here.
//! A file `fuzz/regressions/<target>-<name>` belongs to target `<target>`.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod harness;

use std::path::Path;

/// What a target does with one input.
type Target = fn(&[u8]);

/// Each target's file name prefix in `fuzz/regressions`.
const TARGETS: [(&str, Target); 5] = [
    ("decode-", harness::decode),
    ("journal_record-", harness::journal_record),
    ("etcd_meta-", harness::etcd_meta),
    ("cdc_body-", harness::cdc_body),
    ("rest_body-", harness::rest_body),
];

#[test]
fn every_fuzz_regression_passes_its_target() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no regression files in {}",
        dir.display()
    );
    for path in files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("regression files have UTF-8 names");
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {name}: {e}"));
        let Some((_, target)) = TARGETS.iter().find(|(prefix, _)| name.starts_with(prefix)) else {
            panic!("{name} names no fuzz target (expected <target>-<name>)");
        };
        eprintln!("replaying {name}");
        target(&data);
    }
}

/// Writes the seed inputs of `etcd_meta` (two live collections as Milvus stores them, in the
/// target's `[kind, id, id, len]` framing) to `fuzz/corpus/etcd_meta`. Run on demand:
/// `cargo test --test fuzz_regressions -- --ignored write_etcd_meta_seeds`.
#[test]
#[ignore = "writes the fuzz seed corpus"]
fn write_etcd_meta_seeds() {
    use milvus::proto::schema::{CollectionSchema, DataType, FieldSchema};
    use milvus_cdc::proto::etcd_meta::{
        AliasInfo, CollectionInfo, CollectionLoadInfo, DatabaseInfo, FieldIndex, IndexInfo,
        KeyValuePair, PartitionInfo,
    };
    use prost::Message;

    /// One key/value in the target's framing: the kinds are those of `harness::etcd_meta`.
    fn entry(kind: u8, a: u8, b: u8, value: &impl Message) -> Vec<u8> {
        let value = value.encode_to_vec();
        let len = u8::try_from(value.len()).expect("seed values fit the one-byte length");
        let mut out = vec![kind, a, b, len];
        out.extend(value);
        out
    }
    let field = |id: i64, name: &str, data_type: DataType| FieldSchema {
        field_id: id,
        name: name.into(),
        data_type: data_type as i32,
        ..Default::default()
    };
    let schema = |name: &str, fields: Vec<FieldSchema>| {
        CollectionSchema {
            name: name.into(),
            fields,
            ..Default::default()
        }
        .encode_to_vec()
    };
    let info = |id: i64, db_id: i64, schema: Vec<u8>| CollectionInfo {
        id,
        schema,
        virtual_channel_names: vec![format!("by-dev-rootcoord-dml_0_{id}v0")],
        physical_channel_names: vec!["by-dev-rootcoord-dml_0".into()],
        shards_num: 1,
        db_id,
        ..Default::default()
    };
    // Database-scoped collection 1 "c1" with its fields, a partition, an alias and an index.
    let mut scoped = Vec::new();
    scoped.extend(entry(
        0,
        2,
        0,
        &DatabaseInfo {
            name: "sales".into(),
            id: 2,
            state: 1,
            ..Default::default()
        },
    ));
    scoped.extend(entry(1, 1, 1, &info(1, 1, schema("c1", Vec::new()))));
    scoped.extend(entry(3, 0, 1, &field(100, "pk", DataType::Int64)));
    scoped.extend(entry(3, 1, 1, &field(101, "v", DataType::FloatVector)));
    scoped.extend(entry(
        4,
        0,
        1,
        &PartitionInfo {
            partition_id: 0,
            partition_name: "_default".into(),
            collection_id: 1,
            ..Default::default()
        },
    ));
    scoped.extend(entry(
        5,
        1,
        0,
        &AliasInfo {
            alias_name: "c0".into(),
            collection_id: 1,
            db_id: 1,
            ..Default::default()
        },
    ));
    scoped.extend(entry(
        6,
        0,
        1,
        &FieldIndex {
            index_info: Some(IndexInfo {
                collection_id: 1,
                field_id: 101,
                index_name: "v_idx".into(),
                user_index_params: vec![KeyValuePair {
                    key: "index_type".into(),
                    value: "HNSW".into(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        },
    ));
    // A legacy collection 2 "c0" with its fields and partitions inside the collection-info, and
    // a load state.
    let mut legacy_info = info(
        2,
        0,
        schema("c0", vec![field(100, "pk", DataType::VarChar)]),
    );
    legacy_info.partition_ids = vec![7];
    legacy_info.partition_names = vec!["_default".into()];
    let mut legacy = entry(2, 0, 2, &legacy_info);
    legacy.extend(entry(
        6,
        0,
        2,
        &CollectionLoadInfo {
            collection_id: 2,
            replica_number: 1,
            load_type: 2,
            ..Default::default()
        },
    ));
    // A key of a known namespace that does not parse (kind 7: the value is the key).
    let bad_key = b"by-dev/meta/root-coord/fields/2/notanumber";
    legacy.extend([7, 0, 0, bad_key.len() as u8]);
    legacy.extend(bad_key);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/etcd_meta");
    std::fs::create_dir_all(&dir).expect("the corpus folder can be made");
    for (name, seed) in [("seed-scoped", scoped), ("seed-legacy", legacy)] {
        harness::etcd_meta(&seed);
        std::fs::write(dir.join(name), seed).expect("the seed can be written");
    }
}
