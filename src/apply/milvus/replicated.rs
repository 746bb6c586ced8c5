//! Operations read from the replicate channel (the source's `{prefix}-replicate-msg` topic:
//! index, load, release, flush, database), sent to the target as the public requests they are, made idempotent: a replayed
//! event must leave the target as one application would.

use std::time::{Duration, Instant};

use milvus::proto::common::{ErrorCode, KeyValuePair};
use milvus::proto::milvus as rpc;
use prost::Message;
use tracing::{info, warn};

use super::{MilvusTarget, SOURCE_ID_PROPERTY, check};
use crate::apply::{Ddl, TargetError};
use crate::model::{CollectionRef, ReplicatedKind};

/// How long a load waits for its collection's index on the target. The index event comes
/// before the load on the replicate channel, so once it is applied the index is there at once;
/// one that never comes was created before the task started, and waiting longer would only
/// hold up every later event of the replicate channel.
const LOAD_WAITS_FOR_INDEX: Duration = Duration::from_secs(60);

/// The stored request, decoded; one that does not decode can never be sent.
pub(super) fn request<M: Message + Default>(
    kind: ReplicatedKind,
    bytes: &[u8],
) -> Result<M, TargetError> {
    M::decode(bytes).map_err(|e| {
        TargetError::Permanent(format!(
            "stored {} request does not decode: {e}",
            kind.operation().as_str()
        ))
    })
}

/// A stored request on one collection, sent to the target under the target's names.
trait OnCollection: Message + Default {
    /// Addressed to `c` on the target, without the source's message header.
    fn address(&mut self, c: &CollectionRef);
}

/// The requests that name their database and collection the same way.
macro_rules! on_collection {
    ($($request:ty),*) => {$(
        impl OnCollection for $request {
            fn address(&mut self, c: &CollectionRef) {
                self.base = None;
                (self.db_name, self.collection_name) = (c.db_name.clone(), c.name.clone());
            }
        }
    )*};
}

on_collection!(
    rpc::CreateIndexRequest,
    rpc::DropIndexRequest,
    rpc::LoadCollectionRequest,
    rpc::ReleaseCollectionRequest,
    rpc::LoadPartitionsRequest,
    rpc::ReleasePartitionsRequest,
    rpc::AlterCollectionRequest
);

impl OnCollection for rpc::FlushRequest {
    fn address(&mut self, c: &CollectionRef) {
        self.base = None;
        (self.db_name, self.collection_names) = (c.db_name.clone(), vec![c.name.clone()]);
    }
}

/// The stored request, decoded and addressed to collection `c` on the target.
fn addressed<M: OnCollection>(
    kind: ReplicatedKind,
    bytes: &[u8],
    c: &CollectionRef,
) -> Result<M, TargetError> {
    let mut r: M = request(kind, bytes)?;
    r.address(c);
    Ok(r)
}

/// Milvus 2.3 answers DescribeIndex on a collection without an index with an error status.
// `error_code` is deprecated upstream but it is what Milvus 2.3 fills in.
#[allow(deprecated)]
fn no_index(status: Option<&milvus::proto::common::Status>) -> bool {
    status.is_some_and(|s| {
        s.error_code == ErrorCode::IndexNotExist as i32
            || s.code == 700
            || s.reason.contains("index not found")
    })
}

impl MilvusTarget {
    /// The target's indexes on the collection, all fields.
    fn indexes(&mut self, c: &CollectionRef) -> Result<Vec<rpc::IndexDescription>, TargetError> {
        let request = rpc::DescribeIndexRequest {
            db_name: c.db_name.clone(),
            collection_name: c.name.clone(),
            ..Default::default()
        };
        let mut client = self.client.clone();
        let reply = self.unary("DescribeIndex", client.describe_index(request))?;
        if no_index(reply.status.as_ref()) {
            return Ok(Vec::new());
        }
        check("DescribeIndex", &c.name, reply.status.as_ref())?;
        Ok(reply.index_descriptions)
    }

    pub(super) fn databases(&mut self) -> Result<Vec<String>, TargetError> {
        let mut client = self.client.clone();
        let reply = self.unary(
            "ListDatabases",
            client.list_databases(rpc::ListDatabasesRequest::default()),
        )?;
        check("ListDatabases", "", reply.status.as_ref())?;
        Ok(reply.db_names)
    }

    /// Whether the collection is on the target; false as well when its database is not.
    pub(super) fn collection_exists(&mut self, c: &CollectionRef) -> Result<bool, TargetError> {
        let default_db = c.db_name.is_empty() || c.db_name == "default";
        if !default_db && !self.databases()?.contains(&c.db_name) {
            return Ok(false);
        }
        self.has_collection(c)
    }

