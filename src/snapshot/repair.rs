//! Repair: a copy onto a target that holds rows already (an old primary come back with writes
//! the new one never got). Each page of the source's rows is compared with the target's rows
//! of the same key range (the last page of a partition with every target key after it); the
//! target's rows that differ and those whose keys the source lacks are saved, then the page is
//! upserted and those keys deleted.
//!
//! What is saved: exactly the target's rows the repair replaces or deletes, as they were, each
//! once. A page's saved rows go to a file of their own (`{dir}/{collection id}-{partition}-
//! {n}.jsonl`, one JSON line, written whole by a rename) before anything of the page is
//! written; keys already in a file of the collection are not saved again. So a page read again
//! after a crash saves nothing its first attempt saved (what that attempt wrote now matches the
//! source, or is gone), and nothing is written that is not saved first.
//!
//! A line: `database`, `collection`, `partition`, `replaced` and `deleted` (their keys),
//! `num_rows`, and `fields_data`: the rows' columns as the target answered them (base64 of each
//! `schema.FieldData`): what `milvus-cdc reapply` upserts to put them back.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use milvus::proto::milvus::DeleteRequest;
use milvus::proto::schema::FieldData;
use prost::Message;
use serde::{Deserialize, Serialize};
use tracing::info;

use super::{Copier, CopyError};
use crate::milvus_client::{Row, Seen, Shape, diff, failure, rows};
use crate::model::{CopyProgress, PrimaryKey};

/// Rows read of the target per query while a range is compared.
const TARGET_PAGE_ROWS: usize = 4096;

/// One saved page: the target's rows a repair replaced or deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedRows {
    pub database: String,
    pub collection: String,
    pub partition: String,
    pub replaced: Vec<PrimaryKey>,
    pub deleted: Vec<PrimaryKey>,
    pub num_rows: u32,
    /// Base64 of each column's `schema.FieldData`.
    pub fields_data: Vec<String>,
}

impl SavedRows {
    /// The columns, as the target answered them.
    pub fn columns(&self) -> Result<Vec<FieldData>, String> {
        self.fields_data
            .iter()
            .map(|b64| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| e.to_string())?;
                FieldData::decode(bytes.as_slice()).map_err(|e| e.to_string())
            })
            .collect()
    }
}

/// Where a copy's saved rows go, and the keys saved so far.
pub struct Saved {
    dir: PathBuf,
    prefix: String,
    keys: HashSet<PrimaryKey>,
    files: usize,
}

impl Saved {
    /// The saved files of `copy`'s partition `partition` in `dir`, read back.
    pub fn open(dir: &Path, copy: &CopyProgress, partition: usize) -> Result<Self, String> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        let prefix = format!("{}-{partition}-", copy.source.id);
        let mut saved = Self {
            dir: dir.to_owned(),
            prefix,
            keys: HashSet::new(),
            files: 0,
        };
        let listed =
            fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        for entry in listed {
            let path = entry.map_err(|e| e.to_string())?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if !(name.starts_with(&saved.prefix) && name.ends_with(".jsonl")) {
                continue;
            }
            let text = fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let page: SavedRows = serde_json::from_str(text.trim_end())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            saved
                .keys
                .extend(page.replaced.into_iter().chain(page.deleted));
            saved.files += 1;
        }
        Ok(saved)
    }

    /// Writes `page` to a file of its own, whole, and remembers its keys.
    fn write(&mut self, page: &SavedRows) -> Result<(), String> {
        let path = self
            .dir
            .join(format!("{}{:06}.jsonl", self.prefix, self.files + 1));
        let partial = path.with_extension("partial");
        let mut line = serde_json::to_vec(page).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let write = || -> std::io::Result<()> {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&partial)?;
            file.write_all(&line)?;
            file.sync_all()?;
            fs::rename(&partial, &path)?;
            fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        self.files += 1;
        self.keys
            .extend(page.replaced.iter().chain(&page.deleted).cloned());
        Ok(())
    }
}

