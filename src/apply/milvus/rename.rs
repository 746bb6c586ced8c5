//! Renamed collections. Rows name their collection as the source did when it wrote them, so
//! rows written after a rename name the new name, and may come before the rename itself has
//! been applied (it waits for the rows before it, not the other way round). The target's
//! collections carry their source collection's id ([`super::SOURCE_ID_PROPERTY`]), so every change
//! goes to the collection of its source id, whatever name it has there at the moment.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;

use milvus::proto::milvus as rpc;
use tracing::info;

use super::{MilvusTarget, check, shape_key};
use crate::apply::calls::Call;
use crate::apply::{Ddl, TargetError};
use crate::model::{CollectionRef, DEFAULT_DB, DdlEvent};

impl MilvusTarget {
    /// The name the target has for `c`'s source collection, when it is not `c.name`.
    ///
    /// A collection known under its own name costs nothing; one the target does not have under
    /// its name is looked for among its database's collections by the source id, once.
    pub(super) fn renamed_on_target(
        &mut self,
        c: &CollectionRef,
    ) -> Result<Option<String>, TargetError> {
        if let Some(name) = self.located.get(&c.id) {
            return Ok((name != &c.name).then(|| name.clone()));
        }
        if self.shapes.contains_key(&shape_key(c)) || self.collection_exists(c)? {
            return Ok(None);
        }
        let default_db = c.db_name.is_empty() || c.db_name == DEFAULT_DB;
        if !default_db && !self.databases()?.contains(&c.db_name) {
            return Ok(None);
        }
        for name in self.collections_in(&c.db_name)? {
            let candidate = CollectionRef {
                name: name.clone(),
                ..c.clone()
            };
            // One that cannot be described now (being dropped, say) is not looked at.
            if self
                .describe(&candidate)
                .is_ok_and(|shape| shape.source_id == Some(c.id))
            {
                info!(collection = %c.name, database = %c.db_name, on_target = %name,
                    "the target has this collection under the name it had before a rename");
                self.located.insert(c.id, name.clone());
                return Ok(Some(name));
            }
        }
        Ok(None)
    }

    /// `calls`, each addressed to its collection's name on the target.
    pub(super) fn addressed_calls<'a>(
        &mut self,
        calls: &'a [Vec<Call>],
    ) -> Result<Cow<'a, [Vec<Call>]>, TargetError> {
        // By id and name: one batch may hold rows of a collection from before and after its
        // rename, and only those under the new name need moving.
        let mut names: HashMap<(i64, &str), Option<String>> = HashMap::new();
        for call in calls.iter().flatten() {
            let c = call.collection();
            if let Entry::Vacant(unknown) = names.entry((c.id, c.name.as_str())) {
                unknown.insert(self.renamed_on_target(c)?);
            }
        }
        if names.values().all(Option::is_none) {
            return Ok(Cow::Borrowed(calls));
        }
        let moved = |call: &Call| {
            let mut call = call.clone();
            let c = call.collection();
            if let Some(Some(name)) = names.get(&(c.id, c.name.as_str())) {
                call.collection_mut().name = name.clone();
            }
            call
        };
        Ok(Cow::Owned(
            calls
                .iter()
                .map(|calls| calls.iter().map(moved).collect())
                .collect(),
        ))
    }

    /// `ddl`, addressed to its collection's name on the target (a create names its own).
    pub(super) fn addressed_ddl<'a>(&mut self, ddl: &'a Ddl) -> Result<Cow<'a, Ddl>, TargetError> {
        if matches!(ddl.event, DdlEvent::CreateCollection { .. }) || ddl.collection.id == 0 {
            return Ok(Cow::Borrowed(ddl));
        }
        Ok(match self.renamed_on_target(&ddl.collection)? {
            None => Cow::Borrowed(ddl),
            Some(name) => Cow::Owned(Ddl {
                collection: CollectionRef {
                    name,
                    ..ddl.collection.clone()
                },
                ..ddl.clone()
            }),
        })
    }

    /// Renames the target's collection `c` (addressed: its name there now) to `new_name`;
    /// done already when it has that name.
    pub(super) fn rename_collection(
        &mut self,
        c: &CollectionRef,
        new_name: &str,
    ) -> Result<(), TargetError> {
        if c.name == new_name {
            return Ok(());
        }
        let request = rpc::RenameCollectionRequest {
            db_name: c.db_name.clone(),
            old_name: c.name.clone(),
            new_name: new_name.to_owned(),
            ..Default::default()
        };
        let mut client = self.client.clone();
        let reply = self.unary("RenameCollection", client.rename_collection(request))?;
        check("RenameCollection", &c.name, Some(&reply))?;
        self.shapes.remove(&shape_key(c));
        self.located.insert(c.id, new_name.to_owned());
        Ok(())
    }
}
