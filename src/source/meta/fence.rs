//! The write fence of a source Milvus 2.3: its quota setting
//! `quotaAndLimits.limitWriting.forceDeny`, set in its etcd config
//! (`{etcd.rootPath}/config/quotaAndLimits/limitWriting/forceDeny`). Milvus reads that prefix
//! every 2 s; its quota center, on its next tick (3 s), tells every proxy to refuse inserts,
//! deletes, upserts and imports with `ForceDeny`, whoever sends them. It needs
//! `quotaAndLimits.enabled` (the shipped milvus.yaml has it) and does not fence DDL. The key
//! removed, Milvus falls back to its yaml value (false).

use etcd_client::{DeleteOptions, GetOptions};

use super::{MetaError, SourceMeta};

impl SourceMeta {
    /// The fence's key: under the cluster's root, beside its `meta`.
    fn fence_key(&self) -> String {
        let root = self
            .meta_root
            .strip_suffix("/meta")
            .unwrap_or(&self.meta_root);
        format!("{root}/config/quotaAndLimits/limitWriting/forceDeny")
    }

    /// Whether the fence's key is set to true.
    pub async fn write_fence(&self) -> Result<bool, MetaError> {
        let key = self.fence_key();
        let reply = self
            .client
            .clone()
            .get(key.clone(), Some(GetOptions::new()))
            .await
            .map_err(|e| fence_error(&key, e))?;
        Ok(reply
            .kvs()
            .first()
            .is_some_and(|kv| kv.value().eq_ignore_ascii_case(b"true")))
    }

    /// Sets the fence (true) or removes it.
    pub async fn set_write_fence(&self, on: bool) -> Result<(), MetaError> {
        let key = self.fence_key();
        let mut client = self.client.clone();
        let done = if on {
            client.put(key.clone(), "true", None).await.map(drop)
        } else {
            client
                .delete(key.clone(), Some(DeleteOptions::new()))
                .await
                .map(drop)
        };
        done.map_err(|e| fence_error(&key, e))
    }
}

fn fence_error(key: &str, source: etcd_client::Error) -> MetaError {
    MetaError::Key {
        key: key.to_owned(),
        source: Box::new(source),
    }
}
