//! The changes a task replicates, as the reader decodes them and the applier sends them.
//!
//! These types are also what a journal row stores (`journal::record` encodes them with bincode,
//! tagging variants by index): append variants, never reorder them; changing a variant's fields
//! needs a new stored version (`schema/README.md`).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::channel::vchannel_pchannel;

/// A source collection as the target sees it: the id selects (names are reused after a drop),
/// the database and name address the target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CollectionRef {
    pub id: i64,
    pub db_name: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PrimaryKeys {
    Int64(Vec<i64>),
    VarChar(Vec<String>),
}

impl PrimaryKeys {
    pub fn len(&self) -> usize {
        match self {
            PrimaryKeys::Int64(keys) => keys.len(),
            PrimaryKeys::VarChar(keys) => keys.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys' size: 8 bytes per integer, the UTF-8 length of a string.
    pub fn bytes(&self) -> u64 {
        match self {
            PrimaryKeys::Int64(keys) => 8 * keys.len() as u64,
            PrimaryKeys::VarChar(keys) => keys.iter().map(|k| k.len() as u64).sum(),
        }
    }
}

/// The partition every collection has, which no partition event creates or drops.
pub const DEFAULT_PARTITION: &str = "_default";

/// Rows inserted by one source Insert message. The columns stay in Milvus's own encoding
/// (`schema.FieldData`, protobuf) so they pass to the target's Insert without conversion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InsertBatch {
    pub collection: CollectionRef,
    pub partition: String,
    pub num_rows: u64,
    pub fields_data: Vec<EncodedColumn>,
}

/// One column of an insert: a `schema.FieldData`, protobuf-encoded as the source wrote it.
/// Stored as one byte string (bincode: length, then the bytes), not as a sequence of numbers.
/// Cloning it shares the bytes: the target calls made of a row refer to them, not copy them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedColumn(pub Bytes);

impl From<Vec<u8>> for EncodedColumn {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes.into())
    }
}

pub fn columns_bytes(columns: &[EncodedColumn]) -> u64 {
    columns.iter().map(|c| c.0.len() as u64).sum()
}

/// What a change does to the target, as metrics and logs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Insert,
    Delete,
    CreateCollection,
    DropCollection,
    CreatePartition,
    DropPartition,
    CreateIndex,
    DropIndex,
    Load,
    Release,
    Flush,
    CreateDatabase,
    DropDatabase,
    LoadPartitions,
    ReleasePartitions,
    CreateAlias,
    AlterAlias,
    DropAlias,
    AlterCollection,
    RenameCollection,
    CreateRole,
    DropRole,
    OperateUserRole,
    OperatePrivilege,
    CreateUser,
    DropUser,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Insert => "insert",
            Operation::Delete => "delete",
            Operation::CreateCollection => "create_collection",
            Operation::DropCollection => "drop_collection",
            Operation::CreatePartition => "create_partition",
            Operation::DropPartition => "drop_partition",
            Operation::CreateIndex => "create_index",
            Operation::DropIndex => "drop_index",
            Operation::Load => "load",
            Operation::Release => "release",
            Operation::Flush => "flush",
            Operation::CreateDatabase => "create_database",
            Operation::DropDatabase => "drop_database",
            Operation::LoadPartitions => "load_partitions",
            Operation::ReleasePartitions => "release_partitions",
            Operation::CreateAlias => "create_alias",
            Operation::AlterAlias => "alter_alias",
            Operation::DropAlias => "drop_alias",
            Operation::AlterCollection => "alter_collection",
            Operation::RenameCollection => "rename_collection",
            Operation::CreateRole => "create_role",
            Operation::DropRole => "drop_role",
            Operation::OperateUserRole => "operate_user_role",
            Operation::OperatePrivilege => "operate_privilege",
            Operation::CreateUser => "create_user",
            Operation::DropUser => "drop_user",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeleteBatch {
    pub collection: CollectionRef,
    /// Empty: every partition.
    pub partition: String,
    pub keys: PrimaryKeys,
}

