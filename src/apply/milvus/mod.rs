//! The target Milvus, reached through its public MilvusService: the target needs no special
//! mode and stays an ordinary writable cluster.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use milvus::proto::common::{ErrorCode, Status};
use milvus::proto::milvus as rpc;
use tokio::runtime::Handle;
use tracing::info;

mod access;
mod data;
mod ddl;
mod insert;
mod rename;
mod replicated;

use super::calls::Call;
use super::{Ddl, SourceCatalog, Target, TargetError};
use crate::milvus_client::{self, Client, Service};
use crate::model::{CollectionRef, DEFAULT_PARTITION, DdlEvent, Secret};

pub struct MilvusTarget {
    client: Client,
    service: Service,
    runtime: Handle,
    uri: String,
    /// What the data calls need to know of each target collection, by (database, name);
    /// forgotten when the collection is dropped.
    shapes: HashMap<(String, String), CollectionShape>,
    /// Since when a load has waited for its collection's index on the target, per collection.
    load_waits: HashMap<(String, String), std::time::Instant>,
    /// The target's name of a source collection (by id) renamed on the source: see
    /// [`rename`].
    located: HashMap<i64, String>,
    /// The password users get on the target (`rbac.user_password` of the task).
    user_password: Option<Secret>,
    /// Asked whether a collection the target does not have is still on the source.
    source: Option<Arc<dyn SourceCatalog>>,
    /// Source collections neither side has any more: their calls are passed over.
    gone: HashSet<i64>,
}

/// The parts of a target collection's schema that decide how rows are sent to it.
#[derive(Debug, Clone)]
struct CollectionShape {
    /// For delete expressions.
    primary_key: String,
    /// Milvus places rows by the key itself and refuses a partition name in Insert and Delete;
    /// the source's messages name the hashed partition (`_default_N`), which is left out.
    partition_key: bool,
    /// Partitions known to exist on the target. Milvus 2.3 writes no message when a partition
    /// is created, so a partition is created on the target before its first rows.
    partitions: HashSet<String>,
    /// The source collection this one was created from ([`SOURCE_ID_PROPERTY`]); none for a
    /// collection this appliance did not create.
    source_id: Option<i64>,
}

/// A collection property naming the source collection id the target collection was created
/// from. A name can be dropped and reused on the source while the target still has the older
/// collection (its drop waits for its own vchannels): the id tells the two apart, so a create
/// never mistakes the older one for itself, and a late drop never removes the newer one.
const SOURCE_ID_PROPERTY: &str = "milvus_cdc.source_collection_id";

fn shape_key(c: &CollectionRef) -> (String, String) {
    (c.db_name.clone(), c.name.clone())
}

impl MilvusTarget {
    /// `token` is `user:password` (or an API key), as the reference CDC's `milvus_connect_param`;
    /// `ca_file` is what an `https://` target's certificate must chain to (see [`endpoint`]).
    /// The password users the task replicates get on the target.
    pub fn with_user_password(mut self, password: Option<Secret>) -> Self {
        self.user_password = password;
        self
    }

    pub fn with_source(mut self, source: Arc<dyn SourceCatalog>) -> Self {
        self.source = Some(source);
        self
    }

    /// Whether `c`, which the target refused as not there, is gone from both sides: then its
    /// calls are moot (the source dropped it; its drop follows). Without an answer from the
    /// source, it is not: the calls wait.
    fn gone_from_both(&mut self, c: &CollectionRef) -> Result<bool, TargetError> {
        if self.gone.contains(&c.id) {
            return Ok(true);
        }
        let Some(source) = self.source.clone() else {
            return Ok(false);
        };
        if self.collection_exists(c)? {
            return Ok(false);
        }
        let live = source.is_live(c.id).map_err(TargetError::Transient)?;
        if !live {
            info!(collection = %c.name, database = %c.db_name, source_id = c.id,
                "calls passed over: the collection is on neither the source nor the target");
            self.gone.insert(c.id);
        }
        Ok(!live)
    }

    pub fn connect(
        uri: &str,
        token: Option<&str>,
        ca_file: Option<&Path>,
        runtime: Handle,
    ) -> Result<Self, TargetError> {
        let (service, client) = milvus_client::connect("target", uri, token, ca_file, &runtime)
            .map_err(TargetError::Permanent)?;
        Ok(Self {
            client,
            service,
            runtime,
            uri: uri.to_owned(),
            shapes: HashMap::new(),
            load_waits: HashMap::new(),
            located: HashMap::new(),
            user_password: None,
            source: None,
            gone: HashSet::new(),
        })
    }

