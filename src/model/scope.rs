//! Which collections a task replicates (its `collection_infos`, `db_collections` and
//! exclusions) and under which names the target has them (`name_mapping`).

use std::collections::HashSet;

use super::change::CollectionRef;

/// Which collections a task replicates, and under which names the target has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Every collection of every database, or `(database, collection)` pairs where either may
    /// be `*`.
    included: Option<HashSet<(String, String)>>,
    /// Left out even when included; pairs as above.
    excluded: HashSet<(String, String)>,
    renames: Vec<NameMapping>,
}

/// A source database's collections under another database or name on the target, as the
/// reference CDC's `name_mapping`.
#[derive(
    Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct NameMapping {
    pub source_db: String,
    /// Empty: the same database.
    #[serde(default)]
    pub target_db: String,
    /// Source collection name to target collection name; others keep their names.
    #[serde(default)]
    pub col_mapping: std::collections::BTreeMap<String, String>,
}

/// The name Milvus gives the database of a message or collection that names none.
pub const DEFAULT_DB: &str = "default";

pub fn db_or_default(db_name: &str) -> &str {
    if db_name.is_empty() {
        DEFAULT_DB
    } else {
        db_name
    }
}

/// `*` matches anything.
fn matches(pattern: &str, name: &str) -> bool {
    pattern == "*" || name == "*" || pattern == name
}

impl Scope {
    /// Every collection of every database.
    pub fn all() -> Self {
        Scope {
            included: None,
            excluded: HashSet::new(),
            renames: Vec::new(),
        }
    }

    /// `(database, collection)` pairs; a collection `*` stands for all of its database, a
    /// database `*` for every database.
    pub fn named(pairs: HashSet<(String, String)>) -> Self {
        Scope {
            included: Some(pairs),
            ..Scope::all()
        }
    }

