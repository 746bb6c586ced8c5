//! Pulsar access: one non-durable reader per task and physical channel.
//!
//! Why a reader (a non-durable, exclusive subscription): the journal owns our positions, so no
//! cursor is kept on the broker, and the subscription is named
//! `milvus-cdc-{task}-{pchannel}-{run}` ([`subscription`]), never one the source Milvus uses, so acknowledging (the crate's reader acknowledges every
//! message it hands out) never moves a cursor of Milvus's own consumers.
//!
//! The broker is asked to start at or before the stored position; which messages are new is
//! decided by the reader with [`MqPosition::admits`] (see `journal::position`), so whether the
//! broker treats a start id as inclusive, and any redelivery, cannot stage a message twice.
//!
//! The crate is async; readers are threads. Each call blocks on the process's tokio runtime.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use prost::Message as _;
use pulsar::consumer::InitialPosition;
use pulsar::message::proto::MessageIdData;
use pulsar::reader::Reader;
use pulsar::{
    Authentication, ConnectionRetryOptions, ConsumerOptions, Pulsar, SubType, TokioExecutor,
};
use tokio::runtime::Handle;
use tracing::{debug, warn};

use super::{ChannelSource, Fetched, MessageQueue, MqError, Retained};
use crate::model::{
    CaFile, MessageId, MqKind, MqPosition, PositionMismatch, PulsarId, Secret, is_replicate_topic,
    message_id_data, pulsar_id, replicate_topic,
};
use crate::source::ClusterConfig;
use crate::source::meta::CollectionMeta;

/// Bounds the connect and subscribe round trips: a silent broker must not hang a reader.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum PulsarError {
    #[error("pulsar {url}: {action}: {source}")]
    Client {
        url: String,
        action: String,
        source: Box<pulsar::Error>,
    },
    #[error("pulsar {url}: {action}: no answer within {timeout:?}")]
    Timeout {
        url: String,
        action: String,
        timeout: Duration,
    },
    #[error("pulsar {url}: the reader of {topic} stopped")]
    Closed { url: String, topic: String },
    #[error("a Pulsar start position of {len} bytes does not decode as a MessageId: {source}")]
    BadStartPosition {
        len: usize,
        source: prost::DecodeError,
    },
}

/// Where the source's Pulsar is and how its topics are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulsarSettings {
    pub url: String,
    /// A JWT, sent with the `token` authentication method; never logged.
    pub token: Option<Secret>,
    pub tenant: String,
    pub namespace: String,
    /// What a `pulsar+ssl://` broker's certificate must chain to; the system's roots when None.
    pub ca: Option<CaFile>,
}

impl PulsarSettings {
    /// Milvus writes a physical channel to this persistent, non-partitioned topic.
    pub fn topic(&self, pchannel: &str) -> String {
        format!("persistent://{}/{}/{pchannel}", self.tenant, self.namespace)
    }
}

/// The subscription of one task on one channel, `milvus-cdc-{task}-{pchannel}-{run}`: never a
/// Milvus one. `run` is new for every open: after a crash the broker keeps the dead process's
/// exclusive consumer until it notices the lost connection, and a second consumer on that name
/// would be refused meanwhile (pulsar-lite was seen refusing it for minutes). A non-durable
/// subscription holds no state worth reusing: the position comes from the journal.
pub fn subscription(task: &str, pchannel: &str, run: &str) -> String {
    format!("milvus-cdc-{task}-{pchannel}-{run}")
}

fn new_run() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// A start position Milvus recorded in etcd (`CollectionInfo.start_positions`): the serialized
/// MessageIdData of the collection's first message on the channel, which is itself read.
pub fn start_position(bytes: &[u8]) -> Result<MqPosition, PulsarError> {
    let id = MessageIdData::decode(bytes).map_err(|source| PulsarError::BadStartPosition {
        len: bytes.len(),
        source,
    })?;
    // The whole entry is included, whatever batch index Milvus's client wrote (its Go client
    // writes 0 for a message sent without batching, which the broker delivers without one):
    // nothing of the collection precedes its own start message in that entry.
    Ok(MqPosition::Pulsar {
        from: PulsarId {
            batch: -1,
            ..pulsar_id(&id)
        },
        inclusive: true,
    })
}