    /// Collections of a target database.
    pub(super) fn collections_in(&mut self, db_name: &str) -> Result<Vec<String>, TargetError> {
        let request = rpc::ShowCollectionsRequest {
            db_name: db_name.to_owned(),
            ..Default::default()
        };
        let mut client = self.client.clone();
        let reply = self.unary("ShowCollections", client.show_collections(request))?;
        check("ShowCollections", db_name, reply.status.as_ref())?;
        Ok(reply.collection_names)
    }

    pub(super) fn replicated_not_ready(
        &mut self,
        ddl: &Ddl,
        kind: ReplicatedKind,
    ) -> Result<Option<String>, TargetError> {
        let c = &ddl.collection;
        match kind {
            // LoadCollection fails without an index; the index event before it may still be
            // on its way (or building on a slow target). So does LoadPartitions.
            ReplicatedKind::Load | ReplicatedKind::LoadPartitions => {
                let key = (c.db_name.clone(), c.name.clone());
                if !self.collection_exists(c)? || !self.indexes(c)?.is_empty() {
                    self.load_waits.remove(&key);
                    return Ok(None);
                }
                let since = *self.load_waits.entry(key).or_insert_with(Instant::now);
                if since.elapsed() >= LOAD_WAITS_FOR_INDEX {
                    // Given up: the load itself is skipped (see `load_collection`).
                    return Ok(None);
                }
                Ok(Some(format!(
                    "load of {}.{}: no index on the target yet",
                    c.db_name, c.name
                )))
            }
            // Milvus refuses to drop a database that has collections; their drops come on the
            // collections' own vchannels, applied by this same applier.
            ReplicatedKind::DropDatabase => {
                if !self.databases()?.contains(&c.db_name) {
                    return Ok(None);
                }
                let left = self.collections_in(&c.db_name)?;
                if left.is_empty() {
                    return Ok(None);
                }
                Ok(Some(format!(
                    "drop of database {}: {} collections still on the target ({})",
                    c.db_name,
                    left.len(),
                    left.join(", ")
                )))
            }
            _ => Ok(None),
        }
    }

    pub(super) fn apply_replicated(
        &mut self,
        ddl: &Ddl,
        kind: ReplicatedKind,
        bytes: &[u8],
    ) -> Result<(), TargetError> {
        let c = &ddl.collection;
        if kind.is_database() {
            return self.apply_database(kind, bytes, &c.db_name);
        }
        if kind.is_access_control() {
            return self.apply_access_control(kind, bytes);
        }
        if !self.collection_exists(c)? {
            // Dropped on the source since (the drop is applied already, or comes later).
            info!(collection = %c.name, database = %c.db_name, operation = kind.operation().as_str(),
                "skipped: the collection is not on the target");
            return Ok(());
        }
        let mut client = self.client.clone();
        match kind {
            ReplicatedKind::CreateIndex => self.create_index(c, addressed(kind, bytes, c)?),
            ReplicatedKind::DropIndex => self.drop_index(c, addressed(kind, bytes, c)?),
            // Loading a loaded collection and releasing a released one succeed on Milvus.
            ReplicatedKind::Load => self.load_collection(c, addressed(kind, bytes, c)?),
            ReplicatedKind::Release => {
                let r: rpc::ReleaseCollectionRequest = addressed(kind, bytes, c)?;
                let reply = self.unary("ReleaseCollection", client.release_collection(r))?;
                check("ReleaseCollection", &c.name, Some(&reply))
            }
            ReplicatedKind::Flush => {
                let r: rpc::FlushRequest = addressed(kind, bytes, c)?;
                let reply = self.unary("Flush", client.flush(r))?;
                check("Flush", &c.name, reply.status.as_ref())
            }
            // Applied above, on no collection.
            ReplicatedKind::CreateDatabase
            | ReplicatedKind::DropDatabase
            | ReplicatedKind::CreateRole
            | ReplicatedKind::DropRole
            | ReplicatedKind::OperateUserRole
            | ReplicatedKind::OperatePrivilege
            | ReplicatedKind::CreateUser
            | ReplicatedKind::DropUser => Ok(()),
            ReplicatedKind::LoadPartitions => self.load_partitions(c, addressed(kind, bytes, c)?),
            ReplicatedKind::ReleasePartitions => {
                self.release_partitions(c, addressed(kind, bytes, c)?)
            }
            ReplicatedKind::CreateAlias => {
                let alias = request::<rpc::CreateAliasRequest>(kind, bytes)?.alias;
                self.point_alias(c, alias)
            }
            ReplicatedKind::AlterAlias => {
                let alias = request::<rpc::AlterAliasRequest>(kind, bytes)?.alias;
                self.point_alias(c, alias)
            }
            ReplicatedKind::DropAlias => self.drop_alias(c, request(kind, bytes)?),
            ReplicatedKind::RenameCollection => {
                let r: rpc::RenameCollectionRequest = request(kind, bytes)?;
                self.rename_collection(c, &r.new_name)
            }
            ReplicatedKind::AlterCollection => self.alter_collection(c, addressed(kind, bytes, c)?),
        }
    }

