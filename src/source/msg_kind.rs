//! What a Milvus message type the decoder does not turn into a change means for replication:
//! nothing the target needs (passed over, counted and logged once per type), or rows or DDL
//! that would be lost (a poison: the task stops on it).
//!
//! The list is Milvus's `common.MsgType`. A type is passed over only when it carries no rows and
//! no state of a collection, or when that state reaches the target another way (aliases,
//! collection properties, renames, partition loads and access control are read from the
//! source's etcd by the metadata watcher). Anything not named here as harmless is a poison, so
//! a type added to Milvus later is never dropped unasked.

use milvus::proto::common::MsgType;

/// A message type the decoder reads no change from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unhandled {
    /// Carries nothing the target needs: passed over.
    Harmless,
    /// Carries rows, or DDL the target would miss: never passed over unasked.
    CarriesData,
}

/// How a type the decoder does not handle is treated.
pub fn unhandled(msg_type: MsgType) -> Unhandled {
    use MsgType::*;
    match msg_type {
        // Reads and listings: they change nothing.
        HasCollection
        | DescribeCollection
        | ShowCollections
        | GetSystemConfigs
        | DescribeAlias
        | ListAliases
        | HasPartition
        | DescribePartition
        | ShowPartitions
        | ShowSegments
        | DescribeSegment
        | DescribeSegments
        | FederListIndexedSegment
        | FederDescribeSegmentIndexData
        | DescribeIndex
        | GetIndexStatistics
        | Search
        | SearchResult
        | GetIndexState
        | GetIndexBuildProgress
        | GetCollectionStatistics
        | GetPartitionStatistics
        | Retrieve
        | RetrieveResult
        | GetShardLeaders
        | GetReplicas
        | GetDistribution
        | RunAnalyzer
        | SegmentInfo
        | SystemInfo
        | GetRecoveryInfo
        | GetSegmentState
        | GetCredential
        | ListCredUsernames
        | SelectRole
        | SelectUser
        | SelectResource
        | SelectGrant
        | ListPolicy
        | ListPrivilegeGroups
        | ListResourceGroups
        | DescribeResourceGroup
        | ListDatabases
        | DescribeDatabase
        | ListClientInfos
        | ListSnapshots
        | DescribeSnapshot
        | GetRestoreSnapshotState
        | ListRestoreSnapshotJobs
        | GetExportSnapshotState
        | GetRefreshExternalCollectionProgress
        | ListRefreshExternalCollectionJobs
        | ListRowPolicies
        | GetRlsPrincipalTags
        | ListRlsPrincipals => Unhandled::Harmless,
        // The cluster's own bookkeeping: segments, channels, nodes, clocks and ids. The target
        // keeps its own.
        LoadSegments
        | ReleaseSegments
        | HandoffSegments
        | LoadBalanceSegments
        | ResendSegmentStats
        | ManualFlush
        | FlushSegment
        | CreateSegment
        | FlushAll
        | WatchDmChannels
        | RemoveDmChannels
        | WatchQueryChannels
        | RemoveQueryChannels
        | SealedSegmentsChangeInfo
        | WatchDeltaChannels
        | UnsubDmChannel
        | SyncDistribution
        | QueryNodeStats
        | LoadIndex
        | RequestId
        | RequestTso
        | AllocateSegment
        | SegmentStatistics
        | SegmentFlushDone
        | DataNodeTt
        | Connect
        | AllocTimestamp
        | RefreshPolicyInfoCache
        | CreateResourceGroup
        | DropResourceGroup
        | TransferNode
        | TransferReplica
        | UpdateResourceGroups
        | PinSnapshotData
        | UnpinSnapshotData => Unhandled::Harmless,
        // Replicated from the source's etcd by the metadata watcher, not from messages.
        CreateAlias
        | DropAlias
        | AlterAlias
        | AlterCollection
        | RenameCollection
        | LoadPartitions
        | ReleasePartitions
        | CreateCredential
        | DeleteCredential
        | UpdateCredential
        | CreateRole
        | DropRole
        | OperateUserRole
        | OperatePrivilege
        | CreatePrivilegeGroup
        | DropPrivilegeGroup
        | OperatePrivilegeGroup
        | OperatePrivilegeV2
        | AlterRole => Unhandled::Harmless,
        // Rows (Upsert, Import, Replicate, a restore), a schema or a collection's data changed
        // (fields, functions, truncation, shards), and everything else.
        _ => Unhandled::CarriesData,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_that_carry_rows_or_schema_changes_are_never_passed_over() {
        for t in [
            MsgType::Upsert,
            MsgType::Import,
            MsgType::Replicate,
            MsgType::TruncateCollection,
            MsgType::AlterCollectionField,
            MsgType::AddCollectionField,
            MsgType::AlterCollectionSchema,
            MsgType::AddCollectionFunction,
            MsgType::RestoreSnapshot,
            MsgType::AlterDatabase,
            MsgType::AlterIndex,
            MsgType::SplitShard,
        ] {
            assert_eq!(unhandled(t), Unhandled::CarriesData, "{t:?}");
        }
    }

    #[test]
    fn reads_bookkeeping_and_what_the_metadata_watcher_replicates_are_passed_over() {
        for t in [
            MsgType::ShowCollections,
            MsgType::Search,
            MsgType::DataNodeTt,
            MsgType::FlushSegment,
            MsgType::ResendSegmentStats,
            MsgType::CreateAlias,
            MsgType::RenameCollection,
            MsgType::LoadPartitions,
            MsgType::CreateRole,
        ] {
            assert_eq!(unhandled(t), Unhandled::Harmless, "{t:?}");
        }
    }
}
