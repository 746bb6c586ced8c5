//! A task's specification as stored in the journal: what to replicate where, and its state.
//! Stored as JSON: fields are added with defaults, never renamed, so older records still read.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::model::{
    DEFAULT_DB, MqPosition, NameMapping, Poison, PoisonAt, Scope, Secret, SkipPolicy, StartPosition,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum TaskState {
    Initial,
    Running,
    Paused,
    Failed,
    /// A failover is under way: the task reads nothing more and applies what its journal holds
    /// that can be applied consistently (see `task::failover`). Started again at start-up.
    FailingOver,
    /// Terminal: the task failed over, never resumes and never reads again; its report is in
    /// [`TaskSpec::failover`].
    FailedOver,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetSpec {
    /// The target's API; for a target named by its cluster, that cluster's `milvus_uri` when
    /// the task was created (what overlap checks compare), the config's being used to connect.
    pub uri: String,
    /// `user:password` or an API key; empty for none (a cluster's is in the config).
    #[serde(default)]
    pub token: Secret,
    /// The configured cluster the task writes to, when it was named so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

impl TargetSpec {
    /// A target by its API's uri, with no token.
    pub fn at(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            token: Secret::default(),
            cluster: None,
        }
    }
}

/// Access control replicated with the data (roles, grants, users' bindings, users).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RbacSpec {
    /// The password users get on the target: the source keeps only hashes. Without it, users
    /// are not made there (their bindings apply to users an operator makes there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_password: Option<Secret>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub task_id: String,
    /// The configured cluster the task reads (records from before clusters: `source`).
    #[serde(default = "source_cluster")]
    pub source_cluster: String,
    pub target: TargetSpec,
    /// Collection names of the default database; `*` for every collection of every database.
    pub collections: Vec<String>,
    /// Collection names (`*`: all) per database (`*`: every database).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub databases: BTreeMap<String, Vec<String>>,
    pub start: StartPosition,
    /// Collections left out (names per database, `*` for all of one), even when included.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub excluded: BTreeMap<String, Vec<String>>,
    /// Target names of source databases and collections.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub name_mapping: Vec<NameMapping>,
    /// Explicit positions per physical channel, given at create; they take the place of
    /// `start` on their channels (collections that exist already are created on the target
    /// first, as with `latest`).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "given_positions"
    )]
    pub positions: BTreeMap<String, MqPosition>,
    /// Pass over every poison (logged and counted) instead of stopping on it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_poison: bool,
    /// Replicate access control too (opt in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbac: Option<RbacSpec>,
    pub state: TaskState,
    #[serde(default)]
    pub reason: Option<String>,
    /// The poison the task stopped on (state Failed), until an operator skips it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poison: Option<Poison>,
    /// The poison an operator approved skipping (`task skip`); kept, since the run that moves
    /// past it may be stopped before it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_approved: Option<PoisonAt>,
    /// The report of the task's failover, once it ended (state FailedOver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Box<super::failover::FailoverReport>>,
    /// A switchover under way or done (`task::switchover`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover: Option<Box<super::switchover::SwitchoverRecord>>,
    /// In a group: the member that runs the task now. Shown, never stored (`record`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

fn source_cluster() -> String {
    crate::config::SOURCE_CLUSTER.to_owned()
}

/// Task records written before Pulsar positions hold a bare Kafka offset per channel.
fn given_positions<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, MqPosition>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Position(MqPosition),
        KafkaOffset(i64),
    }
    let given = BTreeMap::<String, Given>::deserialize(deserializer)?;
    Ok(given
        .into_iter()
        .map(|(channel, given)| {
            let position = match given {
                Given::Position(position) => position,
                Given::KafkaOffset(next_offset) => MqPosition::Kafka { next_offset },
            };
            (channel, position)
        })
        .collect())
}

impl TaskSpec {
    /// The task's journal record: the one serialization that holds its secrets.
    pub fn record(&self) -> serde_json::Result<Vec<u8>> {
        let stored = TaskSpec {
            owner: None,
            ..self.clone()
        };
        Secret::revealed(|| serde_json::to_vec(&stored))
    }

    /// A journal record as `dump` shows it: every secret blanked by its type. A record that
    /// does not read is shown as where it breaks, not as its text, which may hold a secret.
    pub fn shown(record: &[u8]) -> serde_json::Value {
        let shown = serde_json::from_slice::<TaskSpec>(record).and_then(serde_json::to_value);
        shown.unwrap_or_else(|e| {
            serde_json::json!({ "unreadable": format!(
                "{:?} error at line {} column {}", e.classify(), e.line(), e.column()
            ) })
        })
    }

    /// What is shown of a task whose journal record does not decode: its id, Failed, and why.
    /// Such a task cannot be paused or resumed (each reads the record), only deleted.
    pub fn unreadable(task_id: String, error: &str) -> Self {
        Self {
            reason: Some(format!(
                "its record in the journal is corrupt ({error}): delete the task and create it again"
            )),
            task_id,
            source_cluster: source_cluster(),
            target: TargetSpec {
                uri: String::new(),
                token: Secret::default(),
                cluster: None,
            },
            collections: Vec::new(),
            databases: BTreeMap::new(),
            start: StartPosition::default(),
            excluded: BTreeMap::new(),
            name_mapping: Vec::new(),
            positions: BTreeMap::new(),
            skip_poison: false,
            rbac: None,
            state: TaskState::Failed,
            poison: None,
            skip_approved: None,
            failover: None,
            switchover: None,
            owner: None,
        }
    }

