//! Rows of a Milvus read through its public API, a page of keys at a time.

use milvus::proto::common::{ConsistencyLevel, KeyValuePair};
use milvus::proto::milvus::{
    AllocTimestampRequest, DescribeCollectionRequest, GetPersistentSegmentInfoRequest,
    GetQuerySegmentInfoRequest, HasCollectionRequest, HasPartitionRequest, ListDatabasesRequest,
    QueryRequest, ShowCollectionsRequest,
};
use milvus::proto::schema::{FieldData, field_data, scalar_field};

use super::rows::{Row, rows};
use super::{Client, failure};
use crate::model::{CollectionRef, PrimaryKey};

/// A query that failed, or whose reply does not read as rows.
#[derive(Debug, thiserror::Error)]
#[error("reading {collection} on the {role}: {reason}")]
pub struct ReadError {
    pub role: &'static str,
    pub collection: String,
    pub reason: String,
}

/// What a query must see.
#[derive(Debug, Clone, Copy)]
pub enum Seen {
    /// Everything written before the query (strong consistency: the query waits for the
    /// source's next time tick, half a second or so).
    Now,
    /// Everything written up to this source timestamp; later writes may be seen or not. A
    /// query waits only until the source has passed it, once.
    Through(u64),
}

/// What is read of one collection: its primary key and every field to compare.
#[derive(Debug, Clone)]
pub struct Shape {
    pub primary_key: String,
    pub fields: Vec<String>,
}

pub struct RowReader {
    /// "source" or "target", for errors.
    pub role: &'static str,
    pub client: Client,
}

