//! Reads the source Milvus's metadata (databases, collections, fields, partitions) from etcd.
//!
//! Milvus 2.3 splits a collection over several keys under `{root}/meta/root-coord/`:
//! `database/collection-info/{db}/{coll}` (or, for collections of old versions,
//! `collection/{coll}`), `fields/{coll}/{field}`, `partitions/{coll}/{part}`, and
//! `database/db-info/{db}`. Every read of this module is taken at one etcd revision, so a
//! collection is never seen half-created or half-dropped across those keys.
//!
//! The I/O ([`SourceMeta`]) only fetches raw key/values; turning them into [`CollectionMeta`]s is
//! done by [`assemble`], a plain function, so the decoding is tested without etcd.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions};
use milvus::proto::schema::{CollectionSchema, FieldSchema};
use prost::Message;

use crate::model::parse_id;

use crate::proto::etcd_meta::{
    AliasInfo, CollectionInfo, CollectionLoadInfo, DatabaseInfo, FieldIndex, PartitionInfo,
};

/// What Milvus's snapshot KV writes in place of a deleted value (U+26FC, "⛼"); the key itself
/// stays until Milvus garbage-collects it.
pub const TOMBSTONE: &[u8] = &[0xE2, 0x9B, 0xBC];

/// Field ids below this are Milvus's system fields (RowID 0, Timestamp 1); users never see them.
pub const FIRST_USER_FIELD_ID: i64 = 100;

/// The database every collection belongs to when nothing says otherwise: Milvus 2.3 gives it id 1
/// and collections of versions before databases existed have db id 0.
pub const DEFAULT_DB_ID: i64 = 1;
pub const DEFAULT_DB_NAME: &str = "default";

/// Keys per etcd range request: keeps each reply far below gRPC's 4 MiB message limit.
const PAGE_SIZE: i64 = 256;

/// CollectionState / PartitionState `Created`.
const STATE_CREATED: i32 = 0;
/// CollectionState `Dropping`: dropped, not yet removed by Milvus's garbage collection.
const STATE_DROPPING: i32 = 2;

/// Which collections [`assemble`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// Collections in state created.
    Live,
    /// Also dropped ones etcd still holds: a message of a collection already dropped must
    /// still be captured (its DropCollection above all, on every one of its vchannels).
    LiveOrDropping,
}
/// DatabaseState `Unknown` (0) and `Created` (1) are live; the others are on their way out.
const DB_STATE_CREATED: i32 = 1;

/// etcd errors are boxed: `etcd_client::Error` is large and would bloat every `Result` here.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("cannot connect to etcd {endpoints:?}: {source}")]
    Connect {
        endpoints: Vec<String>,
        source: Box<etcd_client::Error>,
    },
    #[error("cannot read etcd range [{start:?}, {end:?}): {source}")]
    Read {
        start: String,
        end: String,
        source: Box<etcd_client::Error>,
    },
    #[error("malformed Milvus meta key {key:?}: {reason}")]
    BadKey { key: String, reason: String },
    #[error("cannot decode {what} at etcd key {key:?}: {source}")]
    Decode {
        key: String,
        what: &'static str,
        source: prost::DecodeError,
    },
    #[error("inconsistent metadata for collection {collection_id}: {reason}")]
    Inconsistent { collection_id: i64, reason: String },
    #[error("collection {collection_id} is in database {db_id}, which has no live db-info")]
    UnknownDatabase { collection_id: i64, db_id: i64 },
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CollectionMeta {
    pub id: i64,
    pub db_id: i64,
    pub db_name: String,
    pub name: String,
    /// Complete schema: the collection-info schema with its user fields (id >= 100) from
    /// root-coord/fields.
    pub schema: CollectionSchema,
    pub shards_num: i32,
    pub consistency_level: i32,
    pub virtual_channels: Vec<String>,
    pub physical_channels: Vec<String>,
    /// (physical channel, MQ message id bytes) where the collection starts.
    pub start_positions: Vec<(String, Vec<u8>)>,
    pub partitions: Vec<PartitionMeta>,
    pub create_time: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartitionMeta {
    pub id: i64,
    pub name: String,
    pub created: u64,
}

/// An index of a collection on the source, as a CreateIndex request would name it.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexMeta {
    pub field_id: i64,
    pub index_name: String,
    /// index_type, metric_type and params (one JSON string), as the user gave them.
    pub params: Vec<(String, String)>,
}

