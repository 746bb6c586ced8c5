//! `assemble` and its neighbours against hand-built etcd key/values.

use milvus::proto::schema::DataType;

use super::*;
use crate::proto::etcd_meta::KeyDataPair;
use crate::source::meta::TOMBSTONE;

const ROOT: &str = "by-dev/meta";

fn enc(m: &impl Message) -> Vec<u8> {
    m.encode_to_vec()
}

fn field(id: i64, name: &str, dt: DataType) -> FieldSchema {
    FieldSchema {
        field_id: id,
        name: name.into(),
        data_type: dt as i32,
        ..Default::default()
    }
}

fn info(id: i64, name: &str, state: i32) -> CollectionInfo {
    CollectionInfo {
        id,
        schema: enc(&CollectionSchema {
            name: name.into(),
            description: "d".into(),
            enable_dynamic_field: true,
            ..Default::default()
        }),
        create_time: 42,
        virtual_channel_names: vec![
            format!("by-dev-rootcoord-dml_0_{id}v0"),
            format!("by-dev-rootcoord-dml_1_{id}v1"),
        ],
        physical_channel_names: vec![
            "by-dev-rootcoord-dml_0".into(),
            "by-dev-rootcoord-dml_1".into(),
        ],
        shards_num: 2,
        start_positions: vec![KeyDataPair {
            key: "by-dev-rootcoord-dml_0".into(),
            data: vec![1, 2, 3],
        }],
        consistency_level: 2,
        state,
        db_id: 1,
        ..Default::default()
    }
}

fn part(coll: i64, id: i64, name: &str, state: i32) -> PartitionInfo {
    PartitionInfo {
        partition_id: id,
        partition_name: name.into(),
        partition_created_timestamp: 7,
        collection_id: coll,
        state,
    }
}

fn kv(rel: &str, value: Vec<u8>) -> (String, Vec<u8>) {
    (format!("{ROOT}/{rel}"), value)
}

/// A live collection 500 in the default db, with fields stored out of order plus system fields.
fn live_collection() -> Vec<(String, Vec<u8>)> {
    vec![
        kv(
            "root-coord/database/collection-info/1/500",
            enc(&info(500, "c1", 0)),
        ),
        kv(
            "root-coord/fields/500/0",
            enc(&field(0, "RowID", DataType::Int64)),
        ),
        kv(
            "root-coord/fields/500/1",
            enc(&field(1, "Timestamp", DataType::Int64)),
        ),
        kv(
            "root-coord/fields/500/102",
            enc(&field(102, "text", DataType::VarChar)),
        ),
        kv(
            "root-coord/fields/500/100",
            enc(&field(100, "pk", DataType::Int64)),
        ),
        kv(
            "root-coord/fields/500/101",
            enc(&field(101, "vec", DataType::FloatVector)),
        ),
        kv(
            "root-coord/partitions/500/502",
            enc(&part(500, 502, "p1", 0)),
        ),
        kv(
            "root-coord/partitions/500/501",
            enc(&part(500, 501, "_default", 0)),
        ),
        kv(
            "root-coord/partitions/500/503",
            enc(&part(500, 503, "dropping", 2)),
        ),
        kv("root-coord/partitions/500/504", TOMBSTONE.to_vec()),
    ]
}

#[test]
fn assembles_a_live_collection() {
    let a = assemble(ROOT, &live_collection()).unwrap();
    assert_eq!(
        a.databases,
        vec![DatabaseMeta {
            id: 1,
            name: "default".into()
        }]
    );
    assert_eq!(a.collections.len(), 1);
    let c = &a.collections[0];
    assert_eq!(
        (c.id, c.db_id, c.db_name.as_str(), c.name.as_str()),
        (500, 1, "default", "c1")
    );
    let fields: Vec<(i64, &str)> = c
        .schema
        .fields
        .iter()
        .map(|f| (f.field_id, f.name.as_str()))
        .collect();
    assert_eq!(fields, vec![(100, "pk"), (101, "vec"), (102, "text")]);
    assert_eq!(c.schema.description, "d");
    assert!(c.schema.enable_dynamic_field);
    let parts: Vec<(i64, &str)> = c
        .partitions
        .iter()
        .map(|p| (p.id, p.name.as_str()))
        .collect();
    assert_eq!(parts, vec![(501, "_default"), (502, "p1")]);
    assert_eq!(c.shards_num, 2);
    assert_eq!(c.consistency_level, 2);
    assert_eq!(c.virtual_channels.len(), 2);
    assert_eq!(
        c.start_positions,
        vec![("by-dev-rootcoord-dml_0".to_owned(), vec![1, 2, 3])]
    );
    assert_eq!(c.create_time, 42);
}