impl Copier<'_> {
    /// Compares the target's rows after `after` (through `through`, or all of them) with
    /// `source` (the page's rows), saves the target's rows that differ or that the source
    /// lacks, and deletes the latter. The caller then upserts the page.
    pub(super) async fn repair_range(
        &self,
        copy: &CopyProgress,
        partition: &str,
        source: &[FieldData],
        after: Option<&PrimaryKey>,
        through: Option<&PrimaryKey>,
        saved: &mut Saved,
    ) -> Result<(), CopyError> {
        let shape = Shape {
            primary_key: copy.primary_key.clone(),
            fields: copy.fields.clone(),
        };
        let on_source = if source.is_empty() {
            Vec::new()
        } else {
            rows(source, &copy.primary_key).map_err(|e| self.write_error(copy, e.to_string()))?
        };
        let on_target = self
            .target_range(copy, partition, &shape, after, through)
            .await?;
        let found = diff(&on_source, &on_target);
        let fresh = |keys: &[PrimaryKey]| -> Vec<PrimaryKey> {
            keys.iter()
                .filter(|k| !saved.keys.contains(k))
                .cloned()
                .collect()
        };
        let (replaced, deleted) = (fresh(&found.different), fresh(&found.extra));
        if !replaced.is_empty() || !deleted.is_empty() {
            let keys: Vec<PrimaryKey> = replaced.iter().chain(&deleted).cloned().collect();
            let columns = self
                .target
                .columns_of(&copy.target, partition, &shape, &keys)
                .await?;
            let page = SavedRows {
                database: copy.target.db_name.clone(),
                collection: copy.target.name.clone(),
                partition: partition.to_owned(),
                replaced,
                deleted,
                num_rows: keys.len() as u32,
                fields_data: columns
                    .iter()
                    .map(|c| base64::engine::general_purpose::STANDARD.encode(c.encode_to_vec()))
                    .collect(),
            };
            saved.write(&page).map_err(|e| self.write_error(copy, e))?;
            info!(task = self.run.task(), collection = %copy.target.name, partition,
                replaced = page.replaced.len(), deleted = page.deleted.len(),
                "repair: the target's rows saved before they are replaced or deleted");
        }
        if !found.extra.is_empty() {
            self.delete(copy, partition, &found.extra).await?;
        }
        Ok(())
    }

    /// The target's rows of the range, in key order.
    async fn target_range(
        &self,
        copy: &CopyProgress,
        partition: &str,
        shape: &Shape,
        after: Option<&PrimaryKey>,
        through: Option<&PrimaryKey>,
    ) -> Result<Vec<Row>, CopyError> {
        let mut found: Vec<Row> = Vec::new();
        let mut from = after.cloned();
        loop {
            let columns = self
                .target
                .page_columns(
                    &copy.target,
                    partition,
                    shape,
                    from.as_ref(),
                    through,
                    TARGET_PAGE_ROWS,
                    Seen::Now,
                )
                .await?;
            if columns.is_empty() {
                return Ok(found);
            }
            let page = rows(&columns, &copy.primary_key)
                .map_err(|e| self.write_error(copy, e.to_string()))?;
            let Some(last) = page.last().map(|r| r.key.clone()) else {
                return Ok(found);
            };
            found.extend(page);
            from = Some(last);
        }
    }

    async fn delete(
        &self,
        copy: &CopyProgress,
        partition: &str,
        keys: &[PrimaryKey],
    ) -> Result<(), CopyError> {
        let list: Vec<String> = keys.iter().map(PrimaryKey::literal).collect();
        let request = DeleteRequest {
            db_name: copy.target.db_name.clone(),
            collection_name: copy.target.name.clone(),
            partition_name: if copy.partition_key {
                String::new()
            } else {
                partition.to_owned()
            },
            expr: format!("{} in [{}]", copy.primary_key, list.join(", ")),
            ..Default::default()
        };
        let reply = self
            .target
            .client
            .clone()
            .delete(request)
            .await
            .map_err(|e| self.write_error(copy, format!("Delete: {}", e.message())))?
            .into_inner();
        failure(reply.status.as_ref()).map_or(Ok(()), |reason| {
            Err(self.write_error(copy, format!("Delete: {reason}")))
        })
    }

    fn write_error(&self, copy: &CopyProgress, reason: String) -> CopyError {
        CopyError::Write {
            collection: copy.target.name.clone(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CollectionRef, CopyState};

    fn copy() -> CopyProgress {
        let c = CollectionRef {
            id: 7,
            db_name: "default".into(),
            name: "c".into(),
        };
        CopyProgress {
            source: c.clone(),
            target: c,
            primary_key: "id".into(),
            fields: vec!["id".into()],
            partitions: vec!["_default".into()],
            partition_key: false,
            dynamic_field: None,
            page_rows: 10,
            source_rows: 0,
            rows_copied: 0,
            began_ms: 0,
            ended_ms: 0,
            start_ts: 0,
            state: CopyState::beginning(),
            recopy: None,
            repair: true,
        }
    }

    fn page(replaced: &[i64], deleted: &[i64]) -> SavedRows {
        SavedRows {
            database: "default".into(),
            collection: "c".into(),
            partition: "_default".into(),
            replaced: replaced.iter().map(|k| PrimaryKey::Int(*k)).collect(),
            deleted: deleted.iter().map(|k| PrimaryKey::Int(*k)).collect(),
            num_rows: (replaced.len() + deleted.len()) as u32,
            fields_data: Vec::new(),
        }
    }

    #[test]
    fn saved_pages_are_read_back_so_a_page_read_again_saves_none_of_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("repair");
        let mut saved = Saved::open(&folder, &copy(), 0).unwrap();
        saved.write(&page(&[1, 2], &[9])).unwrap();
        saved.write(&page(&[3], &[])).unwrap();
        // A restart: what the files hold is known again; another partition's files are not.
        let again = Saved::open(&folder, &copy(), 0).unwrap();
        assert_eq!(again.files, 2);
        let keys: HashSet<PrimaryKey> = [1, 2, 3, 9].into_iter().map(PrimaryKey::Int).collect();
        assert_eq!(again.keys, keys);
        assert!(Saved::open(&folder, &copy(), 1).unwrap().keys.is_empty());
        // Written whole, each its own file, the owner's only; no partial file left.
        let mut names: Vec<String> = fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["7-0-000001.jsonl", "7-0-000002.jsonl"]);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(folder.join(&names[0]))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
