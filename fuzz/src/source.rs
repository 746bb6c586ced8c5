//! The source side's classifiers and positions: what an etcd change means (`meta_watch`,
//! `access_key`) and where a reader stands on a Pulsar or Kafka channel (`mq_position`).

use milvus_cdc::model::{
    MessageId, MqKind, MqPosition, PulsarId, decode_position, encode_position,
};
use milvus_cdc::source::access::{self, AccessEvent};
use milvus_cdc::source::watch::{KeyChange, MetaEvent, classify, stamps};

const META_ROOT: &str = "by-dev/meta";
/// What Milvus writes in place of a deleted value.
const TOMBSTONE: &[u8] = &[0xE2, 0x9B, 0xBC];

/// Splits `data` at the first two `0xFF` bytes (in no UTF-8 key, rare in protobuf values).
fn three(data: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let mut parts = data.splitn(3, |b| *b == 0xFF);
    let mut next = || parts.next().unwrap_or_default();
    (next(), next(), next())
}

/// `meta_watch`: one etcd key change as the metadata watcher reads it. The first byte picks the
/// key's shape (bits 0-2: the kinds Milvus writes, or the input's key itself), whether the value
/// (bit 3) and the value before (bit 4) are there, and the ids (bits 6-7); then key, value and
/// value before,
/// separated by `0xFF`. `classify` returns an event, nothing or an error, never panics; an event
/// says what its value says; a key outside the meta root, a deletion of nothing and a value
/// written again unchanged (but a collection's record: an alter) mean nothing.
pub fn meta_watch(data: &[u8]) {
    let Some((flags, rest)) = data.split_first() else {
        return;
    };
    let (raw_key, value, prev) = three(rest);
    let id = flags >> 6;
    let key = match flags & 7 {
        0 => format!("{META_ROOT}/root-coord/database/aliases/1/a{id}"),
        1 => format!("{META_ROOT}/querycoord-collection-loadinfo/{id}"),
        2 => format!("{META_ROOT}/querycoord-partition-loadinfo/{id}/{id}"),
        3 => format!("{META_ROOT}/root-coord/database/collection-info/1/{id}"),
        4 => format!("{META_ROOT}/snapshots/root-coord/database/aliases/1/a{id}_ts{id}"),
        _ => String::from_utf8_lossy(raw_key).into_owned(),
    };
    let value = (flags & 8 != 0).then_some(value);
    let prev = (flags & 16 != 0).then_some(prev);
    let change = KeyChange {
        key: &key,
        value,
        prev,
    };
    let stamped = stamps(META_ROOT, [key.as_str()]);
    for original in stamped.keys() {
        assert!(original.starts_with(META_ROOT), "{key}: stamps {original}");
    }
    let Ok(event) = classify(META_ROOT, &change) else {
        return;
    };
    let inside = key
        .strip_prefix(META_ROOT)
        .is_some_and(|k| k.starts_with('/'));
    fn live(v: Option<&[u8]>) -> Option<&[u8]> {
        v.filter(|v| *v != TOMBSTONE)
    }
    if !inside || (live(value).is_none() && live(prev).is_none()) {
        assert_eq!(event, None, "{key}: nothing changed, yet {event:?}");
    }
    if let Some(v) = live(value)
        && live(prev) == Some(v)
        && !key.contains("/collection-info/")
        && !key.contains("querycoord-collection-loadinfo")
    {
        assert_eq!(event, None, "{key}: written again unchanged, yet {event:?}");
    }
    if let Some(MetaEvent::AliasSet { alias, .. } | MetaEvent::AliasDropped { alias, .. }) = &event
    {
        assert_eq!(Some(alias.as_str()), key.rsplit('/').next(), "{key}");
    }
}