/// The position after the newest message of a topic, as the broker reports it. An empty topic
/// reports ledger and entry -1 (all ones as unsigned): everything that comes is new.
pub fn position_after_last(last: &MessageIdData) -> MqPosition {
    if last.ledger_id == u64::MAX || last.entry_id == u64::MAX {
        return MqPosition::beginning(MqKind::Pulsar);
    }
    MqPosition::after(&MessageId::Pulsar(pulsar_id(last)))
}

/// What to ask the broker for so that every message `from` admits is delivered: a start at or
/// before it. An inclusive start steps back one entry (the broker may treat a start id as
/// exclusive); the messages before `from` that this delivers are dropped by the reader's rule.
fn broker_start(from: &PulsarId, inclusive: bool) -> Option<MessageIdData> {
    if *from == PulsarId::EARLIEST {
        return None;
    }
    if !inclusive {
        return Some(message_id_data(from));
    }
    // The first entry of a ledger has its predecessor in an older ledger we cannot name: then
    // the topic's beginning.
    from.entry.checked_sub(1).map(|entry| {
        message_id_data(&PulsarId {
            entry,
            batch: -1,
            ..*from
        })
    })
}

/// The source's Pulsar. Each call connects anew: a task opens a channel rarely (at its start and
/// after a fault), and a client kept would be one more thing to heal after a broker restart.
pub struct PulsarQueue {
    pub settings: PulsarSettings,
    /// Where the source's etcd is, for its channels, and how its topics are named.
    pub source: ClusterConfig,
    pub runtime: Handle,
}

impl PulsarQueue {
    fn client_error(&self, action: impl Into<String>) -> impl FnOnce(pulsar::Error) -> PulsarError {
        let (url, action) = (self.settings.url.clone(), action.into());
        move |source| PulsarError::Client {
            url,
            action,
            source: Box::new(source),
        }
    }

    fn within<T>(
        &self,
        action: &str,
        work: impl Future<Output = Result<T, PulsarError>>,
    ) -> Result<T, PulsarError> {
        self.runtime
            .block_on(async { tokio::time::timeout(CONNECT_TIMEOUT, work).await })
            .unwrap_or_else(|_| {
                Err(PulsarError::Timeout {
                    url: self.settings.url.clone(),
                    action: action.into(),
                    timeout: CONNECT_TIMEOUT,
                })
            })
    }

    async fn connect(&self) -> Result<Pulsar<TokioExecutor>, PulsarError> {
        // The client's own reconnects give up within seconds: a broker that is away then shows
        // in the task at once, and the reader's own retries (with backoff) take over. Its
        // defaults (12 tries up to 30 s apart) kept a cut broker silent for half a minute.
        let retries = ConnectionRetryOptions {
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            max_retries: 4,
            connection_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(15),
            ..ConnectionRetryOptions::default()
        };
        let mut builder = Pulsar::builder(self.settings.url.clone(), TokioExecutor)
            .with_connection_retry_options(retries);
        if let Some(token) = &self.settings.token {
            builder = builder.with_auth(Authentication {
                name: "token".into(),
                data: token.expose().as_bytes().to_vec(),
            });
        }
        if let Some(ca) = &self.settings.ca {
            builder = builder.with_certificate_chain(ca.pem().to_vec());
        }
        builder.build().await.map_err(self.client_error("connect"))
    }

