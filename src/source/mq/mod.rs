//! The source's message queue, Kafka or Pulsar, behind one trait: everything a task asks of a
//! broker. [`MqConfig::connect`] builds it; no code outside this folder knows which queue it is.
//!
//! What it owns: listing the source's channels, what a channel retains, decoding the start
//! positions Milvus records in etcd, and opening a channel at a stored position.
//!
//! Invariant: a queue never decides which messages are new. An adapter may deliver a message
//! again (a Kafka re-fetch, a Pulsar redelivery) or start before the position it was given; the
//! reader keeps only what [`MqPosition::admits`] admits, so neither can stage a message twice.
//! No consumer position is ever stored on the broker: the journal owns positions.

mod kafka;
mod pulsar;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::runtime::Handle;

pub use kafka::KafkaError;
pub use pulsar::PulsarError;

use super::ClusterConfig;
use super::meta::MetaError;
use crate::model::{CaFile, CaFileError, MessageId, MqKind, MqPosition, PositionMismatch, Secret};

/// One fetched message: its id on the channel and its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    pub id: MessageId,
    pub payload: Vec<u8>,
}

/// An open channel.
pub trait ChannelSource {
    /// The next message, or None when none arrived within `timeout`.
    fn poll(&mut self, timeout: Duration) -> Result<Option<Fetched>, MqError>;
}

/// What a broker holds of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retained {
    /// The oldest message still retained, where the broker says (Kafka); None where it does
    /// not (Pulsar), so a start it no longer has cannot be refused beforehand.
    pub oldest: Option<MqPosition>,
    /// Right after the newest message: where a `latest` start reads from.
    pub latest: MqPosition,
}

/// Whether a broker still has what follows a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    /// Every message after the position, as far as the broker says (or it says nothing).
    Everything,
    /// Messages after the position are gone: retention passed it. Offsets never go back, so
    /// one answer settles it.
    Passed,
    /// The channel ends before the position: its topic was deleted and created again, or the
    /// answer was stale (a broker may report its end a moment late). Only an answer that
    /// stays so settles it.
    EndsBefore,
}

impl Retained {
    /// Whether reading from `position` gets every message after it, as far as the broker says
    /// (only a broker that reports its oldest message does).
    pub fn holding(&self, position: &MqPosition) -> Holding {
        use std::cmp::Ordering::Less;
        let Some(oldest) = self.oldest else {
            return Holding::Everything;
        };
        if position.cmp_on_channel(&oldest) == Some(Less) {
            Holding::Passed
        } else if self.latest.cmp_on_channel(position) == Some(Less) {
            Holding::EndsBefore
        } else {
            Holding::Everything
        }
    }
}

/// The source's message queue.
pub trait MessageQueue: Send + Sync {
    fn kind(&self) -> MqKind;

    /// The channels a task reads, sorted: the source's DML channels and its replicate channel.
    fn channels(&self) -> Result<Vec<String>, MqError>;

    /// What the broker retains of `pchannel`.
    fn retained(&self, pchannel: &str) -> Result<Retained, MqError>;

    /// A collection's start position as Milvus records it in etcd (`start_positions`): the id
    /// of its first message, which is itself read.
    fn start_of(&self, recorded: &[u8]) -> Result<MqPosition, MqError>;

    /// Opens `pchannel` for `task` so that every message `from` admits is delivered (earlier
    /// ones may be too). A channel that does not exist yet is an error the reader retries.
    fn open(
        &self,
        task: &str,
        pchannel: &str,
        from: &MqPosition,
    ) -> Result<Box<dyn ChannelSource>, MqError>;
}