#[test]
fn skips_tombstoned_and_not_created_collections() {
    let mut kvs = live_collection();
    kvs.push(kv(
        "root-coord/database/collection-info/1/600",
        TOMBSTONE.to_vec(),
    ));
    kvs.push(kv("root-coord/fields/600/100", TOMBSTONE.to_vec()));
    kvs.push(kv(
        "root-coord/database/collection-info/1/700",
        enc(&info(700, "dropping", 2)),
    ));
    kvs.push(kv(
        "root-coord/fields/700/100",
        enc(&field(100, "pk", DataType::Int64)),
    ));
    kvs.push(kv(
        "root-coord/database/collection-info/1/800",
        enc(&info(800, "creating", 1)),
    ));
    // Leftover fields of a collection whose info is gone.
    kvs.push(kv(
        "root-coord/fields/900/100",
        enc(&field(100, "pk", DataType::Int64)),
    ));
    let ids: Vec<i64> = assemble(ROOT, &kvs)
        .unwrap()
        .collections
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, vec![500]);
    let with_dropping: Vec<i64> = assemble_wanted(ROOT, &kvs, Wanted::LiveOrDropping)
        .unwrap()
        .collections
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(
        with_dropping,
        vec![500, 700],
        "a lookup by id still finds a dropping one"
    );
}

#[test]
fn database_names_come_from_db_info() {
    let mut kvs = live_collection();
    let db = |id: i64, name: &str, state: i32| DatabaseInfo {
        name: name.into(),
        id,
        state,
        ..Default::default()
    };
    kvs.push(kv(
        "root-coord/database/db-info/1",
        enc(&db(1, "default", 1)),
    ));
    kvs.push(kv("root-coord/database/db-info/5", enc(&db(5, "sales", 1))));
    kvs.push(kv("root-coord/database/db-info/6", enc(&db(6, "going", 3))));
    kvs.push(kv("root-coord/database/db-info/7", TOMBSTONE.to_vec()));
    let mut c = info(510, "in_sales", 0);
    c.db_id = 5;
    kvs.push(kv("root-coord/database/collection-info/5/510", enc(&c)));
    kvs.push(kv(
        "root-coord/fields/510/100",
        enc(&field(100, "pk", DataType::Int64)),
    ));
    let a = assemble(ROOT, &kvs).unwrap();
    let dbs: Vec<(i64, &str)> = a
        .databases
        .iter()
        .map(|d| (d.id, d.name.as_str()))
        .collect();
    assert_eq!(dbs, vec![(1, "default"), (5, "sales")]);
    let cs: Vec<(i64, i64, &str)> = a
        .collections
        .iter()
        .map(|c| (c.id, c.db_id, c.db_name.as_str()))
        .collect();
    assert_eq!(cs, vec![(500, 1, "default"), (510, 5, "sales")]);

    // A collection in a database nobody knows is an error, not a guess.
    kvs.push(kv(
        "root-coord/database/collection-info/9/520",
        enc(&info(520, "x", 0)),
    ));
    kvs.push(kv(
        "root-coord/fields/520/100",
        enc(&field(100, "pk", DataType::Int64)),
    ));
    assert!(matches!(
        assemble(ROOT, &kvs),
        Err(MetaError::UnknownDatabase {
            collection_id: 520,
            db_id: 9
        })
    ));
}

#[test]
fn legacy_collection_key_and_embedded_fields() {
    let mut legacy = info(300, "old", 0);
    legacy.db_id = 0;
    legacy.schema = enc(&CollectionSchema {
        name: "old".into(),
        fields: vec![
            field(101, "vec", DataType::FloatVector),
            field(0, "RowID", DataType::Int64),
            field(100, "pk", DataType::Int64),
        ],
        ..Default::default()
    });
    legacy.partition_ids = vec![301];
    legacy.partition_names = vec!["_default".into()];
    legacy.partition_created_timestamps = vec![9];
    let kvs = vec![kv("root-coord/collection/300", enc(&legacy))];
    let a = assemble(ROOT, &kvs).unwrap();
    let c = &a.collections[0];
    assert_eq!((c.db_id, c.db_name.as_str()), (1, "default"));
    let ids: Vec<i64> = c.schema.fields.iter().map(|f| f.field_id).collect();
    assert_eq!(ids, vec![100, 101]);
    assert_eq!(
        c.partitions,
        vec![PartitionMeta {
            id: 301,
            name: "_default".into(),
            created: 9
        }]
    );

    // The database-scoped key wins over the legacy one.
    let mut kvs = live_collection();
    kvs.push(kv("root-coord/collection/500", enc(&info(500, "stale", 0))));
    let a = assemble(ROOT, &kvs).unwrap();
    assert_eq!(a.collections[0].name, "c1");
}