impl RowReader {
    /// The rows of `partition` (all partitions: ""), counted by the server.
    pub async fn count(&self, c: &CollectionRef, partition: &str) -> Result<u64, ReadError> {
        let reply = self
            .query(
                c,
                partition,
                String::new(),
                vec!["count(*)".into()],
                Vec::new(),
                Seen::Now,
            )
            .await?;
        let count = reply.iter().find_map(|column| match &column.field {
            Some(field_data::Field::Scalars(s)) => match &s.data {
                Some(scalar_field::Data::LongData(a)) => a.data.first().copied(),
                _ => None,
            },
            _ => None,
        });
        count
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| self.error(c, "count(*) answered no count".into()))
    }

    /// Up to `limit` rows of `partition` with a key above `after` and at most `through`, in key
    /// order. A page may hold fewer rows than `limit` with more to come: only an empty page
    /// ends the range (Milvus stops a page where one of its segments runs out, so that what
    /// it returns is exactly the lowest keys).
    pub async fn page(
        &self,
        c: &CollectionRef,
        partition: &str,
        shape: &Shape,
        after: Option<&PrimaryKey>,
        through: Option<&PrimaryKey>,
        limit: usize,
    ) -> Result<Vec<Row>, ReadError> {
        let columns = self
            .page_columns(c, partition, shape, after, through, limit, Seen::Now)
            .await?;
        rows(&columns, &shape.primary_key).map_err(|e| self.error(c, e.to_string()))
    }

    /// [`page`](Self::page) as Milvus answers it: one column per field. `seen` is what it must
    /// see (see [`Seen`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn page_columns(
        &self,
        c: &CollectionRef,
        partition: &str,
        shape: &Shape,
        after: Option<&PrimaryKey>,
        through: Option<&PrimaryKey>,
        limit: usize,
        seen: Seen,
    ) -> Result<Vec<FieldData>, ReadError> {
        let pk = &shape.primary_key;
        let mut bounds = Vec::new();
        if let Some(after) = after {
            bounds.push(format!("{pk} > {}", after.literal()));
        }
        if let Some(through) = through {
            bounds.push(format!("{pk} <= {}", through.literal()));
        }
        // No bounds: every key (Milvus takes an empty expression when a limit is given).
        let expr = bounds.join(" && ");
        let params = vec![
            param("limit", &limit.to_string()),
            param("iterator", "True"),
            param("reduce_stop_for_best", "True"),
        ];
        self.query(c, partition, expr, shape.fields.clone(), params, seen)
            .await
    }

    /// A timestamp of the server's clock, later than every one it has given a write.
    pub async fn timestamp(&self) -> Result<u64, String> {
        let reply = self
            .client
            .clone()
            .alloc_timestamp(AllocTimestampRequest::default())
            .await
            .map_err(|status| format!("AllocTimestamp on the {}: {}", self.role, status.message()))?
            .into_inner();
        match failure(reply.status.as_ref()) {
            Some(reason) => Err(format!("AllocTimestamp on the {}: {reason}", self.role)),
            None => Ok(reply.timestamp),
        }
    }

    /// Every collection, as (database, name) pairs, database by database.
    pub async fn collections(&self) -> Result<Vec<(String, String)>, ReadError> {
        let fail = |what: &str, reason: String| ReadError {
            role: self.role,
            collection: "its collections".into(),
            reason: format!("{what}: {reason}"),
        };
        let reply = self
            .client
            .clone()
            .list_databases(ListDatabasesRequest::default())
            .await
            .map_err(|status| fail("ListDatabases", status.message().to_owned()))?
            .into_inner();
        if let Some(reason) = failure(reply.status.as_ref()) {
            return Err(fail("ListDatabases", reason));
        }
        let mut found = Vec::new();
        for db_name in reply.db_names {
            let request = ShowCollectionsRequest {
                db_name: db_name.clone(),
                ..Default::default()
            };
            let reply = self
                .client
                .clone()
                .show_collections(request)
                .await
                .map_err(|status| fail("ShowCollections", status.message().to_owned()))?
                .into_inner();
            if let Some(reason) = failure(reply.status.as_ref()) {
                return Err(fail("ShowCollections", reason));
            }
            found.extend(
                reply
                    .collection_names
                    .into_iter()
                    .map(|c| (db_name.clone(), c)),
            );
        }
        Ok(found)
    }

    /// Whether the collection exists. A failed answer is an error, never a "no".
    pub async fn has_collection(&self, c: &CollectionRef) -> Result<bool, ReadError> {
        let reply = self
            .client
            .clone()
            .has_collection(HasCollectionRequest {
                db_name: c.db_name.clone(),
                collection_name: c.name.clone(),
                ..Default::default()
            })
            .await
            .map_err(|status| self.error(c, format!("HasCollection: {}", status.message())))?
            .into_inner();
        match failure(reply.status.as_ref()) {
            Some(reason) => Err(self.error(c, format!("HasCollection: {reason}"))),
            None => Ok(reply.value),
        }
    }

    /// The collection's properties (TTL, mmap, ...), sorted by key; `None` when it does not
    /// exist (by that id: a collection dropped and made again under its name is another).
    pub async fn properties(
        &self,
        c: &CollectionRef,
    ) -> Result<Option<Vec<(String, String)>>, ReadError> {
        if !self.has_collection(c).await? {
            return Ok(None);
        }
        let reply = self
            .client
            .clone()
            .describe_collection(DescribeCollectionRequest {
                db_name: c.db_name.clone(),
                collection_name: c.name.clone(),
                ..Default::default()
            })
            .await
            .map_err(|status| self.error(c, format!("DescribeCollection: {}", status.message())))?
            .into_inner();
        if let Some(reason) = failure(reply.status.as_ref()) {
            return Err(self.error(c, format!("DescribeCollection: {reason}")));
        }
        if reply.collection_id != c.id {
            return Ok(None);
        }
        let mut properties: Vec<_> = reply
            .properties
            .into_iter()
            .map(|p| (p.key, p.value))
            .collect();
        properties.sort();
        Ok(Some(properties))
    }

    /// Whether the collection, and its partition, exist. A failed answer is an error, never a
    /// "no".
    pub async fn has(&self, c: &CollectionRef, partition: &str) -> Result<(bool, bool), ReadError> {
        if !self.has_collection(c).await? {
            return Ok((false, false));
        }
        let reply = self
            .client
            .clone()
            .has_partition(HasPartitionRequest {
                db_name: c.db_name.clone(),
                collection_name: c.name.clone(),
                partition_name: partition.to_owned(),
                ..Default::default()
            })
            .await
            .map_err(|status| self.error(c, format!("HasPartition: {}", status.message())))?
            .into_inner();
        match failure(reply.status.as_ref()) {
            Some(reason) => Err(self.error(c, format!("HasPartition: {reason}"))),
            None => Ok((true, reply.value)),
        }
    }

    /// Whether the collection's queries see the rows of `segments`: each is loaded, or no
    /// longer stored (compacted into another, which is loaded before it is released). A
    /// collection not loaded is queried by no one: true.
    pub async fn segments_visible(
        &self,
        c: &CollectionRef,
        segments: &[i64],
    ) -> Result<bool, ReadError> {
        let mut client = self.client.clone();
        let loaded = client
            .get_query_segment_info(GetQuerySegmentInfoRequest {
                db_name: c.db_name.clone(),
                collection_name: c.name.clone(),
                ..Default::default()
            })
            .await
            .map_err(|status| self.error(c, format!("GetQuerySegmentInfo: {}", status.message())))?
            .into_inner();
        if failure(loaded.status.as_ref()).is_some() {
            return Ok(true);
        }
        let loaded: Vec<i64> = loaded.infos.iter().map(|i| i.segment_id).collect();
        let waiting: Vec<i64> = segments
            .iter()
            .copied()
            .filter(|s| !loaded.contains(s))
            .collect();
        if waiting.is_empty() {
            return Ok(true);
        }
        let stored = client
            .get_persistent_segment_info(GetPersistentSegmentInfoRequest {
                db_name: c.db_name.clone(),
                collection_name: c.name.clone(),
                ..Default::default()
            })
            .await
            .map_err(|status| {
                self.error(c, format!("GetPersistentSegmentInfo: {}", status.message()))
            })?
            .into_inner();
        if let Some(reason) = failure(stored.status.as_ref()) {
            return Err(self.error(c, format!("GetPersistentSegmentInfo: {reason}")));
        }
        let dropped = milvus::proto::common::SegmentState::Dropped as i32;
        Ok(!stored
            .infos
            .iter()
            .any(|i| waiting.contains(&i.segment_id) && i.state != dropped))
    }

    /// The columns of the rows of `partition` (all: "") with one of `keys`, as stored now.
    pub async fn columns_of(
        &self,
        c: &CollectionRef,
        partition: &str,
        shape: &Shape,
        keys: &[PrimaryKey],
    ) -> Result<Vec<FieldData>, ReadError> {
        let list: Vec<String> = keys.iter().map(PrimaryKey::literal).collect();
        let expr = format!("{} in [{}]", shape.primary_key, list.join(", "));
        self.query(
            c,
            partition,
            expr,
            shape.fields.clone(),
            Vec::new(),
            Seen::Now,
        )
        .await
    }

    /// The rows of `partition` with one of `keys`.
    pub async fn rows_of(
        &self,
        c: &CollectionRef,
        partition: &str,
        shape: &Shape,
        keys: &[PrimaryKey],
    ) -> Result<Vec<Row>, ReadError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = keys.iter().map(PrimaryKey::literal).collect();
        let expr = format!("{} in [{}]", shape.primary_key, list.join(", "));
        self.rows(c, partition, shape, expr, Vec::new()).await
    }

    async fn rows(
        &self,
        c: &CollectionRef,
        partition: &str,
        shape: &Shape,
        expr: String,
        params: Vec<KeyValuePair>,
    ) -> Result<Vec<Row>, ReadError> {
        let columns = self
            .query(c, partition, expr, shape.fields.clone(), params, Seen::Now)
            .await?;
        rows(&columns, &shape.primary_key).map_err(|e| self.error(c, e.to_string()))
    }

    async fn query(
        &self,
        c: &CollectionRef,
        partition: &str,
        expr: String,
        output_fields: Vec<String>,
        query_params: Vec<KeyValuePair>,
        seen: Seen,
    ) -> Result<Vec<FieldData>, ReadError> {
        let (consistency_level, guarantee_timestamp) = match seen {
            Seen::Now => (ConsistencyLevel::Strong, 0),
            Seen::Through(ts) => (ConsistencyLevel::Customized, ts),
        };
        let request = QueryRequest {
            db_name: c.db_name.clone(),
            collection_name: c.name.clone(),
            expr,
            output_fields,
            // No partition named: all of them.
            partition_names: (!partition.is_empty())
                .then(|| partition.to_owned())
                .into_iter()
                .collect(),
            query_params,
            consistency_level: consistency_level as i32,
            guarantee_timestamp,
            ..Default::default()
        };
        let mut client = self.client.clone();
        let reply = client
            .query(request)
            .await
            .map_err(|status| self.error(c, format!("Query: {}", status.message())))?
            .into_inner();
        match failure(reply.status.as_ref()) {
            Some(reason) => Err(self.error(c, format!("Query: {reason}"))),
            None => Ok(reply.fields_data),
        }
    }

    fn error(&self, c: &CollectionRef, reason: String) -> ReadError {
        ReadError {
            role: self.role,
            collection: format!("{}.{}", c.db_name, c.name),
            reason,
        }
    }
}

fn param(key: &str, value: &str) -> KeyValuePair {
    KeyValuePair {
        key: key.to_owned(),
        value: value.to_owned(),
    }
}
