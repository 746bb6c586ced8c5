//! The source Milvus's metadata, read from its etcd: databases, collections with their fields
//! and partitions, aliases, indexes and load state. Nothing here writes to etcd.
//!
//! Milvus 2.3 splits a collection over several keys under `{root}/meta/root-coord/`:
//! `database/collection-info/{db}/{coll}` (or, for collections of old versions,
//! `collection/{coll}`), `fields/{coll}/{field}`, `partitions/{coll}/{part}`, and
//! `database/db-info/{db}`; aliases sit under `database/aliases/{db}/{alias}`, indexes under
//! `{root}/meta/field-index/{coll}/` and load state under
//! `{root}/meta/querycoord-collection-loadinfo/{coll}`.
//!
//! Layout: [`SourceMeta`] (here) only fetches raw key/values; `keys.rs` says which key is
//! what; `assemble.rs` turns key/values into [`CollectionMeta`]s and the other values of
//! `types.rs` with plain functions, so the decoding is tested without etcd.
//!
//! Invariants:
//! - Every lookup of [`SourceMeta`] reads at one etcd revision (the one of its first reply),
//!   page by page, so a collection is never seen half-created or half-dropped across its keys.
//! - A value equal to [`TOMBSTONE`] is a deleted one: it counts as absent, whatever its key.
//! - States: a collection is live in state created; one being dropped is kept only where
//!   [`Wanted::LiveOrDropping`] asks for it (a lookup by id, so a message of a dropped
//!   collection is still captured). Partitions count in state created, databases in state
//!   unknown or created, aliases in state created.
//! - The default database (id [`DEFAULT_DB_ID`], named [`crate::model::DEFAULT_DB`]) always
//!   exists, and db id 0 (collections older than databases) means it.
//! - System fields (ids below [`FIRST_USER_FIELD_ID`]) are left out; fields and partitions are
//!   read from their own keys, or from the collection-info where old versions kept them.
//!
//! Failures are [`MetaError`]s and nothing here retries: the caller decides.
//! [`SourceMeta::connect`] makes one read, so a wrong address fails at once. A malformed key in
//! one of the namespaces read, a value that does not decode, or a collection that contradicts
//! itself or names a database without live db-info is an error, never skipped, since skipping
//! would silently lose metadata; only [`find_named`] passes over damaged values, so one broken
//! collection cannot hide another of the name asked for.

mod assemble;
mod fence;
mod history;
mod keys;
mod lookup;
mod named;
mod types;
pub mod version;

pub use assemble::{
    Assembled, DEFAULT_DB_ID, FIRST_USER_FIELD_ID, Wanted, assemble, assemble_wanted, find_named,
    live_indexes, loaded_replicas,
};
pub use keys::{MetaKey, TOMBSTONE, is_tombstone, meta_root, parse_key};
pub use lookup::EtcdLookup;
pub use types::{CollectionMeta, DatabaseMeta, IndexMeta, PartitionMeta};

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, TlsOptions, Txn, TxnOp, TxnOpResponse,
};

use crate::model::{CaFile, parse_id};

/// etcd errors are boxed: `etcd_client::Error` is large and would bloat every `Result` here.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("cannot connect to etcd {endpoints:?}: {source}")]
    Connect {
        endpoints: Vec<String>,
        source: Box<etcd_client::Error>,
    },
    #[error("cannot read etcd range [{start:?}, {end:?}): {source}")]
    Read {
        start: String,
        end: String,
        source: Box<etcd_client::Error>,
    },
    #[error("cannot read or write etcd key {key:?}: {source}")]
    Key {
        key: String,
        source: Box<etcd_client::Error>,
    },
    #[error("malformed Milvus meta key {key:?}: {reason}")]
    BadKey { key: String, reason: String },
    #[error("cannot decode {what} at etcd key {key:?}: {source}")]
    Decode {
        key: String,
        what: &'static str,
        source: prost::DecodeError,
    },
    #[error("inconsistent metadata for collection {collection_id}: {reason}")]
    Inconsistent { collection_id: i64, reason: String },
    #[error("collection {collection_id} is in database {db_id}, which has no live db-info")]
    UnknownDatabase { collection_id: i64, db_id: i64 },
    #[error("etcd: {0}")]
    Ca(#[from] crate::model::CaFileError),
}

impl MetaError {
    /// Whether etcd did not answer (down, silent, refusing): asking again may succeed. Any
    /// other error is an answer about what etcd holds.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            MetaError::Connect { .. } | MetaError::Read { .. } | MetaError::Key { .. }
        )
    }
}

/// Keys per etcd range request: keeps each reply far below gRPC's 4 MiB message limit.
const PAGE_SIZE: i64 = 256;

/// Reads per etcd transaction, below etcd's default limit of 128 operations.
const TXN_OPS: usize = 64;

