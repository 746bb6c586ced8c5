//! What the source's metadata is assembled into: plain values, detached from etcd.

use milvus::proto::schema::CollectionSchema;

use crate::model::CollectionRef;

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

impl CollectionMeta {
    /// The collection as changes and the journal name it.
    pub fn reference(&self) -> CollectionRef {
        CollectionRef {
            id: self.id,
            db_name: self.db_name.clone(),
            name: self.name.clone(),
        }
    }
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

#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseMeta {
    pub id: i64,
    pub name: String,
}
