//! Data calls: inserts (upserts when replayed) and deletes, each lane's calls in order and the
//! lanes side by side (a lane per vchannel, or one of calls merged across them).

use milvus::proto::milvus as rpc;
use tonic::codegen::http::uri::PathAndQuery;
use tracing::info;

use super::insert::{InsertCodec, InsertRequest};
use super::{MilvusTarget, check, shape_key};
use crate::apply::TargetError;
use crate::apply::calls::Call;
use crate::milvus_client::MAX_MESSAGE;
use crate::model::{CollectionRef, PrimaryKeys};

impl MilvusTarget {
    /// Sends each lane's calls in order, the lanes concurrently.
    pub(super) fn send_data(
        &mut self,
        lanes: &[Vec<Call>],
        replay: bool,
    ) -> Result<(), TargetError> {
        // The calls need each collection's shape (primary key, partition key) and partition.
        for call in lanes.iter().flatten() {
            let (Call::Insert {
                collection,
                partition,
                ..
            }
            | Call::Delete {
                collection,
                partition,
                ..
            }) = call;
            self.prepare(collection, partition)?;
        }
        let this = &*self;
        let results = self
            .runtime
            .block_on(futures::future::join_all(lanes.iter().map(
                |calls| async move {
                    for call in calls {
                        this.send(call, replay).await?;
                    }
                    Ok::<(), TargetError>(())
                },
            )));
        // A permanent error decides the outcome (the batch is taken apart); then a target that
        // refuses every call (its reason is what the task waits for); then a transient one.
        let mut errors: Vec<TargetError> = results.into_iter().filter_map(Result::err).collect();
        errors.sort_by_key(|e| match e {
            TargetError::Permanent(_) => 0,
            TargetError::Blocked(_) => 1,
            TargetError::Transient(_) => 2,
        });
        errors.into_iter().next().map_or(Ok(()), Err)
    }

    /// Makes sure the collection's shape is known and the call's partition exists.
    fn prepare(&mut self, collection: &CollectionRef, partition: &str) -> Result<(), TargetError> {
        if let Err(err) = self.shape(collection) {
            return match err {
                TargetError::Blocked(_) if self.gone_from_both(collection)? => Ok(()),
                err => Err(err),
            };
        }
        if self.superseded(collection) {
            return Ok(());
        }
        let shape = self.shape(collection)?;
        if shape.partition_key || partition.is_empty() || shape.partitions.contains(partition) {
            return Ok(());
        }
        if !self.has_partition(collection, partition)? {
            let request = rpc::CreatePartitionRequest {
                db_name: collection.db_name.clone(),
                collection_name: collection.name.clone(),
                partition_name: partition.to_owned(),
                ..Default::default()
            };
            let mut client = self.client.clone();
            let reply = self.unary("CreatePartition", client.create_partition(request))?;
            check("CreatePartition", &collection.name, Some(&reply))?;
            info!(collection = %collection.name, partition, "partition created on the target before its rows");
        }
        self.shape(collection)?
            .partitions
            .insert(partition.to_owned());
        Ok(())
    }

    /// The partition to name in a data call (none for a partition-key collection).
    fn partition_for<'a>(&self, collection: &CollectionRef, partition: &'a str) -> &'a str {
        match self.shapes.get(&shape_key(collection)) {
            Some(shape) if shape.partition_key => "",
            _ => partition,
        }
    }

    async fn send(&self, call: &Call, replay: bool) -> Result<(), TargetError> {
        let mut client = self.client.clone();
        let (Call::Insert { collection, .. } | Call::Delete { collection, .. }) = call;
        if self.superseded(collection) {
            return Ok(());
        }
        match call {
            Call::Insert {
                collection,
                partition,
                num_rows,
                fields_data,
            } => {
                let num_rows = u32::try_from(*num_rows).map_err(|_| {
                    TargetError::Permanent(format!("batch of {num_rows} rows is too large"))
                })?;
                let request = InsertRequest {
                    db_name: collection.db_name.clone(),
                    collection_name: collection.name.clone(),
                    partition_name: self.partition_for(collection, partition).to_owned(),
                    columns: fields_data.clone(),
                    num_rows,
                };
                // A replayed batch may already be on the target: upsert replaces, insert would double.
                let (rpc, path) = if replay {
                    ("Upsert", "/milvus.proto.milvus.MilvusService/Upsert")
                } else {
                    ("Insert", "/milvus.proto.milvus.MilvusService/Insert")
                };
                let reply = self
                    .insert_encoded(path, request)
                    .await
                    .map_err(|e| self.rpc_error(rpc, e))?;
                check(rpc, &collection.name, reply.status.as_ref())
            }
            Call::Delete {
                collection,
                partition,
                keys,
            } => {
                let pk = self
                    .shapes
                    .get(&shape_key(collection))
                    .map(|shape| shape.primary_key.clone())
                    .ok_or_else(|| {
                        TargetError::Transient(format!(
                            "primary key of {} not known yet",
                            collection.name
                        ))
                    })?;
                let request = rpc::DeleteRequest {
                    db_name: collection.db_name.clone(),
                    collection_name: collection.name.clone(),
                    partition_name: self.partition_for(collection, partition).to_owned(),
                    expr: delete_expr(&pk, keys),
                    ..Default::default()
                };
                let reply = client
                    .delete(request)
                    .await
                    .map_err(|e| self.rpc_error("Delete", e))?;
                check(
                    "Delete",
                    &collection.name,
                    reply.into_inner().status.as_ref(),
                )
            }
        }
    }

    /// `MilvusService.Insert` or `Upsert` (same request fields) with columns already encoded:
    /// the generated client would need them decoded first.
    async fn insert_encoded(
        &self,
        path: &'static str,
        request: InsertRequest,
    ) -> Result<rpc::MutationResult, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(self.service.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        grpc.unary(
            tonic::Request::new(request),
            PathAndQuery::from_static(path),
            InsertCodec,
        )
        .await
        .map(tonic::Response::into_inner)
    }
}

/// `pk in [...]`; string keys are quoted with JSON escaping, which Milvus's expression
/// grammar reads the same way.
fn delete_expr(pk: &str, keys: &PrimaryKeys) -> String {
    let list = match keys {
        PrimaryKeys::Int64(keys) => keys
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(","),
        PrimaryKeys::VarChar(keys) => keys
            .iter()
            .map(|k| serde_json::to_string(k).unwrap_or_else(|_| "\"\"".into()))
            .collect::<Vec<_>>()
            .join(","),
    };
    format!("{pk} in [{list}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_expressions_quote_strings() {
        assert_eq!(
            delete_expr("id", &PrimaryKeys::Int64(vec![1, -2])),
            "id in [1,-2]"
        );
        assert_eq!(
            delete_expr(
                "pk",
                &PrimaryKeys::VarChar(vec!["a\"b".into(), "c\\".into()])
            ),
            r#"pk in ["a\"b","c\\"]"#
        );
    }
}