/// The live indexes among `field-index/{collection}/...` values.
pub fn live_indexes(kvs: &[(String, Vec<u8>)]) -> Result<Vec<IndexMeta>, MetaError> {
    let mut out = Vec::new();
    for (key, value) in kvs {
        let Some(index) = decode::<FieldIndex>(key, value, "FieldIndex")? else {
            continue;
        };
        let Some(info) = index.index_info.filter(|_| !index.deleted) else {
            continue;
        };
        // Milvus keeps the user's request apart from what it derived; older ones only the latter.
        let params = if info.user_index_params.is_empty() {
            info.index_params
        } else {
            info.user_index_params
        };
        out.push(IndexMeta {
            field_id: info.field_id,
            index_name: info.index_name,
            params: params.into_iter().map(|p| (p.key, p.value)).collect(),
        });
    }
    Ok(out)
}

/// Replicas of a collection loaded as a whole, from its `querycoord-collection-loadinfo` value;
/// None when it is not loaded (or only some partitions are).
pub fn loaded_replicas(key: &str, value: &[u8]) -> Result<Option<i32>, MetaError> {
    const LOAD_COLLECTION: i32 = 2;
    Ok(
        decode::<CollectionLoadInfo>(key, value, "CollectionLoadInfo")?
            .filter(|info| info.load_type == LOAD_COLLECTION)
            .map(|info| info.replica_number.max(1)),
    )
}

#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseMeta {
    pub id: i64,
    pub name: String,
}

/// A Milvus meta key this module understands, with the ids it carries. The ids of the key (not
/// of the value) group values together, as Milvus itself lists them by prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    /// `root-coord/database/collection-info/{db}/{coll}`
    CollectionInfo { db_id: i64, collection_id: i64 },
    /// `root-coord/collection/{coll}`: collections created before databases existed.
    LegacyCollection { collection_id: i64 },
    /// `root-coord/fields/{coll}/{field}`
    Field { collection_id: i64, field_id: i64 },
    /// `root-coord/partitions/{coll}/{part}`
    Partition {
        collection_id: i64,
        partition_id: i64,
    },
    /// `root-coord/database/db-info/{db}`
    Database { db_id: i64 },
}

impl MetaKey {
    /// The collection the key belongs to, if any.
    pub fn collection_id(&self) -> Option<i64> {
        match *self {
            MetaKey::CollectionInfo { collection_id, .. }
            | MetaKey::LegacyCollection { collection_id }
            | MetaKey::Field { collection_id, .. }
            | MetaKey::Partition { collection_id, .. } => Some(collection_id),
            MetaKey::Database { .. } => None,
        }
    }
}

/// `{root}/meta`, the way Milvus joins its root path and meta sub-path.
pub fn meta_root(root_path: &str) -> String {
    let root = root_path.trim_matches('/');
    if root.is_empty() {
        "meta".to_owned()
    } else {
        format!("{root}/meta")
    }
}