    /// Whether `other` asks for the same task (its state aside): a create repeated by a client
    /// that retries.
    pub fn same_request(&self, other: &TaskSpec) -> bool {
        self.source_cluster == other.source_cluster
            && self.target == other.target
            && self.collections == other.collections
            && self.databases == other.databases
            && self.start == other.start
            && self.positions == other.positions
            && self.excluded == other.excluded
            && self.name_mapping == other.name_mapping
            && self.skip_poison == other.skip_poison
            && self.rbac == other.rbac
    }

    /// Whether the task never reads or writes again: it failed over, or switched over (its
    /// reverse task took its place).
    pub fn retired(&self) -> bool {
        matches!(self.state, TaskState::FailingOver | TaskState::FailedOver)
            || self.switchover.as_ref().is_some_and(|s| s.report.is_some())
    }

    /// The poisons a run of this task may move past.
    pub fn skip_policy(&self) -> SkipPolicy {
        SkipPolicy {
            every: self.skip_poison,
            approved: self.skip_approved.clone(),
        }
    }

    pub fn scope(&self) -> Scope {
        let everything = self.collections.iter().any(|c| c == "*")
            || self
                .databases
                .get("*")
                .is_some_and(|names| names.iter().any(|c| c == "*"));
        let pairs = |per_db: &BTreeMap<String, Vec<String>>| {
            per_db
                .iter()
                .flat_map(|(db, names)| names.iter().map(move |name| (db.clone(), name.clone())))
                .collect::<HashSet<_>>()
        };
        let included = if everything {
            Scope::all()
        } else {
            let default_db = self
                .collections
                .iter()
                .map(|name| (DEFAULT_DB.to_owned(), name.clone()));
            Scope::named(default_db.chain(pairs(&self.databases)).collect())
        };
        included
            .excluding(pairs(&self.excluded))
            .renaming(self.name_mapping.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_keeps_every_secret_and_what_dump_shows_of_it_keeps_none() {
        let spec: TaskSpec = serde_json::from_value(serde_json::json!({
            "task_id": "t", "target": { "uri": "http://x", "token": "root:Canary-1" },
            "collections": ["*"], "start": "latest", "state": "Running",
            "rbac": { "user_password": "Canary-2" },
        }))
        .unwrap();
        let record = spec.record().unwrap();
        let again: TaskSpec = serde_json::from_slice(&record).unwrap();
        assert_eq!(again, spec, "the journal keeps the credentials");
        let shown = TaskSpec::shown(&record);
        assert_eq!(shown["target"]["token"], "***");
        assert_eq!(shown["rbac"]["user_password"], "***");
        assert!(!shown.to_string().contains("Canary"), "{shown}");
        let cut = TaskSpec::shown(&record[..record.len() / 2]);
        assert!(!cut.to_string().contains("Canary"), "{cut}");
        assert!(
            cut["unreadable"]
                .as_str()
                .unwrap()
                .starts_with("Eof error at line 1"),
            "{cut}"
        );
    }

    fn spec(collections: &[&str], databases: &[(&str, &[&str])]) -> TaskSpec {
        serde_json::from_value(serde_json::json!({
            "task_id": "t", "target": { "uri": "http://x" }, "collections": collections,
            "databases": databases.iter().map(|(db, names)| (db.to_string(), names.to_vec()))
                .collect::<std::collections::BTreeMap<_, _>>(),
            "start": "latest", "state": "Running"
        }))
        .unwrap()
    }

    #[test]
    fn a_star_collection_or_database_star_star_is_everything() {
        assert_eq!(spec(&["*"], &[]).scope(), Scope::all());
        assert_eq!(spec(&[], &[("*", &["*"])]).scope(), Scope::all());
    }

    #[test]
    fn collection_infos_name_the_default_database_and_db_collections_the_others() {
        let scope = spec(&["a"], &[("sales", &["*"]), ("hr", &["people"])]).scope();
        assert!(scope.contains("default", "a"));
        assert!(scope.contains("sales", "a"), "every collection of sales");
        assert!(scope.contains("sales", "orders"));
        assert!(scope.contains("hr", "people"));
        assert!(!scope.contains("hr", "salaries"));
        assert!(!scope.contains("default", "orders"));
    }

    #[test]
    fn a_spec_stored_before_databases_existed_still_reads() {
        let old = r#"{"task_id":"t","target":{"uri":"http://x"},"collections":["a"],"start":"latest","state":"Paused"}"#;
        let spec: TaskSpec = serde_json::from_str(old).unwrap();
        assert!(spec.databases.is_empty());
        assert_eq!(spec.source_cluster, "source");
        assert_eq!(spec.target.cluster, None);
        assert!(spec.scope().contains("default", "a"));
    }

    #[test]
    fn a_task_record_with_bare_kafka_offsets_still_reads() {
        let spec = r#"{"task_id":"t","target":{"uri":"http://t:19530"},"collections":["*"],
            "start":"latest","positions":{"dml_0":42},"state":"Running"}"#;
        let spec: TaskSpec = serde_json::from_str(spec).unwrap();
        assert_eq!(
            spec.positions["dml_0"],
            MqPosition::Kafka { next_offset: 42 }
        );
        let again: TaskSpec = serde_json::from_slice(&serde_json::to_vec(&spec).unwrap()).unwrap();
        assert_eq!(again, spec);
    }
}