#[derive(Debug, thiserror::Error)]
pub enum MqError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Pulsar(#[from] PulsarError),
    #[error(transparent)]
    Position(#[from] PositionMismatch),
    /// A Pulsar source's channels are listed from its etcd.
    #[error("source metadata: {0}")]
    Meta(#[from] MetaError),
    #[error("message queue: {0}")]
    Ca(#[from] CaFileError),
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum MqConfig {
    Kafka {
        brokers: String,
        /// Talk TLS to the brokers (`security.protocol=ssl`), trusting the system's roots
        /// unless `ca_file` is set. Implied by `ca_file`.
        #[serde(default)]
        tls: bool,
        /// PEM CA certificate(s) the brokers' certificates must chain to (`ssl.ca.location`).
        #[serde(default)]
        ca_file: Option<PathBuf>,
    },
    Pulsar {
        /// The service URL, `pulsar://host:6650`, or `pulsar+ssl://host:6651` for TLS.
        url: String,
        /// A JWT for the `token` authentication method; `MILVUS_CDC_PULSAR_TOKEN` overrides it
        /// (`Config::resolve_pulsar_token`, at start-up). Never empty: that is refused there.
        #[serde(default)]
        token: Option<Secret>,
        #[serde(default = "default_pulsar_tenant")]
        tenant: String,
        #[serde(default = "default_pulsar_namespace")]
        namespace: String,
        /// PEM CA certificate(s) a `pulsar+ssl://` broker's certificate may chain to, besides
        /// the system's roots (the client's TLS, OpenSSL, adds them to its default roots).
        #[serde(default)]
        ca_file: Option<PathBuf>,
    },
}

fn default_pulsar_tenant() -> String {
    "public".into()
}

fn default_pulsar_namespace() -> String {
    "default".into()
}

impl MqConfig {
    pub fn kind(&self) -> MqKind {
        match self {
            MqConfig::Kafka { .. } => MqKind::Kafka,
            MqConfig::Pulsar { .. } => MqKind::Pulsar,
        }
    }

    /// The CA file the queue's TLS trusts, if one is configured.
    pub fn ca_file(&self) -> Option<&Path> {
        match self {
            MqConfig::Kafka { ca_file, .. } | MqConfig::Pulsar { ca_file, .. } => {
                ca_file.as_deref()
            }
        }
    }

    /// Why `ca_file` would go unused, if it would: a Pulsar URL that is not `pulsar+ssl://`.
    /// (On Kafka a CA file turns TLS on.)
    pub fn ca_without_tls(&self) -> Option<String> {
        match self {
            MqConfig::Pulsar {
                url,
                ca_file: Some(_),
                ..
            } if !url.starts_with("pulsar+ssl://") => {
                Some(format!("url {url} is not pulsar+ssl://"))
            }
            _ => None,
        }
    }

    /// The queue of `source`. Blocking calls run on `runtime` where the client is async.
    pub fn connect(
        &self,
        source: &ClusterConfig,
        runtime: Handle,
    ) -> Result<Arc<dyn MessageQueue>, MqError> {
        Ok(match self {
            MqConfig::Kafka {
                brokers,
                tls,
                ca_file,
            } => {
                // librdkafka reads the file itself, but its error would not name it.
                if let Some(path) = ca_file {
                    CaFile::read(path)?;
                }
                let settings = kafka::KafkaSettings {
                    brokers: brokers.clone(),
                    tls: *tls || ca_file.is_some(),
                    ca_file: ca_file.clone(),
                };
                Arc::new(kafka::KafkaQueue::connect(
                    settings,
                    &source.channel_prefix,
                )?)
            }
            MqConfig::Pulsar {
                url,
                token,
                tenant,
                namespace,
                ca_file,
            } => Arc::new(pulsar::PulsarQueue {
                settings: pulsar::PulsarSettings {
                    url: url.clone(),
                    token: token.clone(),
                    tenant: tenant.clone(),
                    namespace: namespace.clone(),
                    ca: ca_file.as_deref().map(CaFile::read).transpose()?,
                },
                source: source.clone(),
                runtime,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On Kafka a CA file alone turns TLS on: librdkafka is then asked to read it.
    #[test]
    fn a_kafka_ca_file_means_tls() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let source = ClusterConfig {
            mq: MqConfig::Kafka {
                brokers: "127.0.0.1:9".into(),
                tls: false,
                ca_file: Some("/nonexistent/kafka-ca.pem".into()),
            },
            ..ClusterConfig::default()
        };
        let err = source
            .queue(runtime.handle().clone())
            .err()
            .expect("the CA file is read");
        assert!(
            err.to_string().contains("/nonexistent/kafka-ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn a_pulsar_ca_file_is_read_when_the_queue_is_built() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let source = ClusterConfig {
            mq: MqConfig::Pulsar {
                url: "pulsar+ssl://127.0.0.1:9".into(),
                token: None,
                tenant: "public".into(),
                namespace: "default".into(),
                ca_file: Some("/nonexistent/pulsar-ca.pem".into()),
            },
            ..ClusterConfig::default()
        };
        let err = source
            .queue(runtime.handle().clone())
            .err()
            .expect("the CA file is read");
        assert!(
            err.to_string().contains("/nonexistent/pulsar-ca.pem"),
            "{err}"
        );
    }

    fn kafka(next_offset: i64) -> MqPosition {
        MqPosition::Kafka { next_offset }
    }

    #[test]
    fn a_position_is_held_between_the_oldest_message_and_the_end() {
        let retained = Retained {
            oldest: Some(kafka(10)),
            latest: kafka(20),
        };
        for held in [10, 15, 20] {
            assert_eq!(
                retained.holding(&kafka(held)),
                Holding::Everything,
                "{held}"
            );
        }
        assert_eq!(
            retained.holding(&kafka(9)),
            Holding::Passed,
            "retention passed it"
        );
        assert_eq!(
            retained.holding(&kafka(21)),
            Holding::EndsBefore,
            "the topic restarted its offsets, or the answer is stale"
        );
        let unbounded = Retained {
            oldest: None,
            latest: kafka(0),
        };
        assert_eq!(
            unbounded.holding(&kafka(5)),
            Holding::Everything,
            "a broker that says nothing is not doubted"
        );
    }
}