/// A DDL event is staged on every vchannel of its collection that the reader sees it on; the
/// applier applies it once, when every vchannel in `barrier` has reached it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ddl {
    pub collection: CollectionRef,
    pub barrier: Vec<String>,
    pub event: DdlEvent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DdlEvent {
    CreateCollection {
        /// `schema.CollectionSchema`, protobuf, user fields only.
        schema: Vec<u8>,
        shards_num: i32,
        consistency_level: i32,
    },
    DropCollection,
    CreatePartition {
        partition: String,
    },
    DropPartition {
        partition: String,
    },
    /// An operation the source writes to its `{prefix}-replicate-msg` topic. It is staged on
    /// the replicate channel (`Ddl.barrier` is that channel alone) and applied once every vchannel
    /// of `waits_for` has been applied through its timestamp.
    Replicated {
        kind: ReplicatedKind,
        /// The public `milvus.*Request` protobuf of `kind`, as the source wrote it.
        #[serde(with = "serde_bytes")]
        request: Vec<u8>,
        /// The collection's vchannels on the source; empty for database events.
        waits_for: Vec<String>,
    },
}

/// Which public request a [`DdlEvent::Replicated`] carries. Stored by index: append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReplicatedKind {
    CreateIndex,
    DropIndex,
    Load,
    Release,
    Flush,
    CreateDatabase,
    DropDatabase,
    // Read from the source's etcd (the metadata channel): Milvus 2.3 writes them to no topic.
    LoadPartitions,
    ReleasePartitions,
    CreateAlias,
    AlterAlias,
    DropAlias,
    /// Sets the collection's properties (TTL, mmap, ...).
    AlterCollection,
    RenameCollection,
    // Access control, for a task that opts in: on no collection, like the database events.
    CreateRole,
    DropRole,
    /// Binds a user to a role, or unbinds it (the request's `type`).
    OperateUserRole,
    /// Grants a privilege to a role, or revokes it (the request's `type`).
    OperatePrivilege,
    /// A user, made with the task's `rbac.user_password`: the source's is a hash. The stored
    /// request carries no password.
    CreateUser,
    DropUser,
}

impl ReplicatedKind {
    pub fn operation(self) -> Operation {
        match self {
            ReplicatedKind::CreateIndex => Operation::CreateIndex,
            ReplicatedKind::DropIndex => Operation::DropIndex,
            ReplicatedKind::Load => Operation::Load,
            ReplicatedKind::Release => Operation::Release,
            ReplicatedKind::Flush => Operation::Flush,
            ReplicatedKind::CreateDatabase => Operation::CreateDatabase,
            ReplicatedKind::DropDatabase => Operation::DropDatabase,
            ReplicatedKind::LoadPartitions => Operation::LoadPartitions,
            ReplicatedKind::ReleasePartitions => Operation::ReleasePartitions,
            ReplicatedKind::CreateAlias => Operation::CreateAlias,
            ReplicatedKind::AlterAlias => Operation::AlterAlias,
            ReplicatedKind::DropAlias => Operation::DropAlias,
            ReplicatedKind::AlterCollection => Operation::AlterCollection,
            ReplicatedKind::RenameCollection => Operation::RenameCollection,
            ReplicatedKind::CreateRole => Operation::CreateRole,
            ReplicatedKind::DropRole => Operation::DropRole,
            ReplicatedKind::OperateUserRole => Operation::OperateUserRole,
            ReplicatedKind::OperatePrivilege => Operation::OperatePrivilege,
            ReplicatedKind::CreateUser => Operation::CreateUser,
            ReplicatedKind::DropUser => Operation::DropUser,
        }
    }

    /// True for events on a database rather than on one collection.
    pub fn is_database(self) -> bool {
        matches!(
            self,
            ReplicatedKind::CreateDatabase | ReplicatedKind::DropDatabase
        )
    }

