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
const TARGETS: [(&str, Target); 12] = [
    ("decode-", harness::decode),
    ("journal_record-", harness::journal_record),
    ("etcd_meta-", harness::etcd_meta),
    ("cdc_body-", harness::cdc_body),
    ("rest_body-", harness::rest_body),
    ("skip_body-", harness::skip_body),
    ("verify_body-", harness::verify_body),
    ("api_headers-", harness::api_headers),
    ("meta_watch-", harness::meta_watch),
    ("access_key-", harness::access_key),
    ("mq_position-", harness::mq_position),
    ("column_merge-", harness::column_merge),
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

/// Writes `seeds` as `fuzz/corpus/<target>/seed-<name>`, each first run through its target.
fn write_seeds(target: &str, seeds: &[(&str, Vec<u8>)]) {
    let (_, run) = TARGETS
        .iter()
        .find(|(prefix, _)| prefix.strip_suffix('-') == Some(target))
        .expect("a known target");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("the corpus folder can be made");
    for (name, seed) in seeds {
        run(seed);
        std::fs::write(dir.join(format!("seed-{name}")), seed).expect("the seed can be written");
    }
}

/// Writes the seed inputs of the targets added with skip, verify, the request guard, the
/// metadata watcher, access control, positions and the column merge: the documented requests
/// and values as Milvus writes them. Run on demand:
/// `cargo test --test fuzz_regressions -- --ignored write_source_and_api_seeds`.
#[test]
#[ignore = "writes the fuzz seed corpus"]
fn write_source_and_api_seeds() {
    use milvus_cdc::model::{MqPosition, PulsarId, encode_position};
    use milvus_cdc::proto::etcd_meta::{
        AliasInfo, CollectionInfo, CollectionLoadInfo, PartitionLoadInfo,
    };
    use prost::Message;

    let text = |s: &str| s.as_bytes().to_vec();
    write_seeds(
        "skip_body",
        &[
            (
                "kafka",
                text(
                    r#"{"at": {"message": {"channel": "by-dev-rootcoord-dml_0", "id": {"Kafka": 2}}}}"#,
                ),
            ),
            (
                "pulsar",
                text(
                    r#"{"at": {"message": {"channel": "by-dev-rootcoord-dml_0", "id": {"Pulsar": {"ledger": 12, "entry": 3, "batch": -1, "partition": -1}}}}}"#,
                ),
            ),
            (
                "row",
                text(
                    r#"{"at": {"row": {"vchannel": "by-dev-rootcoord-dml_0_1v0", "position": {"ts": 449000000000000000, "seq": 7}}}}"#,
                ),
            ),
        ],
    );
    write_seeds(
        "verify_body",
        &[
            ("empty", Vec::new()),
            ("object", text("{}")),
            ("documented", text(r#"{"first": 10, "settle_seconds": 60}"#)),
            ("too-many", text(r#"{"first": 10001}"#)),
        ],
    );
    // Flags: bits 0-1 route, bit 2 the guarded router, bits 3-6 which headers are sent.
    let headers = |flags: u8, fields: [&str; 4]| {
        let mut seed = vec![flags];
        seed.extend(fields.join("\n").into_bytes());
        seed
    };
    let own = [
        "localhost:8444",
        "http://localhost:8444",
        "same-origin",
        "Bearer fuzz-token",
    ];
    write_seeds(
        "api_headers",
        &[
            ("status-page", headers(0b0111_1100, own)),
            ("curl-with-token", headers(0b0100_1101, own)),
            (
                "cross-site-form",
                headers(
                    0b0111_1000,
                    ["localhost:8444", "http://evil.example", "cross-site", ""],
                ),
            ),
            (
                "rebound-name",
                headers(0b0000_1000, ["attacker.example:8444", "", "", ""]),
            ),
            (
                "wrong-token",
                headers(0b0100_1101, ["cdc.internal", "", "", "Bearer nope"]),
            ),
            (
                "healthz",
                headers(0b0011_0111, ["", "null", "same-site", ""]),
            ),
        ],
    );
    // Flags: bits 0-2 the key's shape, bit 3 a value, bit 4 a value before, bits 6-7 ids.
    let change = |flags: u8, key: &str, value: &[u8], prev: &[u8]| {
        let mut seed = vec![flags];
        for part in [key.as_bytes(), value, prev] {
            seed.extend(part);
            seed.push(0xFF);
        }
        seed.pop();
        seed
    };
    let alias = |collection_id| {
        AliasInfo {
            alias_name: "a1".into(),
            collection_id,
            db_id: 1,
            ..Default::default()
        }
        .encode_to_vec()
    };
    let loaded = CollectionLoadInfo {
        collection_id: 1,
        replica_number: 1,
        load_type: 2,
        ..Default::default()
    }
    .encode_to_vec();
    let partition = |replica_number| {
        PartitionLoadInfo {
            collection_id: 1,
            partition_id: 1,
            replica_number,
            status: 2,
        }
        .encode_to_vec()
    };
    let collection = |name: &str| {
        let schema = milvus::proto::schema::CollectionSchema {
            name: name.into(),
            ..Default::default()
        };
        CollectionInfo {
            id: 1,
            schema: schema.encode_to_vec(),
            db_id: 1,
            ..Default::default()
        }
        .encode_to_vec()
    };
    write_seeds(
        "meta_watch",
        &[
            ("alias-moved", change(0b0101_1000, "", &alias(2), &alias(1))),
            (
                "alias-dropped",
                change(0b0101_1000, "", &[0xE2, 0x9B, 0xBC], &alias(1)),
            ),
            ("collection-released", change(0b0101_0001, "", &[], &loaded)),
            (
                "partition-loaded",
                change(0b0101_1010, "", &partition(2), &partition(1)),
            ),
            (
                "collection-renamed",
                change(0b0101_1011, "", &collection("c2"), &collection("c1")),
            ),
            (
                "raw-key",
                change(
                    0b0001_1101,
                    "by-dev/meta/root-coord/database/aliases/1/a1",
                    &alias(1),
                    &[],
                ),
            ),
        ],
    );
    let key = |flags: u8, path: &str| {
        let mut seed = vec![flags];
        seed.extend(path.as_bytes());
        seed
    };
    write_seeds(
        "access_key",
        &[
            ("role", key(1, "roles/reader")),
            ("binding", key(2, "user-role-mapping/ann/reader")),
            ("privilege", key(1, "grantee-id/79a3/PrivilegeSearch")),
            ("user", key(0, "users/ann")),
            (
                "grant",
                key(1, "grantee-privileges/reader/Collection/default.c1"),
            ),
        ],
    );
    let position = |p: MqPosition| {
        let mut seed = vec![0];
        seed.extend(encode_position("ch", &p, 449_000_000_000_000_000).into_bytes());
        seed
    };
    let id = PulsarId {
        ledger: 12,
        entry: 3,
        batch: -1,
        partition: -1,
    };
    // Order: two positions and three ids, 8 bytes each (flag, ledger, entry, batch + 2,
    // partition, offset as two bytes, Kafka).
    let order = [
        1, 1, 1, 2, 1, 255, 0, 0, 0, 0, 1, 1, 2, 255, 0, 0, 0, 0, 1, 1, 1, 255, 0, 0, 0, 0, 1, 1,
        2, 255, 0, 0, 0, 0, 1, 2, 3, 255, 0, 0, 0, 0, 2, 1, 5, 255, 0, 0, 0,
    ];
    write_seeds(
        "mq_position",
        &[
            ("kafka", position(MqPosition::Kafka { next_offset: 42 })),
            (
                "pulsar-after",
                position(MqPosition::Pulsar {
                    from: id,
                    inclusive: false,
                }),
            ),
            (
                "pulsar-from",
                position(MqPosition::Pulsar {
                    from: PulsarId { batch: 4, ..id },
                    inclusive: true,
                }),
            ),
            ("order", order.to_vec()),
        ],
    );
    // Columns: [count] then per column [mode, type, field, rows, seed] (see the target).
    let long = milvus::proto::schema::FieldData {
        r#type: milvus::proto::schema::DataType::Int64 as i32,
        field_name: "f0".into(),
        field_id: 100,
        field: Some(milvus::proto::schema::field_data::Field::Scalars(
            milvus::proto::schema::ScalarField {
                data: Some(milvus::proto::schema::scalar_field::Data::LongData(
                    milvus::proto::schema::LongArray { data: vec![1, 2] },
                )),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
    .encode_to_vec();
    let len = u8::try_from(long.len()).expect("a short column");
    let mut raws = vec![0];
    for _ in 0..2 {
        raws.extend([1, len, 0, 0, 0]);
        raws.extend(&long);
    }
    write_seeds(
        "column_merge",
        &[
            (
                "scalars",
                vec![
                    1, 0, 2, 0, 3, 1, 0, 5, 1, 2, 9, 0, 2, 0, 2, 4, 0, 5, 1, 3, 7,
                ],
            ),
            (
                "vectors",
                vec![0, 0, 8, 0, 3, 1, 0, 8, 0, 2, 5, 8, 9, 1, 2, 3],
            ),
            ("binary", vec![0, 0, 9, 1, 2, 1, 0, 9, 1, 3, 4]),
            (
                "array-json",
                vec![
                    1, 0, 7, 0, 3, 1, 0, 6, 1, 2, 2, 0, 7, 0, 1, 1, 0, 6, 1, 3, 3,
                ],
            ),
            ("raw-long", raws),
        ],
    );
}
