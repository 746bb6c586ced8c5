use std::collections::HashMap;

use milvus::proto::msg;
use milvus::proto::schema::{FieldSchema, IDs, LongArray, i_ds::IdField};
use prost::Message;

use super::*;
use crate::model::{Ddl, NameMapping};
use crate::source::decode::{InsertMessage, ReplicatedRequest};
use crate::source::meta::CollectionMeta;

const P0: &str = "by-dev-rootcoord-dml_0";
const V0: &str = "by-dev-rootcoord-dml_0_9v0";
const V1: &str = "by-dev-rootcoord-dml_1_9v1";

fn meta() -> HashMap<i64, CollectionMeta> {
    let meta = CollectionMeta {
        id: 9,
        db_id: 1,
        db_name: "default".into(),
        name: "c".into(),
        schema: CollectionSchema::default(),
        shards_num: 2,
        consistency_level: 0,
        virtual_channels: vec![V0.into(), V1.into()],
        physical_channels: vec![P0.into(), "by-dev-rootcoord-dml_1".into()],
        start_positions: vec![],
        partitions: vec![],
        create_time: 0,
    };
    HashMap::from([(9, meta)])
}

#[test]
fn a_delete_takes_its_database_from_the_metadata() {
    let m = msg::DeleteRequest {
        shard_name: V0.into(),
        collection_id: 9,
        collection_name: "c".into(),
        timestamps: vec![5],
        primary_keys: Some(IDs {
            id_field: Some(IdField::IntId(LongArray { data: vec![1, 2] })),
        }),
        ..Default::default()
    };
    let Captured::Changes(changes) =
        capture(SourceMessage::Delete(m), P0, &Scope::all(), &mut meta()).unwrap()
    else {
        panic!("expected changes")
    };
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].ts, 5);
    assert_eq!(changes[0].change.collection().db_name, "default");
}

#[test]
fn a_drop_is_staged_on_each_vchannel_of_this_pchannel_with_the_full_barrier() {
    let m = msg::DropCollectionRequest {
        collection_id: 9,
        collection_name: "c".into(),
        ..Default::default()
    };
    let Captured::Changes(changes) = capture(
        SourceMessage::DropCollection(m),
        P0,
        &Scope::all(),
        &mut meta(),
    )
    .unwrap() else {
        panic!("expected changes")
    };
    assert_eq!(
        changes
            .iter()
            .map(|c| c.vchannel.as_str())
            .collect::<Vec<_>>(),
        [V0]
    );
    let Change::Ddl(ddl) = &changes[0].change else {
        panic!()
    };
    assert_eq!(ddl.barrier, [V0, V1]);
}

