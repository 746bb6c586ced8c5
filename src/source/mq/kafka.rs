//! Kafka access: one consumer per physical channel, assigned to partition 0 at an explicit
//! offset. No consumer group offsets are ever committed: the journal owns our positions.

use std::path::PathBuf;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{ChannelSource, Fetched, MessageQueue, MqError, Retained};
use crate::model::{MessageId, MqKind, MqPosition, PositionMismatch, replicate_topic};

/// Milvus writes every channel to partition 0 of its topic.
const PARTITION: i32 = 0;
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka {brokers}: {action}: {source}")]
    Client {
        brokers: String,
        action: String,
        source: Box<rdkafka::error::KafkaError>,
    },
    #[error(
        "a start position of {len} bytes is not a Kafka offset (8 bytes): is the source on \
         another message queue?"
    )]
    BadStartPosition { len: usize },
}

/// Where the brokers are and how to talk to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    pub brokers: String,
    /// `security.protocol=ssl`.
    pub tls: bool,
    /// The CA the brokers' certificates must chain to; the system's roots when None.
    pub ca_file: Option<PathBuf>,
}

impl KafkaSettings {
    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        if self.tls {
            config.set("security.protocol", "ssl");
            if let Some(ca) = &self.ca_file {
                config.set("ssl.ca.location", ca.to_string_lossy());
            }
        }
        config
    }
}

fn client(settings: &KafkaSettings) -> Result<BaseConsumer, KafkaError> {
    let brokers = &settings.brokers;
    settings
        .client_config()
        // Required by the client; never used to store offsets.
        .set("group.id", "milvus-cdc")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        // Never jump to another offset on its own (that would skip or repeat changes): report it.
        .set("auto.offset.reset", "error")
        // Bound what librdkafka prefetches per channel: the backlog belongs in the journal.
        // Milvus writes one partition per topic, so one fetch may carry the whole bound.
        .set("fetch.max.bytes", "8388608")
        .set("max.partition.fetch.bytes", "8388608")
        .set("queued.max.messages.kbytes", "4096")
        // A full prefetch queue pauses fetching for this long (1 s by default): reading a
        // backlog stalled a second at a time. Resume almost as soon as the reader drained it.
        .set("fetch.queue.backoff.ms", "5")
        // Requests are small and answered at once: with Nagle's algorithm on, a request sent
        // while the broker delays its ACK waits for it (tens of milliseconds per fetch).
        .set("socket.nagle.disable", "true")
        .create()
        .map_err(|source| KafkaError::Client {
            brokers: brokers.into(),
            action: "create consumer".into(),
            source: Box::new(source),
        })
}

/// The broker's metadata: which channels exist and what they retain. One client, reused.
pub struct Broker {
    consumer: BaseConsumer,
    brokers: String,
}

impl Broker {
    pub fn connect(settings: &KafkaSettings) -> Result<Self, KafkaError> {
        Ok(Self {
            consumer: client(settings)?,
            brokers: settings.brokers.clone(),
        })
    }

    /// Every topic on the broker.
    fn topics(&self) -> Result<Vec<String>, KafkaError> {
        let metadata = self
            .consumer
            .fetch_metadata(None, METADATA_TIMEOUT)
            .map_err(|source| KafkaError::Client {
                brokers: self.brokers.clone(),
                action: "list topics".into(),
                source: Box::new(source),
            })?;
        Ok(metadata
            .topics()
            .iter()
            .map(|t| t.name().to_owned())
            .collect())
    }

    /// The channels a task reads: the DML channels, and the replicate-msg topic once the
    /// source has written to it (Milvus creates it on first use).
    pub fn channel_topics(&self, prefix: &str) -> Result<Vec<String>, KafkaError> {
        let all = self.topics()?;
        let replicate = replicate_topic(prefix);
        let mut topics = dml_topic_names(prefix, all.iter().map(String::as_str));
        if all.contains(&replicate) {
            topics.push(replicate);
        }
        Ok(topics)
    }

    /// (low, high) watermarks of a channel: the first retained offset and the next offset to be written.
    pub fn watermarks(&self, topic: &str) -> Result<(i64, i64), KafkaError> {
        self.consumer
            .fetch_watermarks(topic, PARTITION, METADATA_TIMEOUT)
            .map_err(|source| KafkaError::Client {
                brokers: self.brokers.clone(),
                action: format!("watermarks of {topic}"),
                source: Box::new(source),
            })
    }
}

/// The DML channels (`{prefix}-rootcoord-dml_N`) among `names`, sorted.
fn dml_topic_names<'a>(prefix: &str, names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let stem = format!("{prefix}-rootcoord-dml_");
    let mut topics: Vec<String> = names
        .filter(|name| {
            name.strip_prefix(&stem)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_owned)
        .collect();
    topics.sort();
    topics
}

/// A consumer of one channel.
pub struct ChannelConsumer {
    consumer: BaseConsumer,
    brokers: String,
    topic: String,
}