    /// Skipped when the target has the index already: by its name, or on its field for an
    /// index made without a name.
    fn create_index(
        &mut self,
        c: &CollectionRef,
        r: rpc::CreateIndexRequest,
    ) -> Result<(), TargetError> {
        let exists = self.indexes(c)?.iter().any(|i| {
            if r.index_name.is_empty() {
                i.field_name == r.field_name
            } else {
                i.index_name == r.index_name
            }
        });
        if exists {
            return Ok(());
        }
        let mut client = self.client.clone();
        let reply = self.unary("CreateIndex", client.create_index(r))?;
        check("CreateIndex", &c.name, Some(&reply))
    }

    /// Skipped when the target has no index the request names.
    fn drop_index(
        &mut self,
        c: &CollectionRef,
        r: rpc::DropIndexRequest,
    ) -> Result<(), TargetError> {
        let exists = self.indexes(c)?.iter().any(|i| {
            (r.index_name.is_empty() || i.index_name == r.index_name)
                && (r.field_name.is_empty() || i.field_name == r.field_name)
        });
        if !exists {
            return Ok(());
        }
        let mut client = self.client.clone();
        let reply = self.unary("DropIndex", client.drop_index(r))?;
        check("DropIndex", &c.name, Some(&reply))
    }

    fn load_collection(
        &mut self,
        c: &CollectionRef,
        r: rpc::LoadCollectionRequest,
    ) -> Result<(), TargetError> {
        if self.indexes(c)?.is_empty() {
            warn!(collection = %c.name, database = %c.db_name, waited = ?LOAD_WAITS_FOR_INDEX,
                "load skipped: the collection has no index on the target (its index was \
                 created on the source before the task started?)");
            // The wait stays recorded: later loads of it are skipped without one
            // until an index appears.
            return Ok(());
        }
        let mut client = self.client.clone();
        let reply = self.unary("LoadCollection", client.load_collection(r))?;
        check("LoadCollection", &c.name, Some(&reply))
    }

    fn load_partitions(
        &mut self,
        c: &CollectionRef,
        r: rpc::LoadPartitionsRequest,
    ) -> Result<(), TargetError> {
        if self.indexes(c)?.is_empty() {
            warn!(collection = %c.name, database = %c.db_name, partitions = ?r.partition_names,
                "load of partitions skipped: the collection has no index on the target");
            return Ok(());
        }
        // Milvus 2.3 writes no message for a new partition: the target makes it with its
        // first row, and an empty one loaded on the source is made here.
        for p in &r.partition_names {
            if !self.has_partition(c, p)? {
                self.create_partition(c, p)?;
            }
        }
        let mut client = self.client.clone();
        let reply = self.unary("LoadPartitions", client.load_partitions(r))?;
        check("LoadPartitions", &c.name, Some(&reply))
    }

    fn release_partitions(
        &mut self,
        c: &CollectionRef,
        mut r: rpc::ReleasePartitionsRequest,
    ) -> Result<(), TargetError> {
        // A partition dropped since is released with its drop.
        let mut present = Vec::new();
        for p in std::mem::take(&mut r.partition_names) {
            if self.has_partition(c, &p)? {
                present.push(p);
            }
        }
        if present.is_empty() {
            return Ok(());
        }
        r.partition_names = present;
        let mut client = self.client.clone();
        let reply = self.unary("ReleasePartitions", client.release_partitions(r))?;
        check("ReleasePartitions", &c.name, Some(&reply))
    }