#[test]
fn create_collection_takes_the_name_it_was_made_with_from_the_schema_and_drops_system_fields() {
    let schema = CollectionSchema {
        name: "fresh".into(),
        fields: vec![
            FieldSchema {
                field_id: 0,
                name: "RowID".into(),
                ..Default::default()
            },
            FieldSchema {
                field_id: 100,
                name: "id".into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let m = msg::CreateCollectionRequest {
        collection_id: 10,
        schema: schema.encode_to_vec(),
        virtual_channel_names: vec!["by-dev-rootcoord-dml_0_10v0".into()],
        ..Default::default()
    };
    // Renamed since: a reader reading the message now finds the new name in the metadata.
    let mut lookup = meta();
    let mut renamed = lookup[&9].clone();
    (renamed.id, renamed.name) = (10, "renamed_since".into());
    lookup.insert(10, renamed);
    let Captured::Changes(changes) = capture(
        SourceMessage::CreateCollection(Box::new(m)),
        P0,
        &Scope::all(),
        &mut lookup,
    )
    .unwrap() else {
        panic!("expected changes")
    };
    let Change::Ddl(Ddl {
        collection,
        event: DdlEvent::CreateCollection {
            schema, shards_num, ..
        },
        ..
    }) = &changes[0].change
    else {
        panic!()
    };
    assert_eq!(collection.name, "fresh");
    assert_eq!(*shards_num, 1);
    let schema = CollectionSchema::decode(schema.as_slice()).unwrap();
    assert_eq!(
        schema
            .fields
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>(),
        ["id"]
    );
}

#[test]
fn out_of_scope_collections_are_skipped() {
    let scope = Scope::default_db(["other"]);
    let m = InsertMessage {
        shard_name: V0.into(),
        collection_id: 9,
        collection_name: "c".into(),
        ..Default::default()
    };
    assert_eq!(
        capture(SourceMessage::Insert(m), P0, &scope, &mut meta()),
        Ok(Captured::Skipped)
    );
}

/// A lookup that must not be consulted.
struct NoLookup;

impl CollectionLookup for NoLookup {
    fn collection(&mut self, id: i64) -> Result<Option<CollectionMeta>, LookupError> {
        panic!("collection {id} was looked up")
    }

    fn collection_named(
        &mut self,
        db_name: &str,
        name: &str,
    ) -> Result<Option<CollectionMeta>, LookupError> {
        panic!("collection {db_name}.{name} was looked up")
    }
}

#[test]
fn a_named_scope_skips_other_names_without_a_metadata_lookup() {
    let scope = Scope::default_db(["wanted"]);
    let m = InsertMessage {
        shard_name: V0.into(),
        collection_id: 404,
        collection_name: "dropped_long_ago".into(),
        ..Default::default()
    };
    assert_eq!(
        capture(SourceMessage::Insert(m), P0, &scope, &mut NoLookup),
        Ok(Captured::Skipped)
    );
}

/// A source whose metadata no longer has collection 9, and a journal that saw `seen` of it.
struct Removed {
    seen: Vec<String>,
}

impl CollectionLookup for Removed {
    fn collection(&mut self, _: i64) -> Result<Option<CollectionMeta>, LookupError> {
        Ok(None)
    }

    fn collection_named(
        &mut self,
        _: &str,
        _: &str,
    ) -> Result<Option<CollectionMeta>, LookupError> {
        Ok(None)
    }

    fn vchannels_seen(&mut self, _: i64) -> Result<Vec<String>, LookupError> {
        Ok(self.seen.clone())
    }

    fn database_at(&mut self, _: i64, _: u64) -> Result<Option<String>, LookupError> {
        Ok(Some("default".into()))
    }
}

fn drop_of_9() -> SourceMessage {
    SourceMessage::DropCollection(msg::DropCollectionRequest {
        collection_id: 9,
        collection_name: "c".into(),
        ..Default::default()
    })
}

#[test]
fn a_drop_of_a_collection_gone_from_the_metadata_reaches_the_vchannels_the_task_saw() {
    let mut lookup = Removed {
        seen: vec![V0.into()],
    };
    let Ok(Captured::Changes(changes)) = capture(drop_of_9(), P0, &Scope::all(), &mut lookup)
    else {
        panic!("the drop is staged")
    };
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].vchannel, V0);
    assert!(matches!(
        &changes[0].change,
        Change::Ddl(Ddl { event: DdlEvent::DropCollection, collection, .. }) if collection.name == "c"
    ));

    // Never seen by the task: the target has nothing of it from this task.
    let mut unseen = Removed { seen: vec![] };
    assert_eq!(
        capture(drop_of_9(), P0, &Scope::all(), &mut unseen),
        Ok(Captured::Skipped)
    );
}

/// A source whose metadata no longer has collection 9, and whose history says `database`.
struct Dropped {
    database: Option<String>,
}

impl CollectionLookup for Dropped {
    fn collection(&mut self, _: i64) -> Result<Option<CollectionMeta>, LookupError> {
        Ok(None)
    }

    fn collection_named(
        &mut self,
        _: &str,
        _: &str,
    ) -> Result<Option<CollectionMeta>, LookupError> {
        Ok(None)
    }

    fn database_at(&mut self, id: i64, ts: u64) -> Result<Option<String>, LookupError> {
        assert_eq!((id, ts), (9, 5));
        Ok(self.database.clone())
    }
}

fn insert_into_9() -> SourceMessage {
    SourceMessage::Insert(InsertMessage {
        shard_name: V0.into(),
        collection_id: 9,
        collection_name: "c".into(),
        timestamps: vec![5],
        num_rows: 1,
        ..Default::default()
    })
}

#[test]
fn rows_of_a_collection_gone_from_the_metadata_go_to_the_database_its_history_names() {
    let mut lookup = Dropped {
        database: Some("sales".into()),
    };
    let Ok(Captured::Changes(changes)) = capture(insert_into_9(), P0, &Scope::all(), &mut lookup)
    else {
        panic!("the rows are staged")
    };
    assert_eq!(changes[0].change.collection().db_name, "sales");
}

#[test]
fn rows_of_a_collection_no_metadata_places_in_a_database_stop_the_task_never_guessed() {
    let mut lookup = Dropped { database: None };
    let err = capture(insert_into_9(), P0, &Scope::all(), &mut lookup).unwrap_err();
    assert_eq!(
        err,
        CaptureError::NoDatabase {
            collection: "c".into(),
            id: 9
        }
    );
    assert!(err.to_string().contains("collection c (id 9)"), "{err}");
}

const LANE: &str = "by-dev-replicate-msg";

fn load(db_name: &str, collection: &str, ts: u64) -> SourceMessage {
    SourceMessage::Replicated(ReplicatedRequest::Load(
        milvus::proto::milvus::LoadCollectionRequest {
            base: Some(milvus::proto::common::MsgBase {
                msg_type: milvus::proto::common::MsgType::LoadCollection as i32,
                timestamp: ts,
                ..Default::default()
            }),
            db_name: db_name.into(),
            collection_name: collection.into(),
            replica_number: 1,
            ..Default::default()
        },
    ))
}

#[test]
fn a_replicated_event_is_staged_once_on_the_replicate_channel_and_waits_for_every_vchannel() {
    let Captured::Changes(changes) =
        capture(load("default", "c", 50), LANE, &Scope::all(), &mut meta()).unwrap()
    else {
        panic!("expected changes")
    };
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0].vchannel.as_str(), changes[0].ts), (LANE, 50));
    let Change::Ddl(ddl) = &changes[0].change else {
        panic!("expected an event")
    };
    assert_eq!(ddl.collection.id, 9, "the id comes from the metadata");
    assert_eq!(ddl.barrier, [LANE]);
    let DdlEvent::Replicated {
        kind, waits_for, ..
    } = &ddl.event
    else {
        panic!("expected a replicated event")
    };
    assert_eq!(*kind, crate::model::ReplicatedKind::Load);
    assert_eq!(waits_for, &[V0, V1]);
}