    pub(super) fn has_collection(&mut self, c: &CollectionRef) -> Result<bool, TargetError> {
        let request = rpc::HasCollectionRequest {
            db_name: c.db_name.clone(),
            collection_name: c.name.clone(),
            ..Default::default()
        };
        let mut client = self.client.clone();
        let reply = self.unary("HasCollection", client.has_collection(request))?;
        check("HasCollection", &c.name, reply.status.as_ref())?;
        Ok(reply.value)
    }

    pub(super) fn has_partition(
        &mut self,
        c: &CollectionRef,
        partition: &str,
    ) -> Result<bool, TargetError> {
        let request = rpc::HasPartitionRequest {
            db_name: c.db_name.clone(),
            collection_name: c.name.clone(),
            partition_name: partition.to_owned(),
            ..Default::default()
        };
        let mut client = self.client.clone();
        let reply = self.unary("HasPartition", client.has_partition(request))?;
        check("HasPartition", &c.name, reply.status.as_ref())?;
        Ok(reply.value)
    }

    fn shape(&mut self, c: &CollectionRef) -> Result<&mut CollectionShape, TargetError> {
        let key = shape_key(c);
        if !self.shapes.contains_key(&key) {
            let shape = self.describe(c)?;
            self.shapes.insert(key.clone(), shape);
        }
        self.shapes
            .get_mut(&key)
            .ok_or_else(|| TargetError::Transient(format!("shape of {} not cached", c.name)))
    }

    fn describe(&mut self, c: &CollectionRef) -> Result<CollectionShape, TargetError> {
        let request = rpc::DescribeCollectionRequest {
            db_name: c.db_name.clone(),
            collection_name: c.name.clone(),
            ..Default::default()
        };
        let mut client = self.client.clone();
        let reply = self.unary("DescribeCollection", client.describe_collection(request))?;
        check("DescribeCollection", &c.name, reply.status.as_ref())?;
        let source_id = reply
            .properties
            .iter()
            .find(|p| p.key == SOURCE_ID_PROPERTY)
            .and_then(|p| p.value.parse().ok());
        let fields = reply.schema.map(|s| s.fields).unwrap_or_default();
        let primary_key = fields
            .iter()
            .find(|f| f.is_primary_key)
            .map(|f| f.name.clone())
            .ok_or_else(|| {
                TargetError::Permanent(format!("target collection {} has no primary key", c.name))
            })?;
        Ok(CollectionShape {
            primary_key,
            partition_key: fields.iter().any(|f| f.is_partition_key),
            partitions: HashSet::from([DEFAULT_PARTITION.to_owned()]),
            source_id,
        })
    }

    /// Whether nothing of `c` applies: it is gone from both sides, or the target's collection
    /// of this name is a later one than `c` (source ids grow: `c` was dropped on the source
    /// before that one was created).
    fn superseded(&self, c: &CollectionRef) -> bool {
        self.gone.contains(&c.id)
            || self
                .shapes
                .get(&shape_key(c))
                .and_then(|shape| shape.source_id)
                .is_some_and(|id| id > c.id)
    }

    /// Runs one unary RPC from this synchronous side.
    fn unary<R>(
        &self,
        rpc: &str,
        call: impl std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    ) -> Result<R, TargetError> {
        self.runtime
            .block_on(call)
            .map(tonic::Response::into_inner)
            .map_err(|e| self.rpc_error(rpc, e))
    }

    fn rpc_error(&self, rpc: &str, status: tonic::Status) -> TargetError {
        classify_rpc(format!("{rpc} on {}", self.uri), &status)
    }
}

/// A failed RPC as a target error. Most codes say the server is away or busy, but two of
/// them also come for a request it will never take: a message over its size limit
/// (`ResourceExhausted`) and one that does not unmarshal (`Internal`), say a bad `FieldData`.
/// Retrying those would wedge the task for ever; they are permanent, so the row is named.
/// Credentials refused, privileges missing or something not found say nothing of the row:
/// they block every call until the target is repaired.
fn classify_rpc(what: String, status: &tonic::Status) -> TargetError {
    use tonic::Code::*;
    let message = status.message();
    let reason = format!("{what}: {message}");
    let never_taken = message.contains("larger than max") || message.contains("unmarshal");
    match status.code() {
        ResourceExhausted | Internal if never_taken => TargetError::Permanent(reason),
        Unauthenticated | PermissionDenied | NotFound => TargetError::Blocked(reason),
        Unavailable | DeadlineExceeded | ResourceExhausted | Aborted | Unknown | Cancelled
        | Internal => TargetError::Transient(reason),
        _ => TargetError::Permanent(reason),
    }
}