    /// A create or an alter of an alias: both say "the alias names this collection", so
    /// whichever of create and alter the target takes (a replay finds it made already; a
    /// moved alias exists elsewhere).
    fn point_alias(&mut self, c: &CollectionRef, alias: String) -> Result<(), TargetError> {
        let mut client = self.client.clone();
        let created = self.unary(
            "CreateAlias",
            client.create_alias(rpc::CreateAliasRequest {
                db_name: c.db_name.clone(),
                collection_name: c.name.clone(),
                alias: alias.clone(),
                ..Default::default()
            }),
        )?;
        if check("CreateAlias", &c.name, Some(&created)).is_ok() {
            return Ok(());
        }
        let altered = self.unary(
            "AlterAlias",
            client.alter_alias(rpc::AlterAliasRequest {
                db_name: c.db_name.clone(),
                collection_name: c.name.clone(),
                alias,
                ..Default::default()
            }),
        )?;
        check("AlterAlias", &c.name, Some(&altered))
    }

    fn drop_alias(
        &mut self,
        c: &CollectionRef,
        r: rpc::DropAliasRequest,
    ) -> Result<(), TargetError> {
        let mut client = self.client.clone();
        let dropped = self.unary(
            "DropAlias",
            client.drop_alias(rpc::DropAliasRequest {
                db_name: c.db_name.clone(),
                alias: r.alias.clone(),
                ..Default::default()
            }),
        )?;
        let failed = check("DropAlias", &c.name, Some(&dropped));
        // Dropped already (a replay): the alias names no collection any more.
        let alias = CollectionRef {
            name: r.alias,
            ..c.clone()
        };
        if failed.is_err() && !self.has_collection(&alias)? {
            return Ok(());
        }
        failed
    }

    fn alter_collection(
        &mut self,
        c: &CollectionRef,
        mut r: rpc::AlterCollectionRequest,
    ) -> Result<(), TargetError> {
        // Milvus 2.3 replaces the whole set: the target's own mark stays in it.
        r.properties.retain(|p| p.key != SOURCE_ID_PROPERTY);
        r.properties.push(KeyValuePair {
            key: SOURCE_ID_PROPERTY.to_owned(),
            value: c.id.to_string(),
        });
        let mut client = self.client.clone();
        let reply = self.unary("AlterCollection", client.alter_collection(r))?;
        check("AlterCollection", &c.name, Some(&reply))
    }

    /// `db_name` is the database's name on the target (the task may map it).
    fn apply_database(
        &mut self,
        kind: ReplicatedKind,
        bytes: &[u8],
        db_name: &str,
    ) -> Result<(), TargetError> {
        let mut client = self.client.clone();
        match kind {
            ReplicatedKind::CreateDatabase => {
                let mut r: rpc::CreateDatabaseRequest = request(kind, bytes)?;
                r.base = None;
                r.db_name = db_name.to_owned();
                if self.databases()?.contains(&r.db_name) {
                    return Ok(());
                }
                let name = r.db_name.clone();
                let reply = self.unary("CreateDatabase", client.create_database(r))?;
                check("CreateDatabase", &name, Some(&reply))?;
                info!(database = %name, "database created on the target");
                Ok(())
            }
            ReplicatedKind::DropDatabase => {
                let mut r: rpc::DropDatabaseRequest = request(kind, bytes)?;
                r.base = None;
                r.db_name = db_name.to_owned();
                if !self.databases()?.contains(&r.db_name) {
                    return Ok(());
                }
                let name = r.db_name.clone();
                let reply = self.unary("DropDatabase", client.drop_database(r))?;
                if let Err(err) = check("DropDatabase", &name, Some(&reply)) {
                    return Err(match err {
                        // Collections still there; their drops are coming on their own vchannels.
                        TargetError::Permanent(reason) if reason.contains("not empty") => {
                            TargetError::Transient(reason)
                        }
                        other => other,
                    });
                }
                info!(database = %name, "database dropped on the target");
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use milvus::proto::common::Status;

    #[test]
    #[allow(deprecated)]
    fn a_collection_without_an_index_is_recognised_by_code_or_reason() {
        let legacy = Status {
            error_code: ErrorCode::IndexNotExist as i32,
            ..Default::default()
        };
        let coded = Status {
            code: 700,
            reason: "index not found[collection=c]".into(),
            ..Default::default()
        };
        assert!(no_index(Some(&legacy)) && no_index(Some(&coded)));
        assert!(!no_index(Some(&Status::default())));
        assert!(!no_index(None));
    }

    #[test]
    fn a_corrupt_stored_request_is_permanent() {
        let err =
            request::<rpc::CreateIndexRequest>(ReplicatedKind::CreateIndex, &[0xff]).unwrap_err();
        assert!(matches!(err, TargetError::Permanent(r) if r.contains("create_index")));
    }
}
