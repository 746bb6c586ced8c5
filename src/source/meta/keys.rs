//! The keys Milvus writes its metadata under, and the tombstone it writes in place of a deleted
//! value. A key in one of the namespaces read here that does not parse is an error, never
//! skipped: skipping it would silently lose metadata.

use prost::Message;

use super::MetaError;
use crate::model::parse_id;

/// What Milvus's snapshot KV writes in place of a deleted value (U+26FC, "⛼"); the key itself
/// stays until Milvus garbage-collects it.
pub const TOMBSTONE: &[u8] = &[0xE2, 0x9B, 0xBC];

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

/// True for a value Milvus deleted: the key stays, its value is [`TOMBSTONE`].
pub fn is_tombstone(value: &[u8]) -> bool {
    value == TOMBSTONE
}

/// Decodes a value unless it is a tombstone.
pub(super) fn decode<M: Message + Default>(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_root_joins_like_milvus() {
        assert_eq!(meta_root("by-dev"), "by-dev/meta");
        assert_eq!(meta_root("by-dev/"), "by-dev/meta");
        assert_eq!(meta_root(""), "meta");
    }
}