/// Milvus's answers (`code`, 2.3's merr codes) that the target refuses every call of the task,
/// whatever its rows: a collection (100), partition (200) or database (800) it does not have,
/// credentials it does not take or privileges the user lacks (1400 to 1402), or writes denied
/// by its administrator (9: its write fence, as a switchover sets on the old primary until its
/// reverse task takes over).
const BLOCKING_CODES: [i32; 7] = [9, 100, 200, 800, 1400, 1401, 1402];

/// The same in the `error_code` Milvus 2.3 fills in as well, and its quotas exhausted.
#[allow(deprecated)]
const BLOCKING_ERROR_CODES: [ErrorCode; 6] = [
    ErrorCode::PermissionDenied,
    ErrorCode::CollectionNotExists,
    ErrorCode::CollectionNameNotFound,
    ErrorCode::ForceDeny,
    ErrorCode::DiskQuotaExhausted,
    ErrorCode::MemoryQuotaExhausted,
];

/// Milvus answers most failures inside a successful RPC, in `status`.
// `error_code` is deprecated upstream but it is what Milvus 2.3 fills in.
#[allow(deprecated)]
fn check(rpc: &str, collection: &str, status: Option<&Status>) -> Result<(), TargetError> {
    let Some(status) = status.filter(|s| !milvus_client::succeeded(s)) else {
        return Ok(());
    };
    let reason = format!(
        "{rpc} of {collection}: {} (code {})",
        status.reason, status.code
    );
    let transient = status.retriable
        || [
            ErrorCode::RateLimit as i32,
            ErrorCode::NotReadyServe as i32,
            ErrorCode::NotReadyCoordActivating as i32,
        ]
        .contains(&status.error_code);
    let blocked = BLOCKING_CODES.contains(&status.code)
        || BLOCKING_ERROR_CODES
            .iter()
            .any(|code| *code as i32 == status.error_code);
    Err(if transient {
        TargetError::Transient(reason)
    } else if blocked {
        TargetError::Blocked(reason)
    } else {
        TargetError::Permanent(reason)
    })
}

impl MilvusTarget {
    /// Forgets what is known of `c` on the target after it refused a call as
    /// [`TargetError::Blocked`]: whatever repairs the target (the collection made again, or
    /// moved back) is found afresh when the call is retried.
    fn forget(&mut self, c: &CollectionRef) {
        self.shapes.remove(&shape_key(c));
        self.located.remove(&c.id);
    }
}

impl Target for MilvusTarget {
    fn apply_data(&mut self, lanes: &[Vec<Call>], replay: bool) -> Result<(), TargetError> {
        let sent = self
            .addressed_calls(lanes)
            .and_then(|calls| self.send_data(&calls, replay));
        if let Err(TargetError::Blocked(_)) = &sent {
            for call in lanes.iter().flatten() {
                self.forget(call.collection());
            }
        }
        sent
    }

    fn not_ready(&mut self, ddl: &Ddl) -> Result<Option<String>, TargetError> {
        match &ddl.event {
            DdlEvent::Replicated { kind, .. } => self.replicated_not_ready(ddl, *kind),
            DdlEvent::CreateCollection { .. } => {
                self.earlier_collection_of_the_name(&ddl.collection)
            }
            _ => Ok(None),
        }
    }

    fn apply_ddl(&mut self, ddl: &Ddl) -> Result<(), TargetError> {
        let applied = self.apply_addressed_ddl(ddl);
        if let Err(TargetError::Blocked(_)) = &applied {
            self.forget(&ddl.collection);
        }
        applied
    }
}