#[test]
fn replicated_events_follow_the_tasks_scope() {
    let wanted = Scope::default_db(["c"]);
    let other = Scope::default_db(["other"]);
    assert!(matches!(
        capture(load("default", "c", 50), LANE, &wanted, &mut meta()),
        Ok(Captured::Changes(_))
    ));
    assert_eq!(
        capture(load("default", "c", 50), LANE, &other, &mut NoLookup),
        Ok(Captured::Skipped)
    );
    // A named scope is the default database's collections only.
    assert_eq!(
        capture(load("db2", "c", 50), LANE, &wanted, &mut NoLookup),
        Ok(Captured::Skipped)
    );
}

#[test]
fn database_events_pass_only_for_a_task_on_everything() {
    let create = SourceMessage::Replicated(ReplicatedRequest::CreateDatabase(
        milvus::proto::milvus::CreateDatabaseRequest {
            db_name: "ops".into(),
            ..Default::default()
        },
    ));
    let named = Scope::default_db(["c"]);
    assert_eq!(
        capture(create.clone(), LANE, &named, &mut NoLookup),
        Ok(Captured::Skipped)
    );
    let Ok(Captured::Changes(changes)) = capture(create, LANE, &Scope::all(), &mut NoLookup) else {
        panic!("expected changes")
    };
    let Change::Ddl(ddl) = &changes[0].change else {
        panic!("expected an event")
    };
    assert_eq!(ddl.collection.db_name, "ops");
    assert!(matches!(&ddl.event, DdlEvent::Replicated { waits_for, .. } if waits_for.is_empty()));
}