    /// Collections of the default database.
    pub fn default_db<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        Scope::named(
            names
                .into_iter()
                .map(|n| (DEFAULT_DB.to_owned(), n.to_owned()))
                .collect(),
        )
    }

    pub fn excluding(mut self, pairs: HashSet<(String, String)>) -> Self {
        self.excluded = pairs;
        self
    }

    pub fn renaming(mut self, renames: Vec<NameMapping>) -> Self {
        self.renames = renames;
        self
    }

    /// False when a collection of this name cannot be in scope whatever its database: such a
    /// message is skipped without a metadata lookup (which may wait for a collection long gone).
    pub fn may_contain(&self, collection: &str) -> bool {
        match &self.included {
            None => true,
            Some(pairs) => {
                collection.is_empty() || pairs.iter().any(|(_, c)| matches(c, collection))
            }
        }
    }

    /// Whether some collection could be in both scopes (exclusions aside).
    pub fn overlaps(&self, other: &Scope) -> bool {
        match (&self.included, &other.included) {
            (None, _) | (_, None) => true,
            (Some(a), Some(b)) => a
                .iter()
                .any(|(da, ca)| b.iter().any(|(db, cb)| matches(da, db) && matches(ca, cb))),
        }
    }

    pub fn contains(&self, db_name: &str, collection: &str) -> bool {
        let db = db_or_default(db_name);
        let listed = |pairs: &HashSet<(String, String)>| {
            pairs
                .iter()
                .any(|(d, c)| (d == "*" || d == db) && (c == "*" || c == collection))
        };
        self.included.as_ref().is_none_or(listed) && !listed(&self.excluded)
    }

    /// Whether the database's own events (create, drop) are replicated: the task takes the
    /// whole database.
    pub fn contains_database(&self, db_name: &str) -> bool {
        let db = db_or_default(db_name);
        let whole = |pairs: &HashSet<(String, String)>| {
            pairs.iter().any(|(d, c)| (d == "*" || d == db) && c == "*")
        };
        self.included.as_ref().is_none_or(whole) && !whole(&self.excluded)
    }

    /// The collection's database and name on the target (a database event has no name).
    pub fn target_name(&self, db_name: &str, collection: &str) -> (String, String) {
        let db = db_or_default(db_name);
        match self
            .renames
            .iter()
            .find(|m| db_or_default(&m.source_db) == db)
        {
            None => (db.to_owned(), collection.to_owned()),
            Some(m) => (
                if m.target_db.is_empty() {
                    db
                } else {
                    &m.target_db
                }
                .to_owned(),
                m.col_mapping
                    .get(collection)
                    .cloned()
                    .unwrap_or_else(|| collection.to_owned()),
            ),
        }
    }

    /// Whether the target's collection `name` of database `db_name` is one of this scope's: the
    /// target name of one it contains (names the same, or renamed by the mapping).
    pub fn contains_on_target(&self, db_name: &str, name: &str) -> bool {
        let db = db_or_default(db_name);
        let mut sources = vec![(db.to_owned(), name.to_owned())];
        for m in &self.renames {
            sources.push((m.source_db.clone(), name.to_owned()));
            let renamed = m.col_mapping.iter().filter(|(_, to)| *to == name);
            sources.extend(renamed.map(|(from, _)| (m.source_db.clone(), from.clone())));
        }
        sources.iter().any(|(sdb, sname)| {
            self.contains(sdb, sname)
                && self.target_name(sdb, sname) == (db.to_owned(), name.to_owned())
        })
    }

    /// `collection` under its target names.
    pub fn on_target(&self, collection: CollectionRef) -> CollectionRef {
        let (db_name, name) = self.target_name(&collection.db_name, &collection.name);
        CollectionRef {
            db_name,
            name,
            ..collection
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_collection_is_in_scope_by_the_source_name_it_was_given() {
        let scope = Scope::named(HashSet::from([
            ("default".to_owned(), "a".to_owned()),
            ("sales".to_owned(), "*".to_owned()),
        ]))
        .renaming(vec![NameMapping {
            source_db: "sales".into(),
            target_db: "sales_dr".into(),
            col_mapping: [("orders".to_owned(), "orders_copy".to_owned())].into(),
        }]);
        assert!(
            scope.contains_on_target("", "a"),
            "the same name, the default database"
        );
        assert!(!scope.contains_on_target("default", "b"));
        assert!(
            scope.contains_on_target("sales_dr", "orders_copy"),
            "renamed"
        );
        assert!(
            scope.contains_on_target("sales_dr", "people"),
            "in the renamed database"
        );
        assert!(
            !scope.contains_on_target("sales_dr", "orders"),
            "orders is orders_copy there"
        );
        assert!(
            !scope.contains_on_target("sales", "people"),
            "sales is sales_dr there"
        );
    }

    #[test]
    fn a_scope_names_collections_per_database() {
        let scope = Scope::named(HashSet::from([
            ("default".to_owned(), "a".to_owned()),
            ("sales".to_owned(), "*".to_owned()),
        ]));
        assert!(scope.contains("default", "a"));
        assert!(scope.contains("", "a"), "no database is the default one");
        assert!(!scope.contains("default", "b"));
        assert!(!scope.contains("other", "a"));
        assert!(scope.contains("sales", "anything"));
        assert!(scope.may_contain("anything"), "may be in sales");
        let default_only = Scope::default_db(["a"]);
        assert!(!default_only.may_contain("b"));
        assert!(!default_only.contains("sales", "a"));
    }

    #[test]
    fn an_excluded_collection_is_out_of_scope_even_when_included() {
        let pair = |d: &str, c: &str| (d.to_owned(), c.to_owned());
        let scope = Scope::all().excluding(HashSet::from([
            pair("default", "scratch"),
            pair("tmp", "*"),
        ]));
        assert!(scope.contains("default", "orders"));
        assert!(!scope.contains("", "scratch"));
        assert!(!scope.contains("tmp", "anything"));
        assert!(
            !scope.contains_database("tmp"),
            "database tmp's events are left out"
        );
        assert!(scope.contains_database("sales"));
        let one_db = Scope::named(HashSet::from([pair("sales", "*")]));
        assert!(one_db.contains_database("sales") && !one_db.contains_database("hr"));
    }

    #[test]
    fn scopes_overlap_when_a_collection_can_be_in_both() {
        let named = |pairs: &[(&str, &str)]| {
            Scope::named(
                pairs
                    .iter()
                    .map(|(d, c)| (d.to_string(), c.to_string()))
                    .collect(),
            )
        };
        assert!(Scope::all().overlaps(&named(&[("hr", "people")])));
        assert!(named(&[("hr", "*")]).overlaps(&named(&[("hr", "people")])));
        assert!(named(&[("*", "people")]).overlaps(&named(&[("hr", "people")])));
        assert!(!named(&[("hr", "people")]).overlaps(&named(&[("sales", "people")])));
        assert!(!named(&[("default", "a")]).overlaps(&named(&[("default", "b")])));
    }
}