#[test]
fn ignores_snapshots_and_foreign_keys() {
    let mut kvs = live_collection();
    kvs.push(kv(
        "snapshots/root-coord/database/collection-info/1/500_ts1",
        b"garbage".to_vec(),
    ));
    kvs.push(kv(
        "root-coord/snapshots/fields/500/100",
        b"garbage".to_vec(),
    ));
    kvs.push(kv("root-coord/credential/users/root", b"x".to_vec()));
    kvs.push(kv("root-coord/database/alias/1/a", b"x".to_vec()));
    kvs.push((
        "other-root/meta/root-coord/fields/1/1".into(),
        b"x".to_vec(),
    ));
    assert_eq!(assemble(ROOT, &kvs).unwrap().collections.len(), 1);
}

#[test]
fn reports_bad_keys_and_values() {
    let bad_key = vec![kv("root-coord/fields/abc/100", vec![])];
    assert!(
        matches!(assemble(ROOT, &bad_key), Err(MetaError::BadKey { key, .. }) if key.ends_with("fields/abc/100"))
    );
    let short = vec![kv("root-coord/partitions/500", vec![])];
    assert!(matches!(
        assemble(ROOT, &short),
        Err(MetaError::BadKey { .. })
    ));
    let bad_value = vec![kv("root-coord/fields/500/100", vec![0xff, 0xff, 0xff])];
    assert!(matches!(
        assemble(ROOT, &bad_value),
        Err(MetaError::Decode {
            what: "FieldSchema",
            ..
        })
    ));
    let mut no_fields = live_collection();
    no_fields.retain(|(k, _)| !k.contains("/fields/"));
    assert!(matches!(
        assemble(ROOT, &no_fields),
        Err(MetaError::Inconsistent {
            collection_id: 500,
            ..
        })
    ));
}
#[test]
fn fields_in_the_schema_win_over_keyed_ones_and_a_repeated_id_is_inconsistent() {
    let keyed = vec![field(101, "k", DataType::Int64)];
    let in_schema = vec![
        field(102, "b", DataType::Int64),
        field(100, "a", DataType::Int64),
    ];
    let ids = |fields: Vec<FieldSchema>| fields.iter().map(|f| f.field_id).collect::<Vec<_>>();
    assert_eq!(
        ids(user_fields(in_schema, keyed.clone()).unwrap()),
        vec![100, 102]
    );
    assert_eq!(ids(user_fields(Vec::new(), keyed).unwrap()), vec![101]);
    let twice = vec![
        field(100, "a", DataType::Int64),
        field(100, "b", DataType::Int64),
    ];
    assert_eq!(
        user_fields(twice, Vec::new()).unwrap_err(),
        "field id 100 appears twice"
    );
}

#[test]
fn partitions_listed_in_the_collection_info_need_as_many_names_as_ids() {
    let mut listed = info(500, "c", STATE_CREATED);
    listed.partition_ids = vec![9, 8];
    listed.partition_names = vec!["p9".into(), "p8".into()];
    let names = |parts: Vec<PartitionMeta>| parts.into_iter().map(|p| p.name).collect::<Vec<_>>();
    assert_eq!(
        names(partitions_of(&listed, Vec::new()).unwrap()),
        vec!["p8", "p9"]
    );
    listed.partition_names.pop();
    assert_eq!(
        partitions_of(&listed, Vec::new()).unwrap_err(),
        "2 partition ids but 1 partition names"
    );
    let keyed = vec![part(500, 3, "live", STATE_CREATED), part(500, 2, "gone", 2)];
    let unlisted = info(500, "c", STATE_CREATED);
    assert_eq!(
        names(partitions_of(&unlisted, keyed).unwrap()),
        vec!["live"]
    );
}