#[test]
fn a_flush_keeps_only_the_in_scope_collections_each_with_its_own_request() {
    let flush = SourceMessage::Replicated(ReplicatedRequest::Flush(
        milvus::proto::milvus::FlushRequest {
            db_name: "default".into(),
            collection_names: vec!["other".into(), "c".into()],
            ..Default::default()
        },
    ));
    let scope = Scope::default_db(["c"]);
    let Ok(Captured::Changes(changes)) = capture(flush, LANE, &scope, &mut meta()) else {
        panic!("expected changes")
    };
    assert_eq!(changes.len(), 1);
    let Change::Ddl(Ddl {
        event: DdlEvent::Replicated { request, .. },
        ..
    }) = &changes[0].change
    else {
        panic!("expected an event")
    };
    let request = milvus::proto::milvus::FlushRequest::decode(request.as_slice()).unwrap();
    assert_eq!(request.collection_names, ["c"]);
}

#[test]
fn a_replicated_event_on_a_collection_gone_from_the_source_or_older_than_it_is_skipped() {
    assert_eq!(
        capture(
            load("default", "gone", 50),
            LANE,
            &Scope::all(),
            &mut meta()
        ),
        Ok(Captured::Skipped)
    );
    let mut recreated = meta();
    if let Some(c) = recreated.get_mut(&9) {
        c.create_time = 60;
    }
    assert_eq!(
        capture(
            load("default", "c", 50),
            LANE,
            &Scope::all(),
            &mut recreated
        ),
        Ok(Captured::Skipped),
        "an event older than the collection belongs to an earlier one of that name"
    );
}

/// A source where `a` is an alias of collection 9 (`c`).
struct Aliased;

impl CollectionLookup for Aliased {
    fn collection(&mut self, id: i64) -> Result<Option<CollectionMeta>, LookupError> {
        Ok(meta().remove(&id))
    }

    fn collection_named(
        &mut self,
        db_name: &str,
        name: &str,
    ) -> Result<Option<CollectionMeta>, LookupError> {
        let name = if name == "a" { "c" } else { name };
        meta().collection_named(db_name, name)
    }
}

#[test]
fn an_event_sent_through_an_alias_is_staged_for_the_collection_itself() {
    let Ok(Captured::Changes(changes)) =
        capture(load("default", "a", 50), LANE, &Scope::all(), &mut Aliased)
    else {
        panic!("expected changes")
    };
    let Change::Ddl(Ddl {
        collection,
        event: DdlEvent::Replicated { request, .. },
        ..
    }) = &changes[0].change
    else {
        panic!("expected an event")
    };
    assert_eq!((collection.id, collection.name.as_str()), (9, "c"));
    let request = milvus::proto::milvus::LoadCollectionRequest::decode(request.as_slice()).unwrap();
    assert_eq!(request.collection_name, "c");
}

#[test]
fn renamed_collections_are_captured_under_their_target_names() {
    let scope = Scope::all().renaming(vec![NameMapping {
        source_db: "default".into(),
        target_db: "dr".into(),
        col_mapping: [("c".to_owned(), "c_copy".to_owned())].into(),
    }]);
    assert_eq!(scope.target_name("", "c"), ("dr".into(), "c_copy".into()));
    assert_eq!(scope.target_name("default", "d"), ("dr".into(), "d".into()));
    assert_eq!(
        scope.target_name("sales", "c"),
        ("sales".into(), "c".into())
    );
    let m = InsertMessage {
        shard_name: V0.into(),
        collection_id: 9,
        collection_name: "c".into(),
        num_rows: 1,
        ..Default::default()
    };
    let Ok(Captured::Changes(changes)) = capture(SourceMessage::Insert(m), P0, &scope, &mut meta())
    else {
        panic!("not captured");
    };
    let target = changes[0].change.collection();
    assert_eq!(
        (target.db_name.as_str(), target.name.as_str(), target.id),
        ("dr", "c_copy", 9)
    );
}

#[test]
fn a_delete_without_keys_is_an_error() {
    let m = msg::DeleteRequest {
        shard_name: V0.into(),
        collection_id: 9,
        ..Default::default()
    };
    assert!(matches!(
        capture(SourceMessage::Delete(m), P0, &Scope::all(), &mut meta()),
        Err(CaptureError::NoKeys { .. })
    ));
}
