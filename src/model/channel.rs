//! Channel names. Milvus writes each collection shard (a virtual channel, vchannel) to a
//! physical channel (pchannel, one MQ topic) and names the vchannel after it:
//! `{pchannel}_{collectionID}v{shard}`. Operations that touch no DML channel (index, load,
//! release, flush, database) go to one more topic, `{prefix}-replicate-msg`, which is its own
//! pchannel and vchannel in the journal.

/// The collection id in a virtual channel name `{pchannel}_{collectionID}v{shard}`; lets a
/// message on a physical channel be routed without a metadata lookup.
pub fn vchannel_collection_id(vchannel: &str) -> Option<i64> {
    split_vchannel(vchannel).map(|(_, id)| id)
}

/// The physical channel (MQ topic) a virtual channel lives on. The replicate-msg topic is its
/// own channel in the journal, so it maps to itself: its staged events and their tick live there.
pub fn vchannel_pchannel(vchannel: &str) -> Option<&str> {
    if is_event_channel(vchannel) {
        return Some(vchannel);
    }
    split_vchannel(vchannel).map(|(p, _)| p)
}

const REPLICATE_TOPIC_SUFFIX: &str = "-replicate-msg";

/// The topic where the source's proxy writes the operations that do not go through the DML
/// channels (index, load, release, flush, database): `{prefix}-replicate-msg`.
pub fn replicate_topic(prefix: &str) -> String {
    format!("{prefix}{REPLICATE_TOPIC_SUFFIX}")
}

/// True for a replicate-msg topic name (also the name of its channel in the journal).
pub fn is_replicate_topic(name: &str) -> bool {
    name.len() > REPLICATE_TOPIC_SUFFIX.len() && name.ends_with(REPLICATE_TOPIC_SUFFIX)
}

const META_CHANNEL_SUFFIX: &str = "-etcd-meta";

/// The journal's channel for the changes read from the source's etcd, which Milvus 2.3
/// writes to no topic (aliases, load state of partitions, collection properties):
/// `{prefix}-etcd-meta`.
pub fn meta_channel(prefix: &str) -> String {
    format!("{prefix}{META_CHANNEL_SUFFIX}")
}

pub fn is_meta_channel(name: &str) -> bool {
    name.len() > META_CHANNEL_SUFFIX.len() && name.ends_with(META_CHANNEL_SUFFIX)
}

/// True for the channels of events rather than rows (the replicate channel, the metadata
/// channel): each is its own vchannel, and its events are ordered against the data by their
/// stamps and the vchannels they wait for, not by ticks of their own.
pub fn is_event_channel(name: &str) -> bool {
    is_replicate_topic(name) || is_meta_channel(name)
}

fn split_vchannel(vchannel: &str) -> Option<(&str, i64)> {
    // The physical channel itself contains `_`, so split at the last one.
    let (pchannel, rest) = vchannel.rsplit_once('_')?;
    let (coll, shard) = rest.split_once('v')?;
    if pchannel.is_empty() || parse_id(shard).is_none() {
        return None;
    }
    Some((pchannel, parse_id(coll)?))
}

/// A decimal id as Milvus writes it in names and keys: digits only (no sign, no spaces).
pub fn parse_id(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vchannel_helpers() {
        let v = "by-dev-rootcoord-dml_0_445612345678901234v0";
        assert_eq!(vchannel_collection_id(v), Some(445612345678901234));
        assert_eq!(vchannel_pchannel(v), Some("by-dev-rootcoord-dml_0"));
        assert_eq!(vchannel_collection_id("dml_3_12v15"), Some(12));
        // The replicate channel is its own pchannel, whatever the prefix.
        assert_eq!(
            vchannel_pchannel("by-dev-replicate-msg"),
            Some("by-dev-replicate-msg")
        );
        assert_eq!(
            vchannel_pchannel(&replicate_topic("by_dev_2")),
            Some("by_dev_2-replicate-msg")
        );
        assert_eq!(vchannel_collection_id("by-dev-replicate-msg"), None);
        // So is the metadata channel.
        assert_eq!(
            vchannel_pchannel(&meta_channel("by-dev")),
            Some("by-dev-etcd-meta")
        );
        assert!(is_event_channel("by-dev-etcd-meta") && is_event_channel("by-dev-replicate-msg"));
        assert!(!is_meta_channel("-etcd-meta") && !is_event_channel("by-dev-rootcoord-dml_0"));
        assert!(!is_replicate_topic("-replicate-msg"));
        for bad in [
            "",
            "by-dev-rootcoord-dml_0",
            "by-dev-rootcoord-dml_0_",
            "by-dev-rootcoord-dml_0_123",
            "by-dev-rootcoord-dml_0_123v",
            "by-dev-rootcoord-dml_0_v0",
            "by-dev-rootcoord-dml_0_12a3v0",
            "by-dev-rootcoord-dml_0_+123v0",
            "by-dev-rootcoord-dml_0_123v0x",
            "_123v0",
            "by-dev-rootcoord-dml_0_99999999999999999999v0",
        ] {
            assert_eq!(vchannel_collection_id(bad), None, "{bad}");
            assert_eq!(vchannel_pchannel(bad), None, "{bad}");
        }
    }
}
