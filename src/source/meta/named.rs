//! Finding a collection by its name, as the replicate-msg events name theirs.
//!
//! Only a collection's value holds its name, so every collection-info value is looked at on
//! each lookup. Reading them all from etcd each time would cost each event the size of the
//! whole source; instead the values are kept ([`PrefixValues`]) and each lookup reads only
//! the keys modified since the last.

use std::collections::{BTreeMap, HashSet};

use super::{CollectionMeta, MetaError, SourceMeta, find_named};

/// Where collection-info values are: under databases, and (collections older than databases)
/// on their own.
const COLLECTION_VALUES: [&str; 2] = [
    "root-coord/database/collection-info/",
    "root-coord/collection/",
];

/// The values under one prefix as of revision `as_of`.
///
/// Invariant: a key's value at a given `mod_revision` never changes, so a kept value of a key
/// not modified since `as_of` is the value etcd holds; the keys modified since are read again.
/// Keys deleted since are the only ones a read of modified keys cannot show: they are noticed
/// by the count of keys under the prefix, which is then below the number kept (every live key
/// is kept: it was there at `as_of`, or was modified since), and the keys are listed again.
#[derive(Debug, Default)]
pub(super) struct PrefixValues {
    /// 0: nothing read yet.
    as_of: i64,
    /// In key order, as etcd lists them.
    values: BTreeMap<String, Vec<u8>>,
}

impl PrefixValues {
    /// Takes `modified`, the keys modified after `as_of` read at revision `rev`; true when
    /// the values kept are then all of the `count` keys there are.
    fn take_modified(&mut self, rev: i64, modified: Vec<(String, Vec<u8>)>, count: usize) -> bool {
        self.values.extend(modified);
        self.as_of = rev;
        self.values.len() == count
    }

    /// Drops the keys not in `listed`, all the keys under the prefix at `as_of`.
    fn keep_only(&mut self, listed: &HashSet<String>) {
        self.values.retain(|key, _| listed.contains(key));
    }

    fn replace(&mut self, rev: i64, all: Vec<(String, Vec<u8>)>) {
        self.values = all.into_iter().collect();
        self.as_of = rev;
    }

    fn pairs(&self) -> impl Iterator<Item = (String, Vec<u8>)> + '_ {
        self.values.iter().map(|(k, v)| (k.clone(), v.clone()))
    }
}

/// [`PrefixValues`] of each prefix [`COLLECTION_VALUES`] names.
#[derive(Debug, Default)]
pub(super) struct NamedValues([PrefixValues; 2]);

impl SourceMeta {
    /// The live collection of that name in that database (`""` is the default database).
    pub async fn collection_named(
        &self,
        db_name: &str,
        name: &str,
    ) -> Result<Option<CollectionMeta>, MetaError> {
        let mut rev = 0;
        let mut kvs = self
            .read_prefix("root-coord/database/db-info/", &mut rev, false)
            .await?;
        kvs.extend(
            self.read_prefix("root-coord/database/aliases/", &mut rev, false)
                .await?,
        );
        {
            // Held while read: one lookup at a time brings the values up to date.
            let mut kept = self.named.lock().await;
            for (prefix, values) in COLLECTION_VALUES.iter().zip(kept.0.iter_mut()) {
                self.bring_up_to_date(prefix, values, rev).await?;
                kvs.extend(values.pairs());
            }
        }
        match find_named(&self.meta_root, &kvs, db_name, name)? {
            Some(id) => self.collection(id).await,
            None => Ok(None),
        }
    }

    /// `values` as of revision `rev` (not 0). When a read fails, what is kept may hold keys
    /// deleted since, never lack a live one: the next call's count finds them.
    async fn bring_up_to_date(
        &self,
        prefix: &str,
        values: &mut PrefixValues,
        rev: i64,
    ) -> Result<(), MetaError> {
        let mut at = rev;
        if values.as_of == 0 || rev < values.as_of {
            let all = self.read_prefix(prefix, &mut at, false).await?;
            values.replace(rev, all);
            return Ok(());
        }
        let modified = self
            .read_prefix_since(prefix, &mut at, false, values.as_of + 1)
            .await?;
        let count = self.count_prefix(prefix, rev).await?;
        if values.take_modified(rev, modified, count) {
            return Ok(());
        }
        let listed = self.read_prefix(prefix, &mut at, true).await?;
        values.keep_only(&listed.into_iter().map(|(key, _)| key).collect());
        if values.values.len() != count {
            // Not expected (see `PrefixValues`); read them all rather than trust the rest.
            let all = self.read_prefix(prefix, &mut at, false).await?;
            values.replace(rev, all);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::PrefixValues;

    fn kv(key: &str, value: &str) -> (String, Vec<u8>) {
        (key.to_owned(), value.as_bytes().to_vec())
    }

    fn kept(values: &PrefixValues) -> Vec<(String, Vec<u8>)> {
        values.pairs().collect()
    }

    #[test]
    fn keys_modified_since_replace_their_values_and_new_ones_join() {
        let mut values = PrefixValues::default();
        values.replace(10, vec![kv("a", "1"), kv("b", "1")]);
        assert!(values.take_modified(12, vec![kv("b", "2"), kv("c", "1")], 3));
        assert_eq!(
            kept(&values),
            vec![kv("a", "1"), kv("b", "2"), kv("c", "1")]
        );
        assert_eq!(values.as_of, 12);
    }

    #[test]
    fn a_key_deleted_since_shows_in_the_count_and_goes_once_the_keys_are_listed() {
        let mut values = PrefixValues::default();
        values.replace(10, vec![kv("a", "1"), kv("b", "1")]);
        // "a" deleted and "c" created: as many keys as before, one more kept.
        assert!(!values.take_modified(12, vec![kv("c", "1")], 2));
        values.keep_only(&["b".to_owned(), "c".to_owned()].into());
        assert_eq!(kept(&values), vec![kv("b", "1"), kv("c", "1")]);
    }
}