/// The first key after every key starting with `prefix` (etcd's "range end" for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): "to the end of the keyspace".
    vec![0]
}

/// Reads the source Milvus's metadata from its etcd.
#[derive(Clone)]
pub struct SourceMeta {
    client: Client,
    meta_root: String,
    /// What [`collection_named`](Self::collection_named) keeps of the collections' values.
    named: Arc<tokio::sync::Mutex<named::NamedValues>>,
}

impl std::fmt::Debug for SourceMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceMeta")
            .field("meta_root", &self.meta_root)
            .finish_non_exhaustive()
    }
}

impl SourceMeta {
    /// Connects and makes one read, so a wrong address fails here rather than on first use.
    /// With `ca`, every endpoint uses TLS and trusts only it; without, `https://` endpoints
    /// trust the system's roots.
    pub async fn connect(
        endpoints: &[String],
        root_path: &str,
        ca: Option<&CaFile>,
    ) -> Result<Self, MetaError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            // Every request is one page of keys (`PAGE_SIZE`): far quicker than this on a
            // healthy etcd, so a silent one is noticed (and retried) within seconds.
            .with_timeout(Duration::from_secs(10));
        // The client's own default for `https://` trusts no root at all.
        if let Some(ca) = ca {
            options =
                options.with_tls(TlsOptions::new().ca_certificate(Certificate::from_pem(ca.pem())));
        } else if endpoints.iter().any(|e| e.starts_with("https://")) {
            options = options.with_tls(TlsOptions::new().with_native_roots());
        }
        let connect_err = |source| MetaError::Connect {
            endpoints: endpoints.to_vec(),
            source: Box::new(source),
        };
        let mut client = Client::connect(endpoints, Some(options))
            .await
            .map_err(connect_err)?;
        let meta_root = meta_root(root_path);
        client
            .get(
                meta_root.clone(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .map_err(connect_err)?;
        Ok(Self {
            client,
            meta_root,
            named: Arc::default(),
        })
    }

    pub fn meta_root(&self) -> &str {
        &self.meta_root
    }

    pub async fn databases(&self) -> Result<Vec<DatabaseMeta>, MetaError> {
        let mut rev = 0;
        let kvs = self
            .read_prefix("root-coord/database/db-info/", &mut rev, false)
            .await?;
        Ok(assemble(&self.meta_root, &kvs)?.databases)
    }

    /// Every live collection of every database.
    pub async fn collections(&self) -> Result<Vec<CollectionMeta>, MetaError> {
        let mut rev = 0;
        let mut kvs = Vec::new();
        // `database/` holds both collection-info and db-info (and aliases, which are ignored).
        for prefix in [
            "root-coord/database/",
            "root-coord/collection/",
            "root-coord/fields/",
            "root-coord/partitions/",
        ] {
            kvs.extend(self.read_prefix(prefix, &mut rev, false).await?);
        }
        Ok(assemble(&self.meta_root, &kvs)?.collections)
    }

    /// The source Milvus's version, if the decoder reads it (see [`version`]).
    pub async fn milvus_version(&self) -> Result<Result<String, version::VersionError>, MetaError> {
        let key = format!("{}/session/rootcoord", self.meta_root);
        let mut rev = 0;
        let session = self.read_key(&key, &mut rev).await?;
        let value = session.first().map(|(_, value)| value.as_slice());
        Ok(version::supported_version(&key, value))
    }

    /// The collection's live indexes.
    pub async fn indexes(&self, collection_id: i64) -> Result<Vec<IndexMeta>, MetaError> {
        let mut rev = 0;
        let kvs = self
            .read_prefix(&format!("field-index/{collection_id}/"), &mut rev, false)
            .await?;
        live_indexes(&kvs)
    }

    /// How many replicas the collection is loaded with, None when it is not loaded.
    pub async fn loaded_replicas(&self, collection_id: i64) -> Result<Option<i32>, MetaError> {
        let mut rev = 0;
        let key = format!(
            "{}/querycoord-collection-loadinfo/{collection_id}",
            self.meta_root
        );
        match self.read_key(&key, &mut rev).await?.first() {
            Some((key, value)) => loaded_replicas(key, value),
            None => Ok(None),
        }
    }

    /// One collection, live or being dropped; `None` if etcd no longer has it.
    pub async fn collection(&self, id: i64) -> Result<Option<CollectionMeta>, MetaError> {
        self.collection_at(id, 0).await
    }

    /// The collection as it was at etcd revision `revision` (0: now), dropping ones included.
    pub async fn collection_at(
        &self,
        id: i64,
        revision: i64,
    ) -> Result<Option<CollectionMeta>, MetaError> {
        let mut rev = revision;
        let mut kvs = self
            .read_prefix("root-coord/database/db-info/", &mut rev, false)
            .await?;
        // The database of a collection is only in its key: its key is asked for under each
        // database (a few, read in one transaction), not found among every collection's keys.
        let mut db_ids = BTreeSet::from([0, DEFAULT_DB_ID]);
        for (key, _) in &kvs {
            if let Some(MetaKey::Database { db_id }) = parse_key(&self.meta_root, key)? {
                db_ids.insert(db_id);
            }
        }
        let mut keys: Vec<String> = db_ids
            .iter()
            .map(|db| {
                format!(
                    "{}/root-coord/database/collection-info/{db}/{id}",
                    self.meta_root
                )
            })
            .collect();
        keys.push(format!("{}/root-coord/collection/{id}", self.meta_root));
        kvs.extend(self.read_keys(&keys, rev).await?);
        for prefix in [
            format!("root-coord/fields/{id}/"),
            format!("root-coord/partitions/{id}/"),
        ] {
            kvs.extend(self.read_prefix(&prefix, &mut rev, false).await?);
        }
        let assembled = assemble_wanted(&self.meta_root, &kvs, Wanted::LiveOrDropping)?;
        Ok(assembled.collections.into_iter().find(|c| c.id == id))
    }

    /// The name of the database collection `id` was in at source time `ts`, from Milvus's
    /// snapshot history (`snapshots/..._ts{T}` keys, kept a while after a drop): what stands for
    /// a collection's metadata once Milvus has removed it. None when the history has no trace.
    pub async fn database_in_history(&self, id: i64, ts: u64) -> Result<Option<String>, MetaError> {
        let mut rev = 0;
        let infos = self
            .read_prefix(
                "snapshots/root-coord/database/collection-info/",
                &mut rev,
                true,
            )
            .await?;
        let suffix = format!("/{id}_ts");
        let db_id = infos.iter().find_map(|(key, _)| {
            let (head, _) = key.rsplit_once(&suffix)?;
            parse_id(head.rsplit('/').next()?)
        });
        let Some(db_id) = db_id else {
            // A collection older than databases keeps its key outside them: the default one.
            let legacy = format!("snapshots/root-coord/collection/{id}_ts");
            let found = !self.read_prefix(&legacy, &mut rev, true).await?.is_empty();
            return Ok(found.then(|| crate::model::DEFAULT_DB.to_owned()));
        };
        if db_id == 0 || db_id == DEFAULT_DB_ID {
            return Ok(Some(crate::model::DEFAULT_DB.to_owned()));
        }
        let versions = self
            .read_prefix(
                &format!("snapshots/root-coord/database/db-info/{db_id}_ts"),
                &mut rev,
                false,
            )
            .await?;
        history::database_name_at(&versions, ts)
    }

    /// Every key/value under `{meta_root}/{rel_prefix}` at etcd revision `revision`.
    pub async fn values_under(
        &self,
        rel_prefix: &str,
        revision: i64,
    ) -> Result<Vec<(String, Vec<u8>)>, MetaError> {
        let mut rev = revision;
        self.read_prefix(rel_prefix, &mut rev, false).await
    }

    /// The value of `{meta_root}/{rel_key}` at etcd revision `revision`.
    pub async fn value_at(
        &self,
        rel_key: &str,
        revision: i64,
    ) -> Result<Option<Vec<u8>>, MetaError> {
        let mut rev = revision;
        let key = format!("{}/{rel_key}", self.meta_root);
        Ok(self
            .read_key(&key, &mut rev)
            .await?
            .into_iter()
            .next()
            .map(|(_, v)| v))
    }

    /// A watch of every key under `{meta_root}/` from etcd revision `from` on, each event with
    /// the value before it, and progress reports on request.
    pub async fn watch(
        &self,
        from: i64,
    ) -> Result<(etcd_client::Watcher, etcd_client::WatchStream), MetaError> {
        let options = etcd_client::WatchOptions::new()
            .with_prefix()
            .with_start_revision(from)
            .with_prev_key()
            .with_progress_notify();
        let key = format!("{}/", self.meta_root);
        self.client
            .clone()
            .watch(key.clone(), Some(options))
            .await
            .map_err(|source| MetaError::Read {
                start: key.clone(),
                end: String::new(),
                source: Box::new(source),
            })
    }

    /// The etcd revision now.
    pub async fn revision(&self) -> Result<i64, MetaError> {
        let mut rev = 0;
        self.read_prefix("root-coord/database/db-info/", &mut rev, true)
            .await?;
        Ok(rev)
    }

    /// Every key/value under `{meta_root}/{rel_prefix}`.
    async fn read_prefix(
        &self,
        rel_prefix: &str,
        rev: &mut i64,
        keys_only: bool,
    ) -> Result<Vec<(String, Vec<u8>)>, MetaError> {
        self.read_prefix_since(rel_prefix, rev, keys_only, 0).await
    }

    /// As [`read_prefix`](Self::read_prefix), only the keys modified at or after revision
    /// `since` (0: every key).
    async fn read_prefix_since(
        &self,
        rel_prefix: &str,
        rev: &mut i64,
        keys_only: bool,
        since: i64,
    ) -> Result<Vec<(String, Vec<u8>)>, MetaError> {
        let start = format!("{}/{rel_prefix}", self.meta_root).into_bytes();
        let end = prefix_end(&start);
        self.read_range_since(start, end, rev, keys_only, since)
            .await
    }

    async fn read_key(
        &self,
        key: &str,
        rev: &mut i64,
    ) -> Result<Vec<(String, Vec<u8>)>, MetaError> {
        let start = key.as_bytes().to_vec();
        let mut end = start.clone();
        end.push(0);
        self.read_range(start, end, rev, false).await
    }

    /// Reads `[start, end)` page by page, all pages at revision `*rev`; a `*rev` of 0 is set to
    /// the revision of the first reply, so that every later read of the same call sees the
    /// same snapshot.
    async fn read_range(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
        rev: &mut i64,
        keys_only: bool,
    ) -> Result<Vec<(String, Vec<u8>)>, MetaError> {
        self.read_range_since(start, end, rev, keys_only, 0).await
    }

    /// As [`read_range`](Self::read_range), only the keys modified at or after revision
    /// `since` (0: every key).
    async fn read_range_since(
        &self,
        mut start: Vec<u8>,
        end: Vec<u8>,
        rev: &mut i64,
        keys_only: bool,
        since: i64,
    ) -> Result<Vec<(String, Vec<u8>)>, MetaError> {
        let mut client = self.client.clone();
        let mut out = Vec::new();
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE_SIZE)
                .with_revision(*rev)
                .with_min_mod_revision(since);
            if keys_only {
                options = options.with_keys_only();
            }
            let mut resp = client
                .get(start.clone(), Some(options))
                .await
                .map_err(|source| MetaError::Read {
                    start: String::from_utf8_lossy(&start).into_owned(),
                    end: String::from_utf8_lossy(&end).into_owned(),
                    source: Box::new(source),
                })?;
            if *rev == 0
                && let Some(header) = resp.header()
            {
                *rev = header.revision();
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            let last_key = kvs.last().map(|kv| kv.key().to_vec());
            for kv in kvs {
                out.push((utf8_key(&kv)?, kv.value().to_vec()));
            }
            match last_key {
                Some(mut last) if more => {
                    last.push(0);
                    start = last;
                }
                _ => return Ok(out),
            }
        }
    }