    async fn reader(
        &self,
        task: &str,
        pchannel: &str,
        options: ConsumerOptions,
    ) -> Result<Reader<Vec<u8>, TokioExecutor>, PulsarError> {
        let client = self.connect().await?;
        let topic = self.settings.topic(pchannel);
        client
            .reader()
            .with_topic(topic.clone())
            .with_subscription(subscription(task, pchannel, &new_run()))
            .with_subscription_type(SubType::Exclusive)
            .with_consumer_name(format!("milvus-cdc-{task}"))
            .with_options(options)
            .into_reader::<Vec<u8>>()
            .await
            .map_err(self.client_error(format!("open a reader on {topic}")))
    }

    /// The position right after the newest message of `pchannel`.
    fn latest(&self, pchannel: &str) -> Result<MqPosition, PulsarError> {
        let action = format!("last message id of {}", self.settings.topic(pchannel));
        self.within(&action, async {
            // A reader of its own, named apart from every task's.
            let options = ConsumerOptions::default();
            let mut reader = self.reader("probe", pchannel, options).await?;
            let last = reader
                .get_last_message_id()
                .await
                .map_err(self.client_error(action.clone()))?;
            Ok(position_after_last(&last))
        })
    }
}

impl MessageQueue for PulsarQueue {
    fn kind(&self) -> MqKind {
        MqKind::Pulsar
    }

    /// The physical channels the source's collections name in etcd, and the replicate channel:
    /// a Pulsar client may not be allowed to list a namespace.
    fn channels(&self) -> Result<Vec<String>, MqError> {
        let collections = self
            .runtime
            .block_on(async { self.source.meta().await?.collections().await })?;
        Ok(channels_of(&collections, &self.source.channel_prefix))
    }

    fn retained(&self, pchannel: &str) -> Result<Retained, MqError> {
        let latest = match self.latest(pchannel) {
            Ok(latest) => latest,
            // Milvus creates its replicate topic on first use: until then all that comes is new.
            Err(err) if is_replicate_topic(pchannel) => {
                warn!(channel = pchannel, %err, "replicate topic not readable yet");
                MqPosition::beginning(MqKind::Pulsar)
            }
            Err(err) => return Err(err.into()),
        };
        Ok(Retained {
            oldest: None,
            latest,
        })
    }

    fn start_of(&self, recorded: &[u8]) -> Result<MqPosition, MqError> {
        Ok(start_position(recorded)?)
    }

    fn open(
        &self,
        task: &str,
        pchannel: &str,
        from: &MqPosition,
    ) -> Result<Box<dyn ChannelSource>, MqError> {
        let MqPosition::Pulsar { from, inclusive } = from else {
            return Err(PositionMismatch {
                message: "Pulsar",
                position: *from,
            }
            .into());
        };
        let options = match broker_start(from, *inclusive) {
            Some(start) => ConsumerOptions::default().starting_on_message(start),
            None => ConsumerOptions::default().with_initial_position(InitialPosition::Earliest),
        };
        debug!(task, channel = pchannel, start = ?options.start_message_id, "opening");
        let reader = self.within(
            &format!("open {pchannel}"),
            self.reader(task, pchannel, options),
        )?;
        Ok(Box::new(PulsarChannel {
            reader,
            runtime: self.runtime.clone(),
            url: self.settings.url.clone(),
            topic: self.settings.topic(pchannel),
        }))
    }
}

