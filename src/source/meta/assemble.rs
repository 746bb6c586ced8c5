//! Turning key/values read at one etcd revision into databases, collections, indexes and load
//! state. Plain functions without I/O, so all the decoding is tested without etcd.

use std::collections::BTreeMap;

use milvus::proto::schema::{CollectionSchema, FieldSchema};
use prost::Message;

use super::MetaError;
use super::keys::{MetaKey, decode, parse_key};
use super::types::{CollectionMeta, DatabaseMeta, IndexMeta, PartitionMeta};
use crate::model::{DEFAULT_DB, parse_id};
use crate::proto::etcd_meta::{
    AliasInfo, CollectionInfo, CollectionLoadInfo, DatabaseInfo, FieldIndex, PartitionInfo,
};

/// Field ids below this are Milvus's system fields (RowID 0, Timestamp 1); users never see them.
pub const FIRST_USER_FIELD_ID: i64 = 100;

/// The database every collection belongs to when nothing says otherwise: Milvus 2.3 gives it id 1
/// and collections of versions before databases existed have db id 0. Its name, when no db-info
/// says otherwise, is [`DEFAULT_DB`].
pub const DEFAULT_DB_ID: i64 = 1;

/// CollectionState / PartitionState `Created`.
const STATE_CREATED: i32 = 0;
/// CollectionState `Dropping`: dropped, not yet removed by Milvus's garbage collection.
const STATE_DROPPING: i32 = 2;
/// DatabaseState `Unknown` (0) and `Created` (1) are live; the others are on their way out.
const DB_STATE_CREATED: i32 = 1;

/// Which collections [`assemble`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// Collections in state created.
    Live,
    /// Also dropped ones etcd still holds: a message of a collection already dropped must
    /// still be captured (its DropCollection above all, on every one of its vchannels).
    LiveOrDropping,
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
        .or_insert_with(|| DEFAULT_DB.to_owned());

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
        DEFAULT_DB
    } else {
        db_name
    };
    let mut db_names: BTreeMap<i64, String> =
        BTreeMap::from([(DEFAULT_DB_ID, DEFAULT_DB.to_owned())]);
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
    schema.fields =
        user_fields(std::mem::take(&mut schema.fields), fields).map_err(inconsistent)?;
    let parts = partitions_of(&info, partitions).map_err(inconsistent)?;

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

/// The collection's user fields in id order, from its schema's list (`in_schema`) or from its
/// own keys (`keyed`); an error says what is inconsistent.
fn user_fields(
    in_schema: Vec<FieldSchema>,
    keyed: Vec<FieldSchema>,
) -> Result<Vec<FieldSchema>, String> {
    // Collections of versions before 2.1 keep fields inside the schema; newer ones keep an
    // empty list there and one key per field (Milvus's own loader makes the same choice).
    let mut fields = if in_schema.is_empty() {
        keyed
    } else {
        in_schema
    };
    fields.retain(|f| f.field_id >= FIRST_USER_FIELD_ID);
    fields.sort_by_key(|f| f.field_id);
    if fields.is_empty() {
        return Err("live collection has no user fields".into());
    }
    if let Some(w) = fields.windows(2).find(|w| w[0].field_id == w[1].field_id) {
        return Err(format!("field id {} appears twice", w[0].field_id));
    }
    Ok(fields)
}

/// The collection's live partitions in creation order, from its collection-info or from their
/// own keys (`keyed`); an error says what is inconsistent.
fn partitions_of(
    info: &CollectionInfo,
    keyed: Vec<PartitionInfo>,
) -> Result<Vec<PartitionMeta>, String> {
    // The same split as for fields: old versions list them in the collection-info.
    let mut parts: Vec<PartitionMeta> = if info.partition_ids.is_empty() {
        keyed
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
            return Err(format!(
                "{} partition ids but {} partition names",
                info.partition_ids.len(),
                info.partition_names.len()
            ));
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
    Ok(parts)
}

#[cfg(test)]
mod tests;