    /// The keys present among `keys` with their values, at revision `rev` (not 0), in one
    /// etcd transaction per [`TXN_OPS`] keys.
    async fn read_keys(
        &self,
        keys: &[String],
        rev: i64,
    ) -> Result<Vec<(String, Vec<u8>)>, MetaError> {
        let mut out = Vec::new();
        for chunk in keys.chunks(TXN_OPS) {
            let gets: Vec<TxnOp> = chunk
                .iter()
                .map(|key| TxnOp::get(key.as_str(), Some(GetOptions::new().with_revision(rev))))
                .collect();
            let reply = self
                .client
                .clone()
                .txn(Txn::new().and_then(gets))
                .await
                .map_err(|source| MetaError::Key {
                    key: format!("{} and {} more", chunk[0], chunk.len() - 1),
                    source: Box::new(source),
                })?;
            for answer in reply.op_responses() {
                if let TxnOpResponse::Get(got) = answer {
                    for kv in got.kvs() {
                        out.push((utf8_key(kv)?, kv.value().to_vec()));
                    }
                }
            }
        }
        Ok(out)
    }

    /// How many keys are under `{meta_root}/{rel_prefix}` at revision `rev` (not 0).
    async fn count_prefix(&self, rel_prefix: &str, rev: i64) -> Result<usize, MetaError> {
        let start = format!("{}/{rel_prefix}", self.meta_root);
        let end = prefix_end(start.as_bytes());
        let options = GetOptions::new()
            .with_range(end.clone())
            .with_revision(rev)
            .with_count_only();
        let reply = self
            .client
            .clone()
            .get(start.clone(), Some(options))
            .await
            .map_err(|source| MetaError::Read {
                end: String::from_utf8_lossy(&end).into_owned(),
                start,
                source: Box::new(source),
            })?;
        Ok(usize::try_from(reply.count()).unwrap_or(usize::MAX))
    }
}

fn utf8_key(kv: &etcd_client::KeyValue) -> Result<String, MetaError> {
    String::from_utf8(kv.key().to_vec()).map_err(|_| MetaError::BadKey {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        reason: "not UTF-8".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(prefix_end(&[]), vec![0]);
    }
}
