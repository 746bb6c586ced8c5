//! The source stage: everything about the source Milvus. Its etcd metadata (`meta`), its message
//! queue (`mq`), decoding its messages (`decode`) and capturing them as changes of a task
//! (`capture`), where a new task starts (`start`, `seed`), and the channel readers that stage
//! what they capture in the journal (`reader`).

use serde::Deserialize;

use mq::MqConfig;

pub mod capture;
pub mod decode;
pub mod meta;
pub mod mq;
pub mod reader;
pub mod seed;
pub mod start;

/// Where the source Milvus keeps its metadata and its message queue.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SourceConfig {
    pub etcd_endpoints: Vec<String>,
    /// The source's `etcd.rootPath`; its metadata lives under `{root_path}/meta`.
    pub etcd_root_path: String,
    /// The source's `msgChannel.chanNamePrefix.cluster`: topics are `{prefix}-rootcoord-dml_N`.
    pub channel_prefix: String,
    pub mq: MqConfig,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            etcd_endpoints: vec!["127.0.0.1:2379".into()],
            etcd_root_path: "by-dev".into(),
            channel_prefix: "by-dev".into(),
            mq: MqConfig::Kafka {
                brokers: "127.0.0.1:9092".into(),
            },
        }
    }
}

impl SourceConfig {
    /// The source's message queue.
    pub fn queue(
        &self,
        runtime: tokio::runtime::Handle,
    ) -> Result<std::sync::Arc<dyn mq::MessageQueue>, mq::MqError> {
        self.mq.connect(self, runtime)
    }

    /// The source's etcd metadata.
    pub async fn meta(&self) -> Result<meta::SourceMeta, meta::MetaError> {
        meta::SourceMeta::connect(&self.etcd_endpoints, &self.etcd_root_path).await
    }
}
