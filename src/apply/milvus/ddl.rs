//! Collection and partition events, one function per kind, each idempotent: a replayed event
//! leaves the target as one application would. (Events of the replicate channel are in
//! [`super::replicated`].)

use milvus::proto::common::KeyValuePair;
use milvus::proto::milvus as rpc;
use milvus::proto::schema::CollectionSchema;
use prost::Message;
use tracing::info;

use super::{MilvusTarget, SOURCE_ID_PROPERTY, check, shape_key};
use crate::apply::{Ddl, TargetError};
use crate::model::CollectionRef;

impl MilvusTarget {
    /// Whether `ddl` is a collection event of an earlier collection than the target's
    /// collection of that name (see [`MilvusTarget::superseded`]): it is skipped, so a late
    /// event never touches the later collection. That holds for events of the replicate
    /// channel too (an index or load of a collection whose later namesake reached the target
    /// first, its own create skipped): capture gives them the id of the collection of their
    /// time. Database events, which have no collection id, are not checked.
    pub(super) fn superseded_event(&mut self, ddl: &Ddl) -> Result<bool, TargetError> {
        let c = &ddl.collection;
        if c.id != 0 {
            self.shapes.remove(&shape_key(c));
            if self.has_collection(c)? {
                self.shape(c)?;
                if self.superseded(c) {
                    info!(collection = %c.name, source_id = c.id,
                        "DDL skipped: the target's collection of that name is a later one");
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Creates the collection with the source's schema (ids kept, see below) and its source id
    /// as a property ([`SOURCE_ID_PROPERTY`]).
    // `CollectionSchema::auto_id` is deprecated upstream; 2.3 still reads it.
    #[allow(deprecated)]
    pub(super) fn create_collection(
        &mut self,
        c: &CollectionRef,
        schema: &[u8],
        shards_num: i32,
        consistency_level: i32,
    ) -> Result<(), TargetError> {
        // This very collection (a replay), or one made without us: keep it. An earlier
        // one of the same name makes the create wait (`not_ready`).
        if self.has_collection(c)? {
            return Ok(());
        }
        self.ensure_database(&c.db_name)?;
        let mut schema = CollectionSchema::decode(schema).map_err(|e| {
            TargetError::Permanent(format!("schema of {} does not decode: {e}", c.name))
        })?;
        // `$meta` holds a dynamic-field collection's extra keys; the target adds it
        // itself (`enable_dynamic_field`) and refuses it given explicitly.
        schema.fields.retain(|f| !f.is_dynamic);
        // The target keeps the source's ids, so deletes by primary key still match.
        for field in &mut schema.fields {
            field.auto_id = false;
        }
        schema.auto_id = false;
        schema.name = c.name.clone();
        let request = rpc::CreateCollectionRequest {
            db_name: c.db_name.clone(),
            collection_name: c.name.clone(),
            schema: schema.encode_to_vec(),
            shards_num,
            consistency_level,
            properties: vec![KeyValuePair {
                key: SOURCE_ID_PROPERTY.to_owned(),
                value: c.id.to_string(),
            }],
            ..Default::default()
        };
        let mut client = self.client.clone();
        let reply = self.unary("CreateCollection", client.create_collection(request))?;
        let created = check("CreateCollection", &c.name, Some(&reply));
        // Refused because it exists now: made meanwhile from the same source
        // collection (another appliance on the same target), it is the one wanted.
        if created.is_err() && self.has_collection(c)? {
            self.shapes.remove(&shape_key(c));
            if self.shape(c)?.source_id == Some(c.id) {
                return Ok(());
            }
        }
        created
    }

    /// Drops the collection, unless the target's collection of that name is another one.
    pub(super) fn drop_collection(&mut self, c: &CollectionRef) -> Result<(), TargetError> {
        self.shapes.remove(&shape_key(c));
        if !self.has_collection(c)? {
            return Ok(());
        }
        if let Some(id) = self.shape(c)?.source_id.filter(|id| *id != c.id) {
            info!(collection = %c.name, dropped = c.id, kept = id,
                "drop skipped: the target's collection of that name is a newer one");
            return Ok(());
        }
        self.shapes.remove(&shape_key(c));
        let request = rpc::DropCollectionRequest {
            db_name: c.db_name.clone(),
            collection_name: c.name.clone(),
            ..Default::default()
        };
        let mut client = self.client.clone();
        let reply = self.unary("DropCollection", client.drop_collection(request))?;
        check("DropCollection", &c.name, Some(&reply))
    }

    pub(super) fn create_partition(
        &mut self,
        c: &CollectionRef,
        partition: &str,
    ) -> Result<(), TargetError> {
        // A partition-key collection's partitions are made by the target itself.
        if self.shape(c)?.partition_key || self.has_partition(c, partition)? {
            return Ok(());
        }
        let request = rpc::CreatePartitionRequest {
            db_name: c.db_name.clone(),
            collection_name: c.name.clone(),
            partition_name: partition.to_owned(),
            ..Default::default()
        };
        let mut client = self.client.clone();
        let reply = self.unary("CreatePartition", client.create_partition(request))?;
        check("CreatePartition", &c.name, Some(&reply))
    }

    pub(super) fn drop_partition(
        &mut self,
        c: &CollectionRef,
        partition: &str,
    ) -> Result<(), TargetError> {
        if let Some(shape) = self.shapes.get_mut(&shape_key(c)) {
            shape.partitions.remove(partition);
        }
        if !self.has_collection(c)? || !self.has_partition(c, partition)? {
            return Ok(());
        }
        // Milvus refuses to drop a loaded partition. The source released it before its
        // drop, but 2.3 writes no message for that: release it here (a no-op when not
        // loaded).
        let request = rpc::ReleasePartitionsRequest {
            db_name: c.db_name.clone(),
            collection_name: c.name.clone(),
            partition_names: vec![partition.to_owned()],
            ..Default::default()
        };
        let mut client = self.client.clone();
        let reply = self.unary("ReleasePartitions", client.release_partitions(request))?;
        check("ReleasePartitions", &c.name, Some(&reply))?;
        let request = rpc::DropPartitionRequest {
            db_name: c.db_name.clone(),
            collection_name: c.name.clone(),
            partition_name: partition.to_owned(),
            ..Default::default()
        };
        let reply = self.unary("DropPartition", client.drop_partition(request))?;
        check("DropPartition", &c.name, Some(&reply))
    }

    /// Creates the collection's database on the target when it lacks it: a collection of a
    /// non-default database cannot be created before its database.
    fn ensure_database(&mut self, db_name: &str) -> Result<(), TargetError> {
        if db_name.is_empty() || db_name == "default" {
            return Ok(());
        }
        if self.databases()?.iter().any(|name| name == db_name) {
            return Ok(());
        }
        let mut client = self.client.clone();
        let request = rpc::CreateDatabaseRequest {
            db_name: db_name.to_owned(),
            ..Default::default()
        };
        let reply = self.unary("CreateDatabase", client.create_database(request))?;
        check("CreateDatabase", db_name, Some(&reply))?;
        info!(database = db_name, "database created on the target");
        Ok(())
    }

    /// A create of `c` waits while the target holds an older collection of that name (its drop
    /// travels on other vchannels and is still to be applied).
    pub(super) fn earlier_collection_of_the_name(
        &mut self,
        c: &CollectionRef,
    ) -> Result<Option<String>, TargetError> {
        self.shapes.remove(&shape_key(c));
        if !self.has_collection(c)? {
            return Ok(None);
        }
        // Source ids grow: a smaller one on the target is an earlier collection of the name.
        // A larger one is a later one, applied first because its channels were ready first:
        // this collection was dropped before it existed, and is skipped (`superseded`).
        Ok(match self.shape(c)?.source_id {
            Some(id) if id < c.id => Some(format!(
                "the target still has the earlier collection {} (source id {id}); its drop \
                 comes before the creation of source id {}",
                c.name, c.id
            )),
            _ => None,
        })
    }
}
