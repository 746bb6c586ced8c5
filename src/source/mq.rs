//! What a channel reader needs from a message queue, whichever it is: open a channel at a
//! stored position and fetch its messages with their ids. Kafka ([`super::kafka`]) and Pulsar
//! ([`super::pulsar`]) implement it; the reader ([`super::reader`]) knows neither.
//!
//! An adapter may deliver a message again (a Kafka re-fetch, a Pulsar redelivery) or start
//! before the position it was given: the reader decides what is new with
//! [`MqPosition::admits`], never the adapter.

use std::time::Duration;

use super::kafka::KafkaError;
use super::pulsar::PulsarError;
use crate::model::{MessageId, MqPosition, PositionMismatch};

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

/// A message queue that opens channels for one task.
pub trait MqClient: Send + Sync {
    /// Opens `pchannel` so that every message the position admits is delivered (earlier ones may
    /// be delivered too). A channel that does not exist yet is an error the reader retries.
    fn open(&self, pchannel: &str, from: &MqPosition) -> Result<Box<dyn ChannelSource>, MqError>;
}

#[derive(Debug, thiserror::Error)]
pub enum MqError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Pulsar(#[from] PulsarError),
    #[error(transparent)]
    Position(#[from] PositionMismatch),
}