/// `access_key`: a key under `root-coord/credential/` made, removed or written again (the first
/// byte), the rest its path. Never a panic; nothing for a key written again or for the target's
/// own role and user; an event's names are the key's segments.
pub fn access_key(data: &[u8]) {
    let Some((flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(rel) = std::str::from_utf8(rest) else {
        return;
    };
    let (created, deleted) = (flags & 1 != 0, flags & 2 != 0);
    let path: Vec<&str> = rel.split('/').collect();
    let event = access::classify(&path, created, deleted);
    let Some(event) = event else {
        return;
    };
    assert!(created || deleted, "{rel}: written again, yet {event:?}");
    let names: Vec<&str> = match &event {
        AccessEvent::Role { role, created: c } => {
            assert!(!["admin", "public"].contains(&role.as_str()), "{rel}");
            assert_eq!(*c, created, "{rel}");
            vec!["roles", role]
        }
        AccessEvent::User { user, created: c } => {
            assert_ne!(user, "root", "{rel}");
            assert_eq!(*c, created, "{rel}");
            vec!["users", user]
        }
        AccessEvent::Binding { user, role, .. } => vec!["user-role-mapping", user, role],
        AccessEvent::Privilege {
            grantee_id,
            privilege,
            ..
        } => vec!["grantee-id", grantee_id, privilege],
    };
    assert_eq!(names, path, "{rel}: {event:?}");
}

/// A Pulsar id from 7 bytes: ledger and entry kept small so that ids meet, a batch index from
/// -2 up (-1: a message sent without batching), a partition.
fn pulsar_id(b: &[u8; 7]) -> PulsarId {
    PulsarId {
        ledger: u64::from(b[0] % 4),
        entry: u64::from(b[1] % 4),
        batch: i32::from(b[2] % 6) - 2,
        partition: i32::from(b[3] as i8),
    }
}

fn position(flag: u8, b: &[u8; 7]) -> MqPosition {
    if flag & 2 != 0 {
        return MqPosition::Kafka {
            next_offset: i64::from(i16::from_le_bytes([b[4], b[5]])),
        };
    }
    MqPosition::Pulsar {
        from: pulsar_id(b),
        inclusive: flag & 1 != 0,
    }
}

fn message(b: &[u8; 7]) -> MessageId {
    if b[6] & 1 != 0 {
        return MessageId::Kafka(i64::from(i16::from_le_bytes([b[4], b[5]])));
    }
    MessageId::Pulsar(pulsar_id(b))
}

/// `mq_position`: the first byte's low bit picks the text of a position or the order of ids.
///
/// Text (the rest as a base64 `MsgPosition`, as a create's `positions` or `/cdc` gives it, for
/// either queue): decodes to a position or an error, never a panic; a position read back
/// from its own encoding is the same.
///
/// Order (the rest as two positions and three message ids, 8 bytes each): a message is never
/// admitted after itself, always from itself; a position that admits a message admits every
/// later one; of two positions, the one `cmp_on_channel` puts first admits all the other does.
pub fn mq_position(data: &[u8]) {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let text = String::from_utf8_lossy(rest);
        for kind in [MqKind::Kafka, MqKind::Pulsar] {
            let Ok(position) = decode_position("ch", &text, kind) else {
                continue;
            };
            let again = decode_position("ch", &encode_position("ch", &position, 7), kind);
            assert_eq!(again, Ok(position), "{text:?} read back");
        }
        return;
    }
    let mut chunks = rest.chunks_exact(8).map(|c| {
        let mut b = [0; 7];
        b.copy_from_slice(&c[1..]);
        (c[0], b)
    });
    let (Some(p), Some(q), Some(a), Some(b), Some(c)) = (
        chunks.next(),
        chunks.next(),
        chunks.next(),
        chunks.next(),
        chunks.next(),
    ) else {
        return;
    };
    let (p, q) = (position(p.0, &p.1), position(q.0, &q.1));
    let ids = [message(&a.1), message(&b.1), message(&c.1)];
    for id in &ids {
        assert_eq!(
            MqPosition::after(id).admits(id).ok(),
            Some(false),
            "after {id}"
        );
        let from = match id {
            MessageId::Kafka(offset) => MqPosition::Kafka {
                next_offset: *offset,
            },
            MessageId::Pulsar(id) => MqPosition::Pulsar {
                from: *id,
                inclusive: true,
            },
        };
        assert_eq!(from.admits(id).ok(), Some(true), "from {id}");
    }
    for x in &ids {
        for y in ids.iter().filter(|y| later(y, x)) {
            if p.admits(x).unwrap_or(false) {
                assert_eq!(
                    p.admits(y).ok(),
                    Some(true),
                    "{p} admits {x} but not the later {y}"
                );
            }
        }
        if p.cmp_on_channel(&q) == Some(std::cmp::Ordering::Less) && q.admits(x).unwrap_or(false) {
            assert_eq!(
                p.admits(x).ok(),
                Some(true),
                "{p} is before {q}, which admits {x}, but it does not"
            );
        }
    }
}

/// Whether message `y` comes after `x` on their channel (batch index -1 and 0 are one message).
fn later(y: &MessageId, x: &MessageId) -> bool {
    match (y, x) {
        (MessageId::Kafka(y), MessageId::Kafka(x)) => y > x,
        (MessageId::Pulsar(y), MessageId::Pulsar(x)) => {
            (y.ledger, y.entry, y.batch.max(0)) > (x.ledger, x.entry, x.batch.max(0))
        }
        _ => false,
    }
}