/// Classifies a full etcd key. `Ok(None)` for keys that are not metadata this module reads
/// (credentials, aliases, snapshot history, other roots); an error for a key in one of our
/// namespaces whose shape or ids are wrong, since skipping it would silently lose metadata.
pub fn parse_key(meta_root: &str, key: &str) -> Result<Option<MetaKey>, MetaError> {
    let Some(rel) = key
        .strip_prefix(meta_root)
        .and_then(|rest| rest.strip_prefix('/'))
    else {
        return Ok(None);
    };
    let segments: Vec<&str> = rel.split('/').collect();
    // Snapshot keys hold past versions (suffixed `_ts{ts}`); only the current value counts.
    if segments.contains(&"snapshots") {
        return Ok(None);
    }
    let bad = |reason: &str| MetaError::BadKey {
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    let id =
        |s: &str, what: &str| parse_id(s).ok_or_else(|| bad(&format!("{what} {s:?} is not an id")));
    let parsed = match segments.as_slice() {
        ["root-coord", "database", "collection-info", rest @ ..] => match rest {
            [db, coll] => MetaKey::CollectionInfo {
                db_id: id(db, "database")?,
                collection_id: id(coll, "collection")?,
            },
            _ => return Err(bad("expected collection-info/{dbID}/{collectionID}")),
        },
        ["root-coord", "database", "db-info", rest @ ..] => match rest {
            [db] => MetaKey::Database {
                db_id: id(db, "database")?,
            },
            _ => return Err(bad("expected db-info/{dbID}")),
        },
        ["root-coord", "collection", rest @ ..] => match rest {
            [coll] => MetaKey::LegacyCollection {
                collection_id: id(coll, "collection")?,
            },
            _ => return Err(bad("expected collection/{collectionID}")),
        },
        ["root-coord", "fields", rest @ ..] => match rest {
            [coll, field] => MetaKey::Field {
                collection_id: id(coll, "collection")?,
                field_id: id(field, "field")?,
            },
            _ => return Err(bad("expected fields/{collectionID}/{fieldID}")),
        },
        ["root-coord", "partitions", rest @ ..] => match rest {
            [coll, part] => MetaKey::Partition {
                collection_id: id(coll, "collection")?,
                partition_id: id(part, "partition")?,
            },
            _ => return Err(bad("expected partitions/{collectionID}/{partitionID}")),
        },
        _ => return Ok(None),
    };
    Ok(Some(parsed))
}

/// Milvus ids are non-negative decimal i64s; `str::parse` alone would also accept `+5`.

pub fn is_tombstone(value: &[u8]) -> bool {
    value == TOMBSTONE
}

/// Decodes a value unless it is a tombstone.
fn decode<M: Message + Default>(
    key: &str,
    value: &[u8],
    what: &'static str,
) -> Result<Option<M>, MetaError> {
    if is_tombstone(value) {
        return Ok(None);
    }
    M::decode(value)
        .map(Some)
        .map_err(|source| MetaError::Decode {
            key: key.to_owned(),
            what,
            source,
        })
}

/// Databases and live collections decoded from one consistent set of key/values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assembled {
    /// Sorted by id; always holds the default database.
    pub databases: Vec<DatabaseMeta>,
    /// Sorted by id.
    pub collections: Vec<CollectionMeta>,
}

#[derive(Default)]
struct CollectionParts {
    /// (db id from the key, info); more than one means the metadata is inconsistent.
    scoped: Vec<(i64, CollectionInfo)>,
    legacy: Option<CollectionInfo>,
    fields: Vec<FieldSchema>,
    partitions: Vec<PartitionInfo>,
}

/// Builds the databases and live collections from full etcd keys and their values, all read at
/// one revision. Keys outside the meta namespaces are ignored; tombstones, collections and
/// partitions not in state created, and system fields are left out.
pub fn assemble(meta_root: &str, kvs: &[(String, Vec<u8>)]) -> Result<Assembled, MetaError> {
    assemble_wanted(meta_root, kvs, Wanted::Live)
}

