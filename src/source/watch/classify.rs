//! What one etcd key change means for the target: [`classify`], one function per kind of key.

use std::collections::HashMap;

use milvus::proto::schema::CollectionSchema;
use prost::Message;

use super::{KeyChange, MetaEvent, WatchError};
use crate::proto::etcd_meta::{AliasInfo, CollectionInfo, CollectionLoadInfo, PartitionLoadInfo};
use crate::source::meta::TOMBSTONE;

fn live(value: Option<&[u8]>) -> Option<&[u8]> {
    value.filter(|v| *v != TOMBSTONE)
}

pub(super) fn decode<M: Message + Default>(key: &str, bytes: &[u8]) -> Result<M, WatchError> {
    M::decode(bytes).map_err(|e| WatchError::BadValue {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// The source timestamps of one revision's root-coord changes: Milvus writes each as
/// `{root}/meta/snapshots/{key}_ts{T}` beside `{root}/meta/{key}`.
pub fn stamps<'a>(
    meta_root: &str,
    keys: impl IntoIterator<Item = &'a str>,
) -> HashMap<String, u64> {
    let prefix = format!("{meta_root}/snapshots/");
    keys.into_iter()
        .filter_map(|key| {
            let (original, ts) = key.strip_prefix(&prefix)?.rsplit_once("_ts")?;
            Some((format!("{meta_root}/{original}"), ts.parse().ok()?))
        })
        .collect()
}

/// `CollectionLoadInfo.load_type`.
pub(super) const LOAD_PARTITIONS: i32 = 1;
pub(super) const LOAD_COLLECTION: i32 = 2;

/// `AliasInfo.state` and `CollectionInfo.state` of one made and not being dropped.
const CREATED: i32 = 0;

/// What one key change means for the target, if anything.
pub fn classify(meta_root: &str, change: &KeyChange) -> Result<Option<MetaEvent>, WatchError> {
    let Some(rel) = change
        .key
        .strip_prefix(meta_root)
        .and_then(|k| k.strip_prefix('/'))
    else {
        return Ok(None);
    };
    let segments: Vec<&str> = rel.split('/').collect();
    match segments.as_slice() {
        ["root-coord", "database", "aliases", _db, alias] => alias_event(alias, change),
        ["querycoord-collection-loadinfo", _coll] => collection_load_event(change),
        ["querycoord-partition-loadinfo", _coll, _part] => partition_load_event(change),
        ["root-coord", "database", "collection-info", _db, _coll] => {
            collection_record_event(change)
        }
        _ => Ok(None),
    }
}

/// The value before the change, decoded, when there was one.
fn before<M: Message + Default>(change: &KeyChange) -> Result<Option<M>, WatchError> {
    live(change.prev)
        .map(|p| decode::<M>(change.key, p))
        .transpose()
}

/// An alias made, moved to another collection, or dropped; written again unchanged, nothing.
fn alias_event(alias: &str, change: &KeyChange) -> Result<Option<MetaEvent>, WatchError> {
    let before = before::<AliasInfo>(change)?;
    let Some(v) = live(change.value) else {
        return Ok(before.map(|b| MetaEvent::AliasDropped {
            alias: alias.to_owned(),
            collection_id: b.collection_id,
        }));
    };
    let info: AliasInfo = decode(change.key, v)?;
    if info.state != CREATED {
        return Ok(None);
    }
    let same = before
        .as_ref()
        .is_some_and(|b| b.state == CREATED && b.collection_id == info.collection_id);
    Ok((!same).then(|| MetaEvent::AliasSet {
        alias: alias.to_owned(),
        collection_id: info.collection_id,
        moved: before.is_some(),
    }))
}

/// A collection's load record written (loaded) or removed (released).
fn collection_load_event(change: &KeyChange) -> Result<Option<MetaEvent>, WatchError> {
    if let Some(v) = live(change.value) {
        return Ok(Some(MetaEvent::CollectionLoadRecorded {
            collection_id: decode::<CollectionLoadInfo>(change.key, v)?.collection_id,
        }));
    }
    Ok(
        before::<CollectionLoadInfo>(change)?.map(|b| MetaEvent::CollectionReleased {
            collection_id: b.collection_id,
            was_whole: b.load_type == LOAD_COLLECTION,
        }),
    )
}

/// A partition's load record: once per load (first recorded, or its replicas changed), and
/// its removal a release.
fn partition_load_event(change: &KeyChange) -> Result<Option<MetaEvent>, WatchError> {
    let before = before::<PartitionLoadInfo>(change)?;
    let Some(v) = live(change.value) else {
        return Ok(before.map(|b| MetaEvent::PartitionReleased {
            collection_id: b.collection_id,
            partition_id: b.partition_id,
        }));
    };
    let info: PartitionLoadInfo = decode(change.key, v)?;
    let same = before.is_some_and(|b| b.replica_number == info.replica_number);
    Ok((!same).then(|| MetaEvent::PartitionLoaded {
        collection_id: info.collection_id,
        partition_id: info.partition_id,
        replicas: info.replica_number.max(1),
    }))
}

/// A live collection's record written again: renamed when its schema's name changed, else
/// (perhaps) altered. Its creation and its drop are on the collection's channels.
fn collection_record_event(change: &KeyChange) -> Result<Option<MetaEvent>, WatchError> {
    let (Some(v), Some(p)) = (live(change.value), live(change.prev)) else {
        return Ok(None);
    };
    let (info, before): (CollectionInfo, CollectionInfo) =
        (decode(change.key, v)?, decode(change.key, p)?);
    if info.state != CREATED || before.state != CREATED {
        return Ok(None);
    }
    let name = |i: &CollectionInfo| {
        CollectionSchema::decode(i.schema.as_slice())
            .map(|s| s.name)
            .map_err(|e| WatchError::BadValue {
                key: change.key.to_owned(),
                reason: e.to_string(),
            })
    };
    let (to, from) = (name(&info)?, name(&before)?);
    Ok(Some(if to == from {
        MetaEvent::CollectionAltered {
            collection_id: info.id,
        }
    } else {
        MetaEvent::CollectionRenamed {
            collection_id: info.id,
            from,
            to,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "by-dev/meta";

    fn alias(collection_id: i64, state: i32) -> Vec<u8> {
        AliasInfo {
            alias_name: "a".into(),
            collection_id,
            state,
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn event(key: &str, value: Option<&[u8]>, prev: Option<&[u8]>) -> Option<MetaEvent> {
        classify(ROOT, &KeyChange { key, value, prev }).unwrap()
    }

    #[test]
    fn an_alias_created_moved_and_dropped_is_three_events() {
        let key = "by-dev/meta/root-coord/database/aliases/1/a";
        let (on_7, on_9) = (alias(7, 0), alias(9, 0));
        assert_eq!(
            event(key, Some(&on_7), None),
            Some(MetaEvent::AliasSet {
                alias: "a".into(),
                collection_id: 7,
                moved: false
            })
        );
        assert_eq!(
            event(key, Some(&on_9), Some(&on_7)),
            Some(MetaEvent::AliasSet {
                alias: "a".into(),
                collection_id: 9,
                moved: true
            })
        );
        assert_eq!(
            event(key, Some(&on_9), Some(&on_9)),
            None,
            "written again unchanged"
        );
        assert_eq!(
            event(key, Some(TOMBSTONE), Some(&on_9)),
            Some(MetaEvent::AliasDropped {
                alias: "a".into(),
                collection_id: 9
            })
        );
        assert_eq!(
            event(key, Some(&alias(9, 2)), Some(&on_9)),
            None,
            "being dropped"
        );
    }

    #[test]
    fn a_partition_load_record_is_a_load_once_and_its_removal_a_release() {
        let key = "by-dev/meta/querycoord-partition-loadinfo/7/70";
        let info = |status, replica_number| {
            PartitionLoadInfo {
                collection_id: 7,
                partition_id: 70,
                replica_number,
                status,
            }
            .encode_to_vec()
        };
        let (loading, loaded) = (info(1, 1), info(2, 1));
        assert_eq!(
            event(key, Some(&loading), None),
            Some(MetaEvent::PartitionLoaded {
                collection_id: 7,
                partition_id: 70,
                replicas: 1
            })
        );
        assert_eq!(
            event(key, Some(&loaded), Some(&loading)),
            None,
            "loading, then loaded"
        );
        assert_eq!(
            event(key, None, Some(&loaded)),
            Some(MetaEvent::PartitionReleased {
                collection_id: 7,
                partition_id: 70
            })
        );
    }

    #[test]
    fn a_collection_load_record_removed_says_whether_the_collection_was_loaded_whole() {
        let key = "by-dev/meta/querycoord-collection-loadinfo/7";
        let info = |load_type| {
            CollectionLoadInfo {
                collection_id: 7,
                load_type,
                ..Default::default()
            }
            .encode_to_vec()
        };
        let (whole, by_partition) = (info(LOAD_COLLECTION), info(LOAD_PARTITIONS));
        assert_eq!(
            event(key, None, Some(&whole)),
            Some(MetaEvent::CollectionReleased {
                collection_id: 7,
                was_whole: true
            })
        );
        assert_eq!(
            event(key, None, Some(&by_partition)),
            Some(MetaEvent::CollectionReleased {
                collection_id: 7,
                was_whole: false
            })
        );
        assert_eq!(
            event(key, Some(&by_partition), None),
            Some(MetaEvent::CollectionLoadRecorded { collection_id: 7 })
        );
    }

    #[test]
    fn a_collection_record_written_again_is_an_alter_or_a_rename_and_its_creation_or_drop_neither()
    {
        let key = "by-dev/meta/root-coord/database/collection-info/1/7";
        let info = |name: &str, state: i32| {
            CollectionInfo {
                id: 7,
                schema: CollectionSchema {
                    name: name.into(),
                    ..Default::default()
                }
                .encode_to_vec(),
                state,
                ..Default::default()
            }
            .encode_to_vec()
        };
        let (creating, created, dropping) = (info("c", 1), info("c", 0), info("c", 2));
        // Milvus 2.3.5 writes an alter's record unchanged: a write is all it shows.
        assert_eq!(
            event(key, Some(&created), Some(&created)),
            Some(MetaEvent::CollectionAltered { collection_id: 7 })
        );
        assert_eq!(
            event(key, Some(&info("d", 0)), Some(&created)),
            Some(MetaEvent::CollectionRenamed {
                collection_id: 7,
                from: "c".into(),
                to: "d".into()
            })
        );
        assert_eq!(event(key, Some(&created), Some(&creating)), None);
        assert_eq!(event(key, Some(&created), None), None);
        assert_eq!(event(key, Some(&dropping), Some(&created)), None);
    }

    #[test]
    fn a_root_coord_change_is_stamped_by_its_snapshot_key() {
        let stamped = stamps(
            ROOT,
            [
                "by-dev/meta/root-coord/database/aliases/1/a",
                "by-dev/meta/snapshots/root-coord/database/aliases/1/a_ts450000000000000001",
            ],
        );
        assert_eq!(
            stamped,
            HashMap::from([(
                "by-dev/meta/root-coord/database/aliases/1/a".to_owned(),
                450000000000000001
            )])
        );
    }
}