impl MilvusTarget {
    /// [`Target::apply_ddl`], addressed to the collection's name on the target.
    fn apply_addressed_ddl(&mut self, ddl: &Ddl) -> Result<(), TargetError> {
        let ddl = &*self.addressed_ddl(ddl)?;
        if self.superseded_event(ddl)? {
            return Ok(());
        }
        let c = &ddl.collection;
        match &ddl.event {
            DdlEvent::CreateCollection {
                schema,
                shards_num,
                consistency_level,
            } => self.create_collection(c, schema, *shards_num, *consistency_level),
            DdlEvent::DropCollection => self.drop_collection(c),
            DdlEvent::CreatePartition { partition } => self.create_partition(c, partition),
            DdlEvent::DropPartition { partition } => self.drop_partition(c, partition),
            DdlEvent::Replicated { kind, request, .. } => {
                self.apply_replicated(ddl, *kind, request)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_the_target_will_never_take_is_permanent_and_a_busy_target_transient() {
        use tonic::{Code, Status as Rpc};
        let classify =
            |code, message: &str| classify_rpc("Insert".into(), &Rpc::new(code, message));
        let permanent = |e: TargetError| matches!(e, TargetError::Permanent(_));
        assert!(permanent(classify(
            Code::ResourceExhausted,
            "grpc: received message larger than max (70000000 vs. 67108864)"
        )));
        assert!(permanent(classify(
            Code::Internal,
            "grpc: error unmarshalling request: proto: cannot parse invalid wire-format data"
        )));
        assert!(!permanent(classify(
            Code::ResourceExhausted,
            "rate limit exceeded"
        )));
        assert!(!permanent(classify(
            Code::Unavailable,
            "connection refused"
        )));
        assert!(!permanent(classify(Code::Internal, "h2 protocol error")));
        assert!(permanent(classify(Code::InvalidArgument, "bad request")));
    }

    #[test]
    fn credentials_privileges_and_what_is_not_found_block_every_call_and_refuse_no_row() {
        use tonic::{Code, Status as Rpc};
        let classify =
            |code, message: &str| classify_rpc("Insert".into(), &Rpc::new(code, message));
        let blocked = |e: TargetError| matches!(e, TargetError::Blocked(_));
        assert!(blocked(classify(
            Code::Unauthenticated,
            "auth check failure, please check username and password are correct"
        )));
        assert!(blocked(classify(
            Code::PermissionDenied,
            "PrivilegeInsert: permission deny"
        )));
        assert!(blocked(classify(Code::NotFound, "no such database")));
    }

    #[test]
    #[allow(deprecated)]
    fn milvus_statuses_of_a_collection_database_privilege_or_write_fence_block() {
        // As the testbed's Milvus 2.3.5 answers an insert into a database or collection it
        // does not have, and a listing of a database it does not have.
        let collection_gone = Status {
            error_code: ErrorCode::CollectionNotExists as i32,
            code: 100,
            reason: "collection not found[database=d][collection=c]".into(),
            ..Default::default()
        };
        let database_gone = Status {
            error_code: ErrorCode::UnexpectedError as i32,
            code: 800,
            reason: "database not found[database=d]".into(),
            ..Default::default()
        };
        let not_permitted = Status {
            error_code: ErrorCode::PermissionDenied as i32,
            reason: "permission deny".into(),
            ..Default::default()
        };
        // A target whose writes are fenced (a switchover's old primary, a moment longer).
        let fenced = Status {
            error_code: ErrorCode::ForceDeny as i32,
            code: 9,
            reason: "quota exceeded[reason=the writing has been deactivated by the administrator]"
                .into(),
            ..Default::default()
        };
        for status in [collection_gone, database_gone, not_permitted, fenced] {
            assert!(
                matches!(check("Insert", "c", Some(&status)), Err(TargetError::Blocked(r)) if r.contains(&status.reason)),
                "{status:?}"
            );
        }
    }

    #[test]
    #[allow(deprecated)]
    fn statuses_are_classified() {
        let ok = Status::default();
        assert_eq!(check("X", "c", Some(&ok)), Ok(()));
        let limited = Status {
            error_code: ErrorCode::RateLimit as i32,
            reason: "slow down".into(),
            ..Default::default()
        };
        assert!(matches!(
            check("X", "c", Some(&limited)),
            Err(TargetError::Transient(_))
        ));
        let bad = Status {
            error_code: ErrorCode::IllegalArgument as i32,
            code: 1100,
            reason: "schema mismatch".into(),
            ..Default::default()
        };
        assert!(
            matches!(check("X", "c", Some(&bad)), Err(TargetError::Permanent(r)) if r.contains("schema mismatch"))
        );
    }
}