    /// True for access-control events, which act on no collection or database.
    pub fn is_access_control(self) -> bool {
        matches!(
            self,
            ReplicatedKind::CreateRole
                | ReplicatedKind::DropRole
                | ReplicatedKind::OperateUserRole
                | ReplicatedKind::OperatePrivilege
                | ReplicatedKind::CreateUser
                | ReplicatedKind::DropUser
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Change {
    Insert(InsertBatch),
    Delete(DeleteBatch),
    Ddl(Ddl),
}

impl Change {
    pub fn collection(&self) -> &CollectionRef {
        match self {
            Change::Insert(b) => &b.collection,
            Change::Delete(b) => &b.collection,
            Change::Ddl(d) => &d.collection,
        }
    }

    pub fn operation(&self) -> Operation {
        match self {
            Change::Insert(_) => Operation::Insert,
            Change::Delete(_) => Operation::Delete,
            Change::Ddl(ddl) => match ddl.event {
                DdlEvent::CreateCollection { .. } => Operation::CreateCollection,
                DdlEvent::DropCollection => Operation::DropCollection,
                DdlEvent::CreatePartition { .. } => Operation::CreatePartition,
                DdlEvent::DropPartition { .. } => Operation::DropPartition,
                DdlEvent::Replicated { kind, .. } => kind.operation(),
            },
        }
    }

    /// Rows inserted or deleted; none for DDL.
    pub fn rows(&self) -> u64 {
        match self {
            Change::Insert(b) => b.num_rows,
            Change::Delete(b) => b.keys.len() as u64,
            Change::Ddl(_) => 0,
        }
    }

    /// Bytes of row data: encoded columns, or primary keys; none for DDL.
    pub fn bytes(&self) -> u64 {
        match self {
            Change::Insert(b) => columns_bytes(&b.fields_data),
            Change::Delete(b) => b.keys.bytes(),
            Change::Ddl(_) => 0,
        }
    }

    /// Order among changes of equal timestamp on one vchannel. An upsert reaches the MQ as an
    /// Insert and a Delete of the same keys with the same timestamp, Insert first; the Delete
    /// must be applied first or the new rows would be deleted.
    pub fn rank_within_timestamp(&self) -> u8 {
        match self {
            Change::Ddl(_) => 0,
            Change::Delete(_) => 1,
            Change::Insert(_) => 2,
        }
    }
}

/// A change as the reader hands it to the journal: on one vchannel, at one source timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct StagedChange {
    pub vchannel: String,
    pub ts: u64,
    pub change: Change,
}

impl StagedChange {
    /// A collection event as staged from one physical channel: a copy on each vchannel of the
    /// collection that lives on `pchannel`, each listing all of `vchannels` as its barrier, so
    /// the applier applies it once, when every vchannel has reached it.
    pub fn ddl_copies(
        collection: &CollectionRef,
        vchannels: &[String],
        pchannel: &str,
        ts: u64,
        event: &DdlEvent,
    ) -> Vec<StagedChange> {
        vchannels
            .iter()
            .filter(|v| vchannel_pchannel(v) == Some(pchannel))
            .map(|v| StagedChange {
                vchannel: v.clone(),
                ts,
                change: Change::Ddl(Ddl {
                    collection: collection.clone(),
                    barrier: vchannels.to_vec(),
                    event: event.clone(),
                }),
            })
            .collect()
    }

    /// An operation read from the replicate channel: staged once, on that channel, and applied
    /// once every vchannel of `waits_for` has been applied through `ts`.
    pub fn replicated(
        channel: &str,
        ts: u64,
        collection: CollectionRef,
        kind: ReplicatedKind,
        request: Vec<u8>,
        waits_for: Vec<String>,
    ) -> StagedChange {
        StagedChange {
            vchannel: channel.to_owned(),
            ts,
            change: Change::Ddl(Ddl {
                collection,
                barrier: vec![channel.to_owned()],
                event: DdlEvent::Replicated {
                    kind,
                    request,
                    waits_for,
                },
            }),
        }
    }
}