#[test]
fn a_collection_is_found_by_database_and_name_among_live_ones() {
    let db = DatabaseInfo {
        name: "db2".into(),
        id: 7,
        state: DB_STATE_CREATED,
        ..Default::default()
    };
    let mut in_db2 = info(600, "c1", 0);
    in_db2.db_id = 7;
    let kvs = vec![
        kv("root-coord/database/db-info/7", enc(&db)),
        // A dropped collection of the same name, and garbage, are passed over.
        kv(
            "root-coord/database/collection-info/1/400",
            enc(&info(400, "c1", 2)),
        ),
        kv("root-coord/database/collection-info/1/450", vec![0xff]),
        kv(
            "root-coord/database/collection-info/1/500",
            enc(&info(500, "c1", 0)),
        ),
        kv("root-coord/database/collection-info/7/600", enc(&in_db2)),
    ];
    assert_eq!(find_named(ROOT, &kvs, "", "c1").unwrap(), Some(500));
    assert_eq!(find_named(ROOT, &kvs, "default", "c1").unwrap(), Some(500));
    assert_eq!(find_named(ROOT, &kvs, "db2", "c1").unwrap(), Some(600));
    assert_eq!(find_named(ROOT, &kvs, "db3", "c1").unwrap(), None);
    assert_eq!(find_named(ROOT, &kvs, "", "c2").unwrap(), None);
}

#[test]
fn an_alias_names_its_collection_and_a_dropped_alias_nothing() {
    let alias = |name: &str, collection_id, state| AliasInfo {
        alias_name: name.into(),
        collection_id,
        state,
        db_id: 1,
        ..Default::default()
    };
    let kvs = vec![
        kv(
            "root-coord/database/collection-info/1/500",
            enc(&info(500, "c1", 0)),
        ),
        kv(
            "root-coord/database/aliases/1/a1",
            enc(&alias("a1", 500, 0)),
        ),
        kv("root-coord/database/aliases/1/gone", TOMBSTONE.to_vec()),
        kv(
            "root-coord/database/aliases/1/old",
            enc(&alias("old", 500, 2)),
        ),
    ];
    assert_eq!(find_named(ROOT, &kvs, "default", "a1").unwrap(), Some(500));
    assert_eq!(find_named(ROOT, &kvs, "db2", "a1").unwrap(), None);
    assert_eq!(find_named(ROOT, &kvs, "", "gone").unwrap(), None);
    assert_eq!(find_named(ROOT, &kvs, "", "old").unwrap(), None);
}

#[test]
fn indexes_keep_the_users_params_and_skip_deleted_ones() {
    use crate::proto::etcd_meta::{IndexInfo, KeyValuePair};
    let pair = |k: &str, v: &str| KeyValuePair {
        key: k.into(),
        value: v.into(),
    };
    let index = |name: &str, deleted| FieldIndex {
        index_info: Some(IndexInfo {
            collection_id: 5,
            field_id: 101,
            index_name: name.into(),
            index_params: vec![pair("index_type", "IVF_FLAT"), pair("nlist", "16")],
            user_index_params: vec![
                pair("index_type", "IVF_FLAT"),
                pair("params", r#"{"nlist":16}"#),
            ],
            ..Default::default()
        }),
        deleted,
        create_time: 1,
    };
    let kvs = vec![
        kv("field-index/5/1", enc(&index("live", false))),
        kv("field-index/5/2", enc(&index("gone", true))),
        kv("field-index/5/3", TOMBSTONE.to_vec()),
    ];
    let found = live_indexes(&kvs).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].field_id, found[0].index_name.as_str()),
        (101, "live")
    );
    assert_eq!(
        found[0].params[1],
        ("params".into(), r#"{"nlist":16}"#.into())
    );
}

#[test]
fn only_a_collection_loaded_whole_counts_as_loaded() {
    let info = |load_type, replica_number| {
        enc(&CollectionLoadInfo {
            collection_id: 5,
            replica_number,
            status: 2,
            load_type,
        })
    };
    assert_eq!(loaded_replicas("k", &info(2, 1)).unwrap(), Some(1));
    assert_eq!(loaded_replicas("k", &info(2, 0)).unwrap(), Some(1));
    assert_eq!(loaded_replicas("k", &info(1, 1)).unwrap(), None);
    assert_eq!(loaded_replicas("k", TOMBSTONE).unwrap(), None);
}
