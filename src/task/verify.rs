//! `verify` of a task: its scope's collections, compared on the source and the target.

use std::sync::Arc;

use super::snapshot::fields;
use super::status::Verified;
use super::{Supervisor, TaskError};
use crate::milvus_client::{RowReader, Shape};
use crate::model::{Scope, now_ms};
use crate::source::meta::CollectionMeta;
use crate::verify::{self, Limits, Report, Subject};

impl Supervisor {
    /// Compares the task's collections on the source and the target (see [`verify`]).
    pub async fn verify(self: &Arc<Self>, id: &str, limits: &Limits) -> Result<Report, TaskError> {
        let spec = self.task(id)?;
        let source = self.source_rows(&spec)?;
        let target = RowReader {
            role: "target",
            client: self.target_client(&spec)?,
        };
        let scope = spec.scope();
        let subjects: Vec<Subject> = self
            .source_of(&spec)?
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
        let report = verify::verify(&source, &target, &subjects, limits, &consistent)
            .await
            .map_err(|e| TaskError::Internal(e.to_string()))?;
        let outcome = Verified {
            time: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            equal: report.equal,
            complete: report.complete,
        };
        if let Ok(mut verified) = self.verified.lock() {
            verified.insert(id.to_owned(), outcome);
        }
        Ok(report)
    }

    /// What the last verify of the task found, if one ran since the server started.
    pub(super) fn verified(&self, id: &str) -> Option<Verified> {
        self.verified.lock().ok()?.get(id).cloned()
    }
}

/// A source collection as verify reads it: every user field, on both sides.
fn subject(scope: &Scope, c: CollectionMeta) -> Subject {
    let source = c.reference();
    let fields = fields(&c);
    Subject {
        target: scope.on_target(source.clone()),
        source,
        shape: Shape {
            primary_key: fields.primary_key,
            fields: fields.names,
        },
        partitions: c.partitions.into_iter().map(|p| p.name).collect(),
    }
}