/// Every physical channel `collections` use, and the replicate channel; sorted.
fn channels_of(collections: &[CollectionMeta], prefix: &str) -> Vec<String> {
    collections
        .iter()
        .flat_map(|c| c.physical_channels.iter().cloned())
        .chain([replicate_topic(prefix)])
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// One open channel.
pub struct PulsarChannel {
    reader: Reader<Vec<u8>, TokioExecutor>,
    runtime: Handle,
    url: String,
    topic: String,
}

impl ChannelSource for PulsarChannel {
    fn poll(&mut self, timeout: Duration) -> Result<Option<Fetched>, MqError> {
        let next = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, self.reader.next()).await });
        match next {
            Err(_elapsed) => Ok(None),
            Ok(None) => Err(PulsarError::Closed {
                url: self.url.clone(),
                topic: self.topic.clone(),
            }
            .into()),
            Ok(Some(Err(source))) => Err(PulsarError::Client {
                url: self.url.clone(),
                action: format!("consume {}", self.topic),
                source: Box::new(source),
            }
            .into()),
            Ok(Some(Ok(message))) => Ok(Some(Fetched {
                id: MessageId::Pulsar(pulsar_id(message.message_id())),
                payload: message.payload.data,
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ledger: u64, entry: u64, batch: i32) -> PulsarId {
        PulsarId {
            ledger,
            entry,
            batch,
            partition: -1,
        }
    }

    #[test]
    fn a_channel_is_read_from_its_persistent_topic_under_a_subscription_of_its_own() {
        let settings = PulsarSettings {
            url: "pulsar://127.0.0.1:6650".into(),
            token: None,
            tenant: "public".into(),
            namespace: "default".into(),
            ca: None,
        };
        assert_eq!(
            settings.topic("by-dev-rootcoord-dml_3"),
            "persistent://public/default/by-dev-rootcoord-dml_3"
        );
        let sub = subscription("t1", "by-dev-rootcoord-dml_3", "0a1b2c3d");
        assert_eq!(sub, "milvus-cdc-t1-by-dev-rootcoord-dml_3-0a1b2c3d");
        assert_ne!(
            new_run(),
            new_run(),
            "each open subscribes under a new name"
        );
        // Milvus 2.3 names its own subscriptions after its nodes and channels (`by-dev-...`).
        assert!(!sub.starts_with("by-dev"));
    }

    #[test]
    fn the_broker_is_asked_to_start_at_or_before_the_stored_position() {
        // After a message: from that message (a broker that repeats it is filtered).
        let after = broker_start(&id(5, 9, -1), false).unwrap();
        assert_eq!((after.ledger_id, after.entry_id), (5, 9));
        // A start position that must itself be read: one entry before it.
        let from = broker_start(&id(5, 9, 2), true).unwrap();
        assert_eq!(
            (from.ledger_id, from.entry_id, from.batch_index),
            (5, 8, Some(-1))
        );
        // Nothing before it can be named, or everything is wanted: the topic's beginning.
        assert!(broker_start(&id(5, 0, -1), true).is_none());
        assert!(broker_start(&PulsarId::EARLIEST, true).is_none());
    }

    #[test]
    fn a_milvus_start_position_decodes_to_an_inclusive_position() {
        let bytes = message_id_data(&id(12, 34, 0)).encode_to_vec();
        assert_eq!(
            start_position(&bytes).unwrap(),
            MqPosition::Pulsar {
                from: id(12, 34, -1),
                inclusive: true
            }
        );
        assert!(start_position(&[0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn latest_on_an_empty_topic_reads_whatever_comes() {
        let empty = MessageIdData {
            ledger_id: u64::MAX,
            entry_id: u64::MAX,
            ..Default::default()
        };
        assert_eq!(
            position_after_last(&empty),
            MqPosition::Pulsar {
                from: PulsarId::EARLIEST,
                inclusive: true
            }
        );
        let last = message_id_data(&id(3, 7, -1));
        let position = position_after_last(&last);
        assert!(!position.admits(&MessageId::Pulsar(id(3, 7, -1))).unwrap());
        assert!(position.admits(&MessageId::Pulsar(id(3, 8, -1))).unwrap());
    }

    #[test]
    fn the_channels_are_the_collections_physical_channels_and_the_replicate_channel() {
        let on = |channel: &str| CollectionMeta {
            physical_channels: vec![channel.into()],
            ..Default::default()
        };
        let collections = [
            on("by-dev-rootcoord-dml_1"),
            on("by-dev-rootcoord-dml_0"),
            on("by-dev-rootcoord-dml_1"),
        ];
        assert_eq!(
            channels_of(&collections, "by-dev"),
            [
                "by-dev-replicate-msg",
                "by-dev-rootcoord-dml_0",
                "by-dev-rootcoord-dml_1"
            ]
        );
    }
}