impl ChannelConsumer {
    pub fn open(
        settings: &KafkaSettings,
        topic: &str,
        next_offset: i64,
    ) -> Result<Self, KafkaError> {
        let brokers = &settings.brokers;
        let consumer = client(settings)?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, PARTITION, Offset::Offset(next_offset))
            .map_err(|source| KafkaError::Client {
                brokers: brokers.into(),
                action: format!("assign {topic}"),
                source: Box::new(source),
            })?;
        consumer
            .assign(&assignment)
            .map_err(|source| KafkaError::Client {
                brokers: brokers.into(),
                action: format!("assign {topic}"),
                source: Box::new(source),
            })?;
        Ok(Self {
            consumer,
            brokers: brokers.into(),
            topic: topic.into(),
        })
    }

    /// The next message, or None when none arrived within `timeout`.
    pub fn poll(&self, timeout: Duration) -> Result<Option<Fetched>, KafkaError> {
        match self.consumer.poll(timeout) {
            None => Ok(None),
            Some(Ok(message)) => Ok(Some(Fetched {
                id: MessageId::Kafka(message.offset()),
                payload: message.payload().unwrap_or_default().to_vec(),
            })),
            Some(Err(source)) => Err(KafkaError::Client {
                brokers: self.brokers.clone(),
                action: format!("consume {}", self.topic),
                source: Box::new(source),
            }),
        }
    }
}

impl ChannelSource for ChannelConsumer {
    fn poll(&mut self, timeout: Duration) -> Result<Option<Fetched>, MqError> {
        Ok(ChannelConsumer::poll(self, timeout)?)
    }
}

/// The source's Kafka: one metadata client for the process, kept (librdkafka takes about
/// 100 ms to tear a client down, which every create would otherwise wait for), and one consumer
/// per channel reader.
pub struct KafkaQueue {
    settings: KafkaSettings,
    prefix: String,
    metadata: Broker,
}

impl KafkaQueue {
    pub fn connect(settings: KafkaSettings, prefix: &str) -> Result<Self, KafkaError> {
        Ok(Self {
            metadata: Broker::connect(&settings)?,
            settings,
            prefix: prefix.into(),
        })
    }
}

impl MessageQueue for KafkaQueue {
    fn kind(&self) -> MqKind {
        MqKind::Kafka
    }

    fn channels(&self) -> Result<Vec<String>, MqError> {
        Ok(self.metadata.channel_topics(&self.prefix)?)
    }

    fn retained(&self, pchannel: &str) -> Result<Retained, MqError> {
        let (low, high) = match self.metadata.watermarks(pchannel) {
            Ok(bounds) => bounds,
            // A topic Milvus has not written yet (its replicate channel, before the first
            // operation that goes there): nothing in it to lose, and nothing to report.
            Err(KafkaError::Client { source, .. }) if no_such_topic(&source) => {
                return Ok(Retained {
                    oldest: None,
                    latest: MqPosition::beginning(MqKind::Kafka),
                });
            }
            Err(err) => return Err(err.into()),
        };
        Ok(Retained {
            oldest: Some(MqPosition::Kafka { next_offset: low }),
            latest: MqPosition::Kafka { next_offset: high },
        })
    }

    fn start_of(&self, recorded: &[u8]) -> Result<MqPosition, MqError> {
        // Milvus writes a Kafka message id as the offset, 8 bytes little-endian.
        let bytes: [u8; 8] = recorded
            .try_into()
            .map_err(|_| KafkaError::BadStartPosition {
                len: recorded.len(),
            })?;
        Ok(MqPosition::Kafka {
            next_offset: i64::from_le_bytes(bytes),
        })
    }

    /// Partition 0 of the channel's topic, at the stored offset.
    fn open(
        &self,
        _task: &str,
        pchannel: &str,
        from: &MqPosition,
    ) -> Result<Box<dyn ChannelSource>, MqError> {
        let MqPosition::Kafka { next_offset } = from else {
            return Err(PositionMismatch {
                message: "Kafka",
                position: *from,
            }
            .into());
        };
        Ok(Box::new(ChannelConsumer::open(
            &self.settings,
            pchannel,
            *next_offset,
        )?))
    }
}

/// Whether the broker answered that the topic does not exist.
fn no_such_topic(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode::*;
    matches!(
        error.rdkafka_error_code(),
        Some(UnknownPartition | UnknownTopic | UnknownTopicOrPartition)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(tls: bool, ca_file: Option<&str>) -> KafkaSettings {
        KafkaSettings {
            brokers: "127.0.0.1:9".into(),
            tls,
            ca_file: ca_file.map(PathBuf::from),
        }
    }

    #[test]
    fn tls_settings_reach_the_client() {
        let plain = settings(false, None).client_config();
        assert_eq!(plain.get("security.protocol"), None);
        let system_roots = settings(true, None).client_config();
        assert_eq!(system_roots.get("security.protocol"), Some("ssl"));
        assert_eq!(system_roots.get("ssl.ca.location"), None);
        let own_ca = settings(true, Some("/etc/cdc/ca.pem")).client_config();
        assert_eq!(own_ca.get("security.protocol"), Some("ssl"));
        assert_eq!(own_ca.get("ssl.ca.location"), Some("/etc/cdc/ca.pem"));
    }

    /// librdkafka reads the CA file when the client is created, which it can only do when it
    /// was built with SSL (without, it refuses `security.protocol=ssl` itself).
    #[test]
    fn the_client_speaks_tls() {
        let err = client(&settings(true, Some("/nonexistent/ca.pem")))
            .err()
            .expect("a missing CA file is refused");
        assert!(err.to_string().contains("ssl.ca.location failed"), "{err}");
        client(&settings(false, None)).expect("a plaintext client needs no file");
    }
}