pub fn assemble_wanted(
    meta_root: &str,
    kvs: &[(String, Vec<u8>)],
    wanted: Wanted,
) -> Result<Assembled, MetaError> {
    let mut db_names: BTreeMap<i64, String> = BTreeMap::new();
    let mut parts: BTreeMap<i64, CollectionParts> = BTreeMap::new();
    for (key, value) in kvs {
        let Some(kind) = parse_key(meta_root, key)? else {
            continue;
        };
        match kind {
            MetaKey::Database { db_id } => {
                if let Some(db) = decode::<DatabaseInfo>(key, value, "DatabaseInfo")?
                    && (db.state == 0 || db.state == DB_STATE_CREATED)
                {
                    db_names.insert(db_id, db.name);
                }
            }
            MetaKey::CollectionInfo {
                db_id,
                collection_id,
            } => {
                if let Some(info) = decode::<CollectionInfo>(key, value, "CollectionInfo")? {
                    parts
                        .entry(collection_id)
                        .or_default()
                        .scoped
                        .push((db_id, info));
                }
            }
            MetaKey::LegacyCollection { collection_id } => {
                if let Some(info) = decode::<CollectionInfo>(key, value, "CollectionInfo")? {
                    parts.entry(collection_id).or_default().legacy = Some(info);
                }
            }
            MetaKey::Field { collection_id, .. } => {
                if let Some(field) = decode::<FieldSchema>(key, value, "FieldSchema")? {
                    parts.entry(collection_id).or_default().fields.push(field);
                }
            }
            MetaKey::Partition { collection_id, .. } => {
                if let Some(part) = decode::<PartitionInfo>(key, value, "PartitionInfo")? {
                    parts
                        .entry(collection_id)
                        .or_default()
                        .partitions
                        .push(part);
                }
            }
        }
    }
    db_names
        .entry(DEFAULT_DB_ID)
        .or_insert_with(|| DEFAULT_DB_NAME.to_owned());

    let mut collections = Vec::new();
    for (id, p) in parts {
        if let Some(c) = build_collection(id, p, &db_names, wanted)? {
            collections.push(c);
        }
    }
    let databases = db_names
        .into_iter()
        .map(|(id, name)| DatabaseMeta { id, name })
        .collect();
    Ok(Assembled {
        databases,
        collections,
    })
}

/// The id of the live collection called `name` in database `db_name` (`""`: the default), from
/// collection-info, alias and db-info values: requests sent through an alias carry the alias.
/// Other keys, and values that do not decode, are passed over: one damaged collection must not
/// hide another.
pub fn find_named(
    meta_root: &str,
    kvs: &[(String, Vec<u8>)],
    db_name: &str,
    name: &str,
) -> Result<Option<i64>, MetaError> {
    let db_name = if db_name.is_empty() {
        DEFAULT_DB_NAME
    } else {
        db_name
    };
    let mut db_names: BTreeMap<i64, String> =
        BTreeMap::from([(DEFAULT_DB_ID, DEFAULT_DB_NAME.to_owned())]);
    let mut candidates = Vec::new();
    let mut aliased: Option<(i64, i64)> = None;
    let alias_prefix = format!("{meta_root}/root-coord/database/aliases/");
    for (key, value) in kvs {
        if let Some((db_id, alias)) = key
            .strip_prefix(&alias_prefix)
            .and_then(|rest| rest.split_once('/'))
        {
            if alias == name
                && let (Some(db_id), Ok(Some(info))) = (
                    parse_id(db_id),
                    decode::<AliasInfo>(key, value, "AliasInfo"),
                )
                && info.state == STATE_CREATED
            {
                aliased = Some((db_id, info.collection_id));
            }
            continue;
        }
        match parse_key(meta_root, key)? {
            Some(MetaKey::Database { db_id }) => {
                if let Ok(Some(db)) = decode::<DatabaseInfo>(key, value, "DatabaseInfo")
                    && (db.state == 0 || db.state == DB_STATE_CREATED)
                {
                    db_names.insert(db_id, db.name);
                }
            }
            Some(MetaKey::CollectionInfo {
                db_id,
                collection_id,
            }) => candidates.push((Some(db_id), collection_id, key, value)),
            Some(MetaKey::LegacyCollection { collection_id }) => {
                candidates.push((None, collection_id, key, value))
            }
            _ => {}
        }
    }
    for (db_id, collection_id, key, value) in candidates {
        let Ok(Some(info)) = decode::<CollectionInfo>(key, value, "CollectionInfo") else {
            continue;
        };
        let Ok(schema) = CollectionSchema::decode(info.schema.as_slice()) else {
            continue;
        };
        let db_id = match db_id.unwrap_or(info.db_id) {
            0 => DEFAULT_DB_ID,
            id => id,
        };
        if info.state == STATE_CREATED
            && schema.name == name
            && db_names.get(&db_id).is_some_and(|n| n == db_name)
        {
            return Ok(Some(collection_id));
        }
    }
    Ok(aliased
        .filter(|(db_id, _)| db_names.get(db_id).is_some_and(|n| n == db_name))
        .map(|(_, collection_id)| collection_id))
}

