//! Where a new task starts reading each channel: one decision from what the create asked (a
//! position given for the channel, else `latest` or `earliest`), what the broker retains there,
//! and where the in-scope collections on the channel started. Pure, so it is tested as a table.
//!
//! Invariant: a start is never moved later than asked. A position or a collection start the
//! broker no longer retains is refused with the reason; reading from a later point would skip
//! changes without anyone deciding so.

use std::cmp::Ordering;

use super::mq::Retained;
use crate::model::{MqKind, MqPosition, StartPosition, is_replicate_topic};

/// What is staged with a channel's start position, so the target gets what the task will not
/// read from the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seeds {
    /// Nothing: the channel is read from before its collections were created.
    None,
    /// The existing collections on the channel are created on the target first.
    Collections,
    /// On the replicate channel: the existing collections' indexes and load state.
    Operations,
}

/// Where one collection starts on the channel, as Milvus recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionStart {
    pub collection: String,
    pub position: MqPosition,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    #[error("positions names channel {0}, which the source does not have")]
    UnknownChannel(String),
    #[error("position of {channel} is not a {expected} position: {given}")]
    WrongQueue {
        channel: String,
        expected: MqKind,
        given: MqPosition,
    },
    #[error(
        "position {given} of {channel} is outside what the broker retains there ({oldest} to \
         {latest}): the changes before it are gone or it lies in the future"
    )]
    PositionNotRetained {
        channel: String,
        given: MqPosition,
        oldest: MqPosition,
        latest: MqPosition,
    },
    #[error(
        "collection {collection} starts at {start} of {channel}, but the broker retains that \
         channel only from {oldest}: its oldest changes are gone. Create the task with \
         start_position \"latest\" and copy the existing data another way (for example a backup)"
    )]
    StartNotRetained {
        collection: String,
        channel: String,
        start: MqPosition,
        oldest: MqPosition,
    },
    #[error(
        "collection {collection} has a start position on {channel} that does not decode: {reason}"
    )]
    BadCollectionStart {
        collection: String,
        channel: String,
        reason: String,
    },
}

