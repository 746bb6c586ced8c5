//! Dropping a data message that is byte-identical to a recent one of the same channel.

use std::collections::{HashSet, VecDeque};

use xxhash_rust::xxh3::xxh3_64;

/// Fingerprints of the channel's most recent data messages. A broker or producer retry can store
/// one message twice; two distinct Milvus data messages are never byte-identical (their
/// timestamps and row ids differ), so an exact repeat is dropped rather than applied twice.
#[derive(Default)]
pub(super) struct RecentPayloads {
    set: HashSet<(u64, usize)>,
    order: VecDeque<(u64, usize)>,
}

impl RecentPayloads {
    /// How many of the latest data messages are remembered.
    const WINDOW: usize = 100_000;

    /// True unless `payload` is byte-identical to one of the last [`Self::WINDOW`] seen.
    pub(super) fn first_time(&mut self, payload: &[u8]) -> bool {
        // Every data byte passes through here, so the hash is a fast one (SipHash took a few
        // percent of the appliance's CPU). Payloads carry the stamps and row ids Milvus
        // assigns, so a user cannot craft two that collide.
        let key = (xxh3_64(payload), payload.len());
        if !self.set.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > Self::WINDOW
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::RecentPayloads;

    #[test]
    fn an_exact_repeat_is_recognised_and_a_different_payload_is_not() {
        let mut recent = RecentPayloads::default();
        assert!(recent.first_time(b"insert 1"));
        assert!(recent.first_time(b"insert 2"));
        assert!(!recent.first_time(b"insert 1"));
    }

    #[test]
    fn the_window_is_bounded() {
        let mut recent = RecentPayloads::default();
        for i in 0..RecentPayloads::WINDOW + 10 {
            recent.first_time(&i.to_le_bytes());
        }
        assert_eq!(recent.order.len(), RecentPayloads::WINDOW);
        assert!(
            recent.first_time(&0usize.to_le_bytes()),
            "the oldest fell out of the window"
        );
    }
}