/// One collection from its parts; `None` when it is not (or no longer) a live collection.
fn build_collection(
    id: i64,
    parts: CollectionParts,
    db_names: &BTreeMap<i64, String>,
    wanted: Wanted,
) -> Result<Option<CollectionMeta>, MetaError> {
    let inconsistent = |reason: String| MetaError::Inconsistent {
        collection_id: id,
        reason,
    };
    let CollectionParts {
        mut scoped,
        legacy,
        fields,
        partitions,
    } = parts;
    // The database-scoped key is where Milvus 2.3 writes; the legacy one only matters for
    // collections that never moved.
    let (db_id, info) = match (scoped.pop(), legacy) {
        (Some(_), _) if !scoped.is_empty() => {
            return Err(inconsistent(
                "collection-info under several databases".into(),
            ));
        }
        (Some(found), _) => found,
        (None, Some(info)) => (info.db_id, info),
        (None, None) => return Ok(None), // only fields/partitions left: dropped or foreign
    };
    let kept = info.state == STATE_CREATED
        || (wanted == Wanted::LiveOrDropping && info.state == STATE_DROPPING);
    if !kept {
        return Ok(None);
    }
    let db_id = if db_id == 0 { DEFAULT_DB_ID } else { db_id };
    let db_name = db_names
        .get(&db_id)
        .cloned()
        .ok_or(MetaError::UnknownDatabase {
            collection_id: id,
            db_id,
        })?;

    let mut schema = CollectionSchema::decode(info.schema.as_slice()).map_err(|e| {
        inconsistent(format!(
            "cannot decode CollectionSchema in collection-info: {e}"
        ))
    })?;
    // Collections of versions before 2.1 keep fields inside the schema; newer ones keep an
    // empty list there and one key per field (Milvus's own loader makes the same choice).
    let mut user_fields: Vec<FieldSchema> = if schema.fields.is_empty() {
        fields
    } else {
        std::mem::take(&mut schema.fields)
    };
    user_fields.retain(|f| f.field_id >= FIRST_USER_FIELD_ID);
    user_fields.sort_by_key(|f| f.field_id);
    if user_fields.is_empty() {
        return Err(inconsistent("live collection has no user fields".into()));
    }
    if let Some(w) = user_fields
        .windows(2)
        .find(|w| w[0].field_id == w[1].field_id)
    {
        return Err(inconsistent(format!(
            "field id {} appears twice",
            w[0].field_id
        )));
    }
    schema.fields = user_fields;

    // Same split for partitions: old versions list them in the collection-info.
    let mut parts: Vec<PartitionMeta> = if info.partition_ids.is_empty() {
        partitions
            .into_iter()
            .filter(|p| p.state == STATE_CREATED)
            .map(|p| PartitionMeta {
                id: p.partition_id,
                name: p.partition_name,
                created: p.partition_created_timestamp,
            })
            .collect()
    } else {
        if info.partition_names.len() != info.partition_ids.len() {
            return Err(inconsistent(format!(
                "{} partition ids but {} partition names",
                info.partition_ids.len(),
                info.partition_names.len()
            )));
        }
        info.partition_ids
            .iter()
            .zip(&info.partition_names)
            .enumerate()
            .map(|(i, (&pid, name))| PartitionMeta {
                id: pid,
                name: name.clone(),
                created: info
                    .partition_created_timestamps
                    .get(i)
                    .copied()
                    .unwrap_or(0),
            })
            .collect()
    };
    // Partition ids come from Milvus's global allocator, so id order is creation order.
    parts.sort_by_key(|p| p.id);

    Ok(Some(CollectionMeta {
        id,
        db_id,
        db_name,
        name: schema.name.clone(),
        schema,
        shards_num: info.shards_num,
        consistency_level: info.consistency_level,
        virtual_channels: info.virtual_channel_names,
        physical_channels: info.physical_channel_names,
        start_positions: info
            .start_positions
            .into_iter()
            .map(|p| (p.key, p.data))
            .collect(),
        partitions: parts,
        create_time: info.create_time,
    }))
}