/// Where `channel` is read from, and what is staged with that position. `collections` (where
/// the in-scope collections on the channel started) is asked only where the table needs it.
///
/// | channel   | asked              | reads from                             | seeds       |
/// |-----------|--------------------|----------------------------------------|-------------|
/// | any       | a given position   | it (refused outside what is retained)  | as `latest` |
/// | DML       | `latest`           | after the newest message               | collections |
/// | DML       | `earliest`         | the oldest collection start, else as `latest` without seeds | none |
/// | replicate | `latest`           | after the newest message               | operations  |
/// | replicate | `earliest`         | the oldest message retained            | none        |
pub fn channel_start(
    channel: &str,
    given: Option<MqPosition>,
    start: StartPosition,
    retained: &Retained,
    collections: impl FnOnce() -> Result<Vec<CollectionStart>, StartError>,
) -> Result<(MqPosition, Seeds), StartError> {
    let replicate = is_replicate_topic(channel);
    let seeds_from_now = if replicate {
        Seeds::Operations
    } else {
        Seeds::Collections
    };
    let before = |a: &MqPosition, b: &MqPosition| a.cmp_on_channel(b) == Some(Ordering::Less);
    if let Some(given) = given {
        let expected = retained.latest.kind();
        if given.kind() != expected {
            return Err(StartError::WrongQueue {
                channel: channel.to_owned(),
                expected,
                given,
            });
        }
        if let Some(oldest) = retained.oldest
            && (before(&given, &oldest) || before(&retained.latest, &given))
        {
            return Err(StartError::PositionNotRetained {
                channel: channel.to_owned(),
                given,
                oldest,
                latest: retained.latest,
            });
        }
        return Ok((given, seeds_from_now));
    }
    match start {
        StartPosition::Latest | StartPosition::Snapshot | StartPosition::Repair => {
            Ok((retained.latest, seeds_from_now))
        }
        // The replicate channel names collections, not channels: all it retains is read, and
        // capture keeps what concerns the in-scope collections (not older ones of a name).
        // Where the broker does not say what it retains, reading from the beginning delivers it.
        StartPosition::Earliest if replicate => Ok((
            retained
                .oldest
                .unwrap_or(MqPosition::beginning(retained.latest.kind())),
            Seeds::None,
        )),
        StartPosition::Earliest => {
            let collections = collections()?;
            let Some(first) = collections.iter().reduce(|a, b| {
                if before(&b.position, &a.position) {
                    b
                } else {
                    a
                }
            }) else {
                // No in-scope collection lives here yet: those created later are read as they come.
                return Ok((retained.latest, Seeds::None));
            };
            if let Some(oldest) = retained.oldest
                && before(&first.position, &oldest)
            {
                return Err(StartError::StartNotRetained {
                    collection: first.collection.clone(),
                    channel: channel.to_owned(),
                    start: first.position,
                    oldest,
                });
            }
            Ok((first.position, Seeds::None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PulsarId;

    const DML: &str = "by-dev-rootcoord-dml_0";
    const REPLICATE: &str = "by-dev-replicate-msg";

    fn kafka(next_offset: i64) -> MqPosition {
        MqPosition::Kafka { next_offset }
    }

    fn pulsar(entry: u64, inclusive: bool) -> MqPosition {
        MqPosition::Pulsar {
            from: PulsarId {
                ledger: 7,
                entry,
                batch: -1,
                partition: -1,
            },
            inclusive,
        }
    }

    /// A Kafka channel retaining offsets 100 to 900.
    const KAFKA: Retained = Retained {
        oldest: Some(MqPosition::Kafka { next_offset: 100 }),
        latest: MqPosition::Kafka { next_offset: 900 },
    };

    /// A Pulsar channel: what it retains is not known.
    fn pulsar_channel() -> Retained {
        Retained {
            oldest: None,
            latest: pulsar(50, false),
        }
    }

    /// Collection starts a decision must not need.
    fn none() -> Result<Vec<CollectionStart>, StartError> {
        Err(StartError::UnknownChannel(
            "collection starts asked for".into(),
        ))
    }

    fn starts(list: &[(&str, MqPosition)]) -> Vec<CollectionStart> {
        list.iter()
            .map(|(collection, position)| CollectionStart {
                collection: (*collection).to_owned(),
                position: *position,
            })
            .collect()
    }

    /// channel, given position, start, retained, collection starts => reads from, seeds
    type Row<'a> = (
        &'a str,
        Option<MqPosition>,
        StartPosition,
        &'a Retained,
        &'a [CollectionStart],
        (MqPosition, Seeds),
    );

    #[test]
    fn the_decision_table() {
        use StartPosition::{Earliest, Latest};
        let on_kafka = starts(&[("b", kafka(500)), ("a", kafka(120))]);
        let on_pulsar = starts(&[("b", pulsar(20, true)), ("a", pulsar(9, true))]);
        let pulsar = pulsar_channel();
        #[rustfmt::skip]
        let table: [Row; 14] = [
            (DML, None, Latest, &KAFKA, &on_kafka, (kafka(900), Seeds::Collections)),
            (DML, None, Earliest, &KAFKA, &on_kafka, (kafka(120), Seeds::None)),
            (DML, None, Earliest, &KAFKA, &[], (kafka(900), Seeds::None)),
            (DML, Some(kafka(100)), Latest, &KAFKA, &on_kafka, (kafka(100), Seeds::Collections)),
            (DML, Some(kafka(900)), Earliest, &KAFKA, &on_kafka, (kafka(900), Seeds::Collections)),
            (REPLICATE, None, Latest, &KAFKA, &[], (kafka(900), Seeds::Operations)),
            (REPLICATE, None, Earliest, &KAFKA, &[], (kafka(100), Seeds::None)),
            (REPLICATE, Some(kafka(300)), Earliest, &KAFKA, &[], (kafka(300), Seeds::Operations)),
            (DML, None, Latest, &pulsar, &on_pulsar, (self::pulsar(50, false), Seeds::Collections)),
            (DML, None, Earliest, &pulsar, &on_pulsar, (self::pulsar(9, true), Seeds::None)),
            (DML, None, Earliest, &pulsar, &[], (self::pulsar(50, false), Seeds::None)),
            (DML, Some(self::pulsar(3, false)), Earliest, &pulsar, &on_pulsar, (self::pulsar(3, false), Seeds::Collections)),
            (REPLICATE, None, Latest, &pulsar, &[], (self::pulsar(50, false), Seeds::Operations)),
            (REPLICATE, None, Earliest, &pulsar, &[], (MqPosition::beginning(MqKind::Pulsar), Seeds::None)),
        ];
        for (row, (channel, given, start, retained, collections, expected)) in
            table.into_iter().enumerate()
        {
            assert_eq!(
                channel_start(channel, given, start, retained, || Ok(collections.to_vec())),
                Ok(expected),
                "row {row}: {channel} {given:?} {start:?}"
            );
        }
    }

    #[test]
    fn a_given_position_outside_what_the_broker_retains_is_refused() {
        for given in [kafka(99), kafka(901)] {
            assert!(matches!(
                channel_start(DML, Some(given), StartPosition::Latest, &KAFKA, none),
                Err(StartError::PositionNotRetained { .. })
            ));
        }
    }

    #[test]
    fn a_collection_start_the_broker_no_longer_retains_is_refused_not_moved_later() {
        let collections = starts(&[("new", kafka(400)), ("old", kafka(40))]);
        assert_eq!(
            channel_start(DML, None, StartPosition::Earliest, &KAFKA, || Ok(
                collections
            )),
            Err(StartError::StartNotRetained {
                collection: "old".into(),
                channel: DML.into(),
                start: kafka(40),
                oldest: kafka(100),
            })
        );
    }

    #[test]
    fn a_position_of_the_other_queue_is_refused() {
        let refused = channel_start(
            DML,
            Some(pulsar(1, true)),
            StartPosition::Latest,
            &KAFKA,
            none,
        );
        assert!(matches!(
            refused,
            Err(StartError::WrongQueue {
                expected: MqKind::Kafka,
                ..
            })
        ));
        let refused = channel_start(
            DML,
            Some(kafka(1)),
            StartPosition::Latest,
            &pulsar_channel(),
            none,
        );
        assert!(matches!(
            refused,
            Err(StartError::WrongQueue {
                expected: MqKind::Pulsar,
                ..
            })
        ));
    }
}
