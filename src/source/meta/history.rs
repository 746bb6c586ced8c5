//! Milvus's snapshot history of its metadata: every version of a root-coord value, written as
//! `{root}/meta/snapshots/{key}_ts{T}` in the same etcd transaction as the value, a tombstone
//! for a deletion. Milvus removes these a while after they are superseded, so they stand for a
//! collection's metadata for a while after its drop.

use super::MetaError;
use super::keys::decode;
use crate::proto::etcd_meta::DatabaseInfo;

/// The database's name as of source time `ts`, from the versions of its db-info: the newest
/// written at or before `ts` that is not a deletion, else the oldest one (a database is named
/// when it is made, before any of its collections' messages). None when no version is left.
pub fn database_name_at(
    versions: &[(String, Vec<u8>)],
    ts: u64,
) -> Result<Option<String>, MetaError> {
    let mut stamped = Vec::new();
    for (key, value) in versions {
        let Some(at) = key
            .rsplit_once("_ts")
            .and_then(|(_, t)| t.parse::<u64>().ok())
        else {
            continue;
        };
        if let Some(info) = decode::<DatabaseInfo>(key, value, "DatabaseInfo")? {
            stamped.push((at, info.name));
        }
    }
    stamped.sort();
    let at_or_before = stamped.iter().rev().find(|(at, _)| *at <= ts);
    Ok(at_or_before
        .or(stamped.first())
        .map(|(_, name)| name.clone()))
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::source::meta::TOMBSTONE;

    fn version(ts: u64, name: Option<&str>) -> (String, Vec<u8>) {
        let key = format!("by-dev/meta/snapshots/root-coord/database/db-info/7_ts{ts}");
        let value = match name {
            Some(name) => DatabaseInfo {
                name: name.into(),
                id: 7,
                ..Default::default()
            }
            .encode_to_vec(),
            None => TOMBSTONE.to_vec(),
        };
        (key, value)
    }

    #[test]
    fn a_dropped_database_is_named_by_its_version_before_the_time_asked() {
        let versions = [version(10, Some("sales")), version(50, None)];
        assert_eq!(
            database_name_at(&versions, 30).unwrap().as_deref(),
            Some("sales")
        );
        assert_eq!(
            database_name_at(&versions, 60).unwrap().as_deref(),
            Some("sales")
        );
        assert_eq!(
            database_name_at(&versions, 5).unwrap().as_deref(),
            Some("sales")
        );
        assert_eq!(database_name_at(&[], 5).unwrap(), None);
    }
}
