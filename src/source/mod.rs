//! The source stage: everything about the source Milvus. Its etcd metadata (`meta`), its message
//! queue (`mq`), decoding its messages (`decode`) and capturing them as changes of a task
//! (`capture`), where a new task starts (`start`, `seed`), and the channel readers that stage
//! what they capture in the journal (`reader`).

use serde::Deserialize;

use mq::MqConfig;

pub mod access;
pub mod capture;
pub mod decode;
pub mod meta;
pub mod mq;
pub mod msg_kind;
pub mod reader;
pub mod seed;
pub mod start;
pub mod watch;

/// One Milvus cluster as the appliance reaches it: where it keeps its metadata and its message
/// queue (what a task reads it by, as a source), and its public API (what `verify` reads, and
/// what a task writes to, as a target). The config names clusters (`[clusters.NAME]`); its
/// `[source]` table is the cluster `source`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    pub etcd_endpoints: Vec<String>,
    /// The source's `etcd.rootPath`; its metadata lives under `{root_path}/meta`.
    pub etcd_root_path: String,
    /// The source's `msgChannel.chanNamePrefix.cluster`: topics are `{prefix}-rootcoord-dml_N`.
    pub channel_prefix: String,
    pub mq: MqConfig,
    /// PEM CA certificate(s) etcd's certificate must chain to. With it, every endpoint uses
    /// TLS (one without a scheme too; an `http://` one is an error); without it, `https://`
    /// endpoints are checked against the system's roots.
    pub etcd_ca_file: Option<std::path::PathBuf>,
    /// The source's public Milvus API (`http(s)://host:port`), read by `verify` for rows and
    /// counts. Messages and metadata do not need it.
    pub milvus_uri: Option<String>,
    /// `user:password` for `milvus_uri`, when the source has authentication on.
    pub milvus_token: Option<crate::model::Secret>,
    /// PEM CA certificate(s) an `https://` `milvus_uri` must chain to.
    pub milvus_ca_file: Option<std::path::PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            etcd_endpoints: vec!["127.0.0.1:2379".into()],
            etcd_root_path: "by-dev".into(),
            channel_prefix: "by-dev".into(),
            mq: MqConfig::Kafka {
                brokers: "127.0.0.1:9092".into(),
                tls: false,
                ca_file: None,
            },
            etcd_ca_file: None,
            milvus_uri: None,
            milvus_token: None,
            milvus_ca_file: None,
        }
    }
}

impl ClusterConfig {
    /// The source's message queue.
    pub fn queue(
        &self,
        runtime: tokio::runtime::Handle,
    ) -> Result<std::sync::Arc<dyn mq::MessageQueue>, mq::MqError> {
        self.mq.connect(self, runtime)
    }

    /// The source's etcd metadata.
    pub async fn meta(&self) -> Result<meta::SourceMeta, meta::MetaError> {
        let ca = match &self.etcd_ca_file {
            Some(path) => Some(crate::model::CaFile::read(path)?),
            None => None,
        };
        meta::SourceMeta::connect(&self.etcd_endpoints, &self.etcd_root_path, ca.as_ref()).await
    }

    /// Why `etcd_ca_file` would go unused, if it would: an `http://` endpoint.
    pub fn etcd_ca_without_tls(&self) -> Option<String> {
        self.etcd_ca_file.as_ref()?;
        self.etcd_endpoints
            .iter()
            .find(|e| e.starts_with("http://"))
            .map(|e| format!("etcd endpoint {e} is plain http (use https:// or no scheme)"))
    }
}