/// The first key after every key starting with `prefix` (etcd's "range end" for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): "to the end of the keyspace".
    vec![0]
}

/// Reads the source Milvus's metadata from its etcd.
#[derive(Clone)]
pub struct SourceMeta {
    client: Client,
    meta_root: String,
}

impl std::fmt::Debug for SourceMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceMeta")
            .field("meta_root", &self.meta_root)
            .finish_non_exhaustive()
    }
}

impl SourceMeta {
    /// Connects and makes one read, so a wrong address fails here rather than on first use.
    pub async fn connect(endpoints: &[String], root_path: &str) -> Result<Self, MetaError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(30));
        let connect_err = |source| MetaError::Connect {
            endpoints: endpoints.to_vec(),
            source: Box::new(source),
        };
        let mut client = Client::connect(endpoints, Some(options))
            .await
            .map_err(connect_err)?;
        let meta_root = meta_root(root_path);
        client
            .get(
                meta_root.clone(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .map_err(connect_err)?;
        Ok(Self { client, meta_root })
    }

    pub fn meta_root(&self) -> &str {
        &self.meta_root
    }

    pub async fn databases(&self) -> Result<Vec<DatabaseMeta>, MetaError> {
        let mut rev = 0;
        let kvs = self
            .read_prefix("root-coord/database/db-info/", &mut rev, false)
            .await?;
        Ok(assemble(&self.meta_root, &kvs)?.databases)
    }

    /// Every live collection of every database.
    pub async fn collections(&self) -> Result<Vec<CollectionMeta>, MetaError> {
        let mut rev = 0;
        let mut kvs = Vec::new();
        // `database/` holds both collection-info and db-info (and aliases, which are ignored).
        for prefix in [
            "root-coord/database/",
            "root-coord/collection/",
            "root-coord/fields/",
            "root-coord/partitions/",
        ] {
            kvs.extend(self.read_prefix(prefix, &mut rev, false).await?);
        }
        Ok(assemble(&self.meta_root, &kvs)?.collections)
    }

    /// The live collection of that name in that database (`""` is the default database).
    /// Only collection-info and db-info values are read to find it, then the one collection.
    pub async fn collection_named(
        &self,
        db_name: &str,
        name: &str,
    ) -> Result<Option<CollectionMeta>, MetaError> {
        let mut rev = 0;
        let mut kvs = self
            .read_prefix("root-coord/database/", &mut rev, false)
            .await?;
        kvs.extend(
            self.read_prefix("root-coord/collection/", &mut rev, false)
                .await?,
        );
        match find_named(&self.meta_root, &kvs, db_name, name)? {
            Some(id) => self.collection(id).await,
            None => Ok(None),
        }
    }

    /// The collection's live indexes.
    pub async fn indexes(&self, collection_id: i64) -> Result<Vec<IndexMeta>, MetaError> {
        let mut rev = 0;
        let kvs = self
            .read_prefix(&format!("field-index/{collection_id}/"), &mut rev, false)
            .await?;
        live_indexes(&kvs)
    }

    /// How many replicas the collection is loaded with, None when it is not loaded.
    pub async fn loaded_replicas(&self, collection_id: i64) -> Result<Option<i32>, MetaError> {
        let mut rev = 0;
        let key = format!(
            "{}/querycoord-collection-loadinfo/{collection_id}",
            self.meta_root
        );
        match self.read_key(&key, &mut rev).await?.first() {
            Some((key, value)) => loaded_replicas(key, value),
            None => Ok(None),
        }
    }

    /// One collection, live or being dropped; `None` if etcd no longer has it.
    pub async fn collection(&self, id: i64) -> Result<Option<CollectionMeta>, MetaError> {
        let mut rev = 0;
        // The database of a collection is only in its key, so find the key first.
        let mut kvs = Vec::new();
        for (key, _) in self
            .read_prefix("root-coord/database/collection-info/", &mut rev, true)
            .await?
        {
            if parse_key(&self.meta_root, &key)?.and_then(|k| k.collection_id()) == Some(id) {
                kvs.extend(self.read_key(&key, &mut rev).await?);
            }
        }
        let legacy = format!("{}/root-coord/collection/{id}", self.meta_root);
        kvs.extend(self.read_key(&legacy, &mut rev).await?);
        for prefix in [
            format!("root-coord/fields/{id}/"),
            format!("root-coord/partitions/{id}/"),
            "root-coord/database/db-info/".to_owned(),
        ] {
            kvs.extend(self.read_prefix(&prefix, &mut rev, false).await?);
        }
        let assembled = assemble_wanted(&self.meta_root, &kvs, Wanted::LiveOrDropping)?;
        Ok(assembled.collections.into_iter().find(|c| c.id == id))
    }

    /// Every key/value under `{meta_root}/{rel_prefix}`.
    async fn read_prefix(
        &self,
        rel_prefix: &str,
        rev: &mut i64,
        keys_only: bool,
    ) -> Result<Vec<(String, Vec<u8>)>, MetaError> {
        let start = format!("{}/{rel_prefix}", self.meta_root).into_bytes();
        let end = prefix_end(&start);
        self.read_range(start, end, rev, keys_only).await
    }

    async fn read_key(
        &self,
        key: &str,
        rev: &mut i64,
    ) -> Result<Vec<(String, Vec<u8>)>, MetaError> {
        let start = key.as_bytes().to_vec();
        let mut end = start.clone();
        end.push(0);
        self.read_range(start, end, rev, false).await
    }

    /// Reads `[start, end)` page by page, all pages at revision `*rev`; a `*rev` of 0 is set to
    /// the revision of the first reply, so that every later read of the same call sees the
    /// same snapshot.
    async fn read_range(
        &self,
        mut start: Vec<u8>,
        end: Vec<u8>,
        rev: &mut i64,
        keys_only: bool,
    ) -> Result<Vec<(String, Vec<u8>)>, MetaError> {
        let mut client = self.client.clone();
        let mut out = Vec::new();
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE_SIZE)
                .with_revision(*rev);
            if keys_only {
                options = options.with_keys_only();
            }
            let mut resp = client
                .get(start.clone(), Some(options))
                .await
                .map_err(|source| MetaError::Read {
                    start: String::from_utf8_lossy(&start).into_owned(),
                    end: String::from_utf8_lossy(&end).into_owned(),
                    source: Box::new(source),
                })?;
            if *rev == 0
                && let Some(header) = resp.header()
            {
                *rev = header.revision();
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            let last_key = kvs.last().map(|kv| kv.key().to_vec());
            for kv in kvs {
                let key = String::from_utf8(kv.key().to_vec()).map_err(|_| MetaError::BadKey {
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    reason: "not UTF-8".into(),
                })?;
                out.push((key, kv.value().to_vec()));
            }
            match last_key {
                Some(mut last) if more => {
                    last.push(0);
                    start = last;
                }
                _ => return Ok(out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcd_meta::KeyDataPair;
    use milvus::proto::schema::DataType;

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
    fn meta_root_joins_like_milvus() {
        assert_eq!(meta_root("by-dev"), "by-dev/meta");
        assert_eq!(meta_root("by-dev/"), "by-dev/meta");
        assert_eq!(meta_root(""), "meta");
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

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(prefix_end(&[]), vec![0]);
    }
}
