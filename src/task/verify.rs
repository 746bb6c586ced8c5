//! `verify` of a task: its scope's collections, compared on the source and the target.

use std::sync::Arc;

use tokio::runtime::Handle;

use super::{Supervisor, TaskError};
use crate::milvus_client;
use crate::model::{CollectionRef, Scope, now_ms};
use crate::source::meta::CollectionMeta;
use crate::verify::{self, Limits, Report, Shape, Side, Subject};

impl Supervisor {
    /// Compares the task's collections on the source and the target (see [`verify`]).
    pub async fn verify(self: &Arc<Self>, id: &str, limits: &Limits) -> Result<Report, TaskError> {
        let spec = self.task(id)?;
        let config = &self.config.source;
        let uri = config.milvus_uri.as_deref().ok_or(TaskError::NoSourceApi)?;
        let runtime = Handle::current();
        let source_token = config.milvus_token.as_ref().map(|t| t.expose());
        let (_, source) = milvus_client::connect(
            "source",
            uri,
            source_token,
            config.milvus_ca_file.as_deref(),
            &runtime,
        )
        .map_err(TaskError::SourceApi)?;
        let (_, target) = milvus_client::connect(
            "target",
            &spec.target.uri,
            Some(spec.target.token.expose()),
            self.config.target.ca_file.as_deref(),
            &runtime,
        )
        .map_err(TaskError::InvalidTarget)?;
        let scope = spec.scope();
        let subjects: Vec<Subject> = config
            .meta()
            .await?
            .collections()
            .await?
            .into_iter()
            .filter(|c| scope.contains(&c.db_name, &c.name))
            .map(|c| subject(&scope, c))
            .collect();
        let consistent = || {
            self.lag(id, now_ms())
                .map(|lag| lag.consistent_ts)
                .map_err(|e| e.to_string())
        };
        let source = Side {
            role: "source",
            client: source,
        };
        let target = Side {
            role: "target",
            client: target,
        };
        verify::verify(&source, &target, &subjects, limits, &consistent)
            .await
            .map_err(|e| TaskError::Internal(e.to_string()))
    }
}

/// A source collection as verify reads it: every user field, on both sides.
fn subject(scope: &Scope, c: CollectionMeta) -> Subject {
    let source = CollectionRef {
        id: c.id,
        db_name: c.db_name.clone(),
        name: c.name.clone(),
    };
    // Fields below 100 are Milvus's own (row id, timestamp).
    let user = c.schema.fields.iter().filter(|f| f.field_id >= 100);
    let primary_key = user
        .clone()
        .find(|f| f.is_primary_key)
        .map(|f| f.name.clone())
        .unwrap_or_default();
    Subject {
        target: scope.on_target(source.clone()),
        source,
        shape: Shape {
            primary_key,
            fields: user.map(|f| f.name.clone()).collect(),
        },
        partitions: c.partitions.into_iter().map(|p| p.name).collect(),
    }
}
