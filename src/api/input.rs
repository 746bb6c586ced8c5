//! What a request may carry. Everything a create names is stored with the task and held in
//! memory while it runs, and every task id reaches the supervisor: so names follow Milvus's
//! own rules, lists are bounded, and ids are short and plain, before anything is stored.

use std::collections::BTreeMap;
use std::fmt;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;

use super::ApiError;
use crate::model::NameMapping;

/// Milvus's `proxy.maxNameLength` default: the longest database or collection name it takes.
pub const MAX_NAME_LEN: usize = 255;
/// Collection names a task may list, in all its lists together (Milvus's default
/// `quotaAndLimits.limits.maxCollectionNum` is 65536; a task naming more than this many one by
/// one names a database, or `*`, instead).
pub const MAX_NAMES: usize = 4096;
/// Databases a task may name per map or mapping list: Milvus's `rootCoord.maxDatabaseNum`
/// default is 64.
pub const MAX_DATABASES: usize = 64;
/// Physical channels a create may give positions for (Milvus has 16 by default).
pub const MAX_POSITIONS: usize = 1024;
/// A base64 `MsgPosition` is a channel name, a broker id of a few bytes, and a timestamp.
pub const MAX_POSITION_LEN: usize = 4096;
/// A target uri, its token, a password users get: far above any real one.
pub const MAX_TEXT_LEN: usize = 4096;
/// Task ids appear in URL paths, logs and metric labels.
pub const MAX_TASK_ID_LEN: usize = 128;

/// Why a request's input is refused; the message names the field and the rule.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InputError {
    #[error("{field} is empty: {rule}")]
    Empty { field: String, rule: &'static str },
    #[error("{field} is {len} characters long: at most {max}")]
    TooLong {
        field: String,
        len: usize,
        max: usize,
    },
    #[error("{field} {shown} holds {bad:?}: {rule}")]
    Character {
        field: String,
        shown: Shown,
        bad: char,
        rule: &'static str,
    },
    #[error("{field} {shown} starts with {bad:?}: {rule}")]
    First {
        field: String,
        shown: Shown,
        bad: char,
        rule: &'static str,
    },
    #[error("{field} has {count} entries: at most {max}")]
    TooMany {
        field: String,
        count: usize,
        max: usize,
    },
    #[error(
        "{field} brings the collection names of this task to {count}: a task names at most \
         {MAX_NAMES} in collection_infos, db_collections, exclude_db_collections and \
         name_mapping together (name a database, or \"*\", instead)"
    )]
    TooManyNames { field: String, count: usize },
}

impl From<InputError> for ApiError {
    fn from(err: InputError) -> Self {
        ApiError::bad_request(err.to_string())
    }
}

/// A name as quoted in an error: escaped, and cut short (it is at most `MAX_NAME_LEN` long).
#[derive(Debug, PartialEq)]
pub struct Shown(String);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 64;
        match self.0.char_indices().nth(SHOWN) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}...", &self.0[..cut]),
        }
    }
}

const COLLECTION_RULE: &str = "a collection name is a letter or '_', then letters, digits or '_' \
                               (as Milvus takes them), or \"*\"";
const DATABASE_RULE: &str =
    "a database name is a letter or '_', then letters, digits or '_' (as Milvus takes them)";
const TASK_ID_RULE: &str = "a task id is 1 to 128 letters, digits, '.', '_' or '-'";

/// What a name may be: Milvus's rules, with `*` where a pattern is allowed.
#[derive(Clone, Copy)]
enum Kind {
    Collection { star: bool },
    Database { star: bool },
}

fn check_name(field: &str, name: &str, kind: Kind) -> Result<(), InputError> {
    let (rule, star, dollar) = match kind {
        // Milvus before 2.3 let a collection name hold '$': such collections may still exist.
        Kind::Collection { star } => (COLLECTION_RULE, star, true),
        Kind::Database { star } => (DATABASE_RULE, star, false),
    };
    if star && name == "*" {
        return Ok(());
    }
    let field = field.to_owned();
    let len = name.chars().count();
    if len == 0 {
        return Err(InputError::Empty { field, rule });
    }
    if len > MAX_NAME_LEN {
        let max = MAX_NAME_LEN;
        return Err(InputError::TooLong { field, len, max });
    }
    let shown = || Shown(name.to_owned());
    let mut chars = name.chars();
    if let Some(first) = chars
        .next()
        .filter(|c| !(c.is_ascii_alphabetic() || *c == '_'))
    {
        let (shown, bad) = (shown(), first);
        return Err(InputError::First {
            field,
            shown,
            bad,
            rule,
        });
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || (dollar && c == '$');
    if let Some(bad) = chars.find(|c| !allowed(*c)) {
        let shown = shown();
        return Err(InputError::Character {
            field,
            shown,
            bad,
            rule,
        });
    }
    Ok(())
}

/// A cluster's name in a request: as the config allows them, said with the field.
pub fn check_cluster(field: &str, name: &str) -> Result<(), ApiError> {
    if crate::config::valid_cluster_name(name) {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "invalid {field}: a cluster's name is 1 to 64 letters, digits, `_` or `-`"
    )))
}

/// A task id: given at create, or in a path or `request_data` of any other call.
pub fn check_task_id(id: &str) -> Result<(), InputError> {
    let field = "task_id".to_owned();
    let rule = TASK_ID_RULE;
    let len = id.chars().count();
    if len == 0 {
        return Err(InputError::Empty { field, rule });
    }
    if len > MAX_TASK_ID_LEN {
        let max = MAX_TASK_ID_LEN;
        return Err(InputError::TooLong { field, len, max });
    }
    let plain = |c: &char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    match id.chars().find(|c| !plain(c)) {
        None => Ok(()),
        Some(bad) => {
            let shown = Shown(id.to_owned());
            Err(InputError::Character {
                field,
                shown,
                bad,
                rule,
            })
        }
    }
}

/// Free text of a create (a uri, a token, a password): only its length is bounded here.
pub fn check_text(field: &str, text: &str) -> Result<(), InputError> {
    let len = text.chars().count();
    if len > MAX_TEXT_LEN {
        let field = field.to_owned();
        return Err(InputError::TooLong {
            field,
            len,
            max: MAX_TEXT_LEN,
        });
    }
    Ok(())
}

fn check_count(field: &str, count: usize, max: usize) -> Result<(), InputError> {
    if count > max {
        let field = field.to_owned();
        return Err(InputError::TooMany { field, count, max });
    }
    Ok(())
}

/// Counts the collection names of one request, refusing the one past [`MAX_NAMES`].
#[derive(Default)]
pub struct NameBudget(usize);

impl NameBudget {
    fn spend(&mut self, field: &str, count: usize) -> Result<(), InputError> {
        self.0 += count;
        if self.0 > MAX_NAMES {
            let field = field.to_owned();
            return Err(InputError::TooManyNames {
                field,
                count: self.0,
            });
        }
        Ok(())
    }

    /// `collection_infos`: collection names of the default database, or `*`.
    pub fn collections(&mut self, field: &str, names: &[String]) -> Result<(), InputError> {
        // Counted before each is read: a list of 100,000 names is refused as a list.
        self.spend(field, names.len())?;
        for (i, name) in names.iter().enumerate() {
            let kind = Kind::Collection { star: true };
            check_name(&format!("{field}[{i}].name"), name, kind)?;
        }
        Ok(())
    }

    /// `db_collections`, `exclude_db_collections`: collection names (or `*`) per database
    /// (or `*`).
    pub fn per_database(
        &mut self,
        field: &str,
        map: &BTreeMap<String, Vec<String>>,
    ) -> Result<(), InputError> {
        check_count(field, map.len(), MAX_DATABASES)?;
        for (db, names) in map {
            check_name(&format!("{field} key"), db, Kind::Database { star: true })?;
            self.collections(&format!("{field}.{db}"), names)?;
        }
        Ok(())
    }

    /// `name_mapping`: a source database's (empty: the default one) target database (empty:
    /// the same) and collection names; no patterns.
    pub fn name_mapping(&mut self, mappings: &[NameMapping]) -> Result<(), InputError> {
        check_count("name_mapping", mappings.len(), MAX_DATABASES)?;
        let database = Kind::Database { star: false };
        let collection = Kind::Collection { star: false };
        for (i, m) in mappings.iter().enumerate() {
            let field = format!("name_mapping[{i}]");
            if !m.source_db.is_empty() {
                check_name(&format!("{field}.source_db"), &m.source_db, database)?;
            }
            if !m.target_db.is_empty() {
                check_name(&format!("{field}.target_db"), &m.target_db, database)?;
            }
            self.spend(&format!("{field}.col_mapping"), m.col_mapping.len())?;
            for (from, to) in &m.col_mapping {
                check_name(&format!("{field}.col_mapping key"), from, collection)?;
                check_name(&format!("{field}.col_mapping.{from}"), to, collection)?;
            }
        }
        Ok(())
    }
}

/// `positions`: how many, and how long each.
pub fn check_positions(positions: &BTreeMap<String, String>) -> Result<(), InputError> {
    check_count("positions", positions.len(), MAX_POSITIONS)?;
    for (channel, text) in positions {
        if channel.chars().count() > MAX_NAME_LEN {
            let len = channel.chars().count();
            let field = "positions key".to_owned();
            return Err(InputError::TooLong {
                field,
                len,
                max: MAX_NAME_LEN,
            });
        }
        let len = text.chars().count();
        if len > MAX_POSITION_LEN {
            let field = format!("positions.{channel}");
            return Err(InputError::TooLong {
                field,
                len,
                max: MAX_POSITION_LEN,
            });
        }
    }
    Ok(())
}

/// A request body. Its rejection (too large, or cut off) is an [`ApiError`], so the reply has
/// the JSON error body every other error has.
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(request, state)
            .await
            .map(Body)
            .map_err(|rejection| {
                let status = rejection.status();
                let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    // axum's default body limit.
                    "the request body is larger than 2 MiB".to_owned()
                } else {
                    rejection.body_text()
                };
                ApiError::new(status, message)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collection(name: &str) -> Result<(), String> {
        NameBudget::default()
            .collections("collection_infos", &[name.to_owned()])
            .map_err(|e| e.to_string())
    }

    #[test]
    fn collection_names_are_those_milvus_takes_or_a_star() {
        for ok in ["*", "a", "_", "A_b9", "old$style", &"c".repeat(255)] {
            assert_eq!(collection(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            collection(""),
            Err(format!(
                "collection_infos[0].name is empty: {COLLECTION_RULE}"
            ))
        );
        assert_eq!(
            collection("9lives"),
            Err(format!(
                "collection_infos[0].name \"9lives\" starts with '9': {COLLECTION_RULE}"
            ))
        );
        assert_eq!(
            collection("a-b"),
            Err(format!(
                "collection_infos[0].name \"a-b\" holds '-': {COLLECTION_RULE}"
            ))
        );
        assert_eq!(
            collection("**"),
            Err(format!(
                "collection_infos[0].name \"**\" starts with '*': {COLLECTION_RULE}"
            ))
        );
        assert_eq!(
            collection("caf\u{e9}"),
            Err(format!(
                "collection_infos[0].name \"caf\u{e9}\" holds '\u{e9}': {COLLECTION_RULE}"
            ))
        );
    }

    #[test]
    fn a_name_longer_than_milvus_takes_is_refused_by_its_length_without_being_echoed() {
        let refused = collection(&"x".repeat(100_000)).unwrap_err();
        assert_eq!(
            refused,
            "collection_infos[0].name is 100000 characters long: at most 255"
        );
    }

    #[test]
    fn a_refused_name_is_quoted_escaped_and_cut_short() {
        let name = format!("a{}\n-", "b".repeat(200));
        let refused = collection(&name).unwrap_err();
        assert!(
            refused.starts_with(&format!(
                "collection_infos[0].name \"a{}\"...",
                "b".repeat(63)
            )),
            "{refused}"
        );
        assert!(refused.contains("holds '\\n'"), "{refused}");
    }

    #[test]
    fn a_list_of_more_names_than_a_task_may_hold_is_refused_as_a_list() {
        let many = vec!["a".to_owned(); 100_000];
        let refused = NameBudget::default()
            .collections("collection_infos", &many)
            .unwrap_err();
        assert_eq!(
            refused,
            InputError::TooManyNames {
                field: "collection_infos".into(),
                count: 100_000
            }
        );
        assert!(refused.to_string().starts_with(
            "collection_infos brings the collection names of this task to 100000: \
             a task names at most 4096"
        ));
        let at_the_bound = vec!["a".to_owned(); MAX_NAMES];
        assert_eq!(
            NameBudget::default().collections("collection_infos", &at_the_bound),
            Ok(())
        );
    }

    #[test]
    fn the_bound_on_names_holds_across_every_list_of_a_request() {
        let mut budget = NameBudget::default();
        budget
            .collections("collection_infos", &vec!["a".to_owned(); 4000])
            .unwrap();
        let per_db = BTreeMap::from([("sales".to_owned(), vec!["b".to_owned(); 97])]);
        let refused = budget.per_database("db_collections", &per_db).unwrap_err();
        assert!(matches!(
            refused,
            InputError::TooManyNames { ref field, count: 4097 } if field == "db_collections.sales"
        ));
    }

    #[test]
    fn databases_are_bounded_and_named_by_milvus_rules_or_a_star() {
        let mut budget = NameBudget::default();
        let map = |db: &str| BTreeMap::from([(db.to_owned(), vec!["*".to_owned()])]);
        assert_eq!(budget.per_database("db_collections", &map("*")), Ok(()));
        assert_eq!(
            budget.per_database("db_collections", &map("sales_2")),
            Ok(())
        );
        let refused = budget
            .per_database("db_collections", &map("my-db"))
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            format!("db_collections key \"my-db\" holds '-': {DATABASE_RULE}")
        );
        let refused = budget
            .per_database("db_collections", &map("a$"))
            .unwrap_err();
        assert!(refused.to_string().contains("holds '$'"), "{refused}");
        let many: BTreeMap<_, _> = (0..65).map(|i| (format!("db{i}"), vec![])).collect();
        assert_eq!(
            budget
                .per_database("exclude_db_collections", &many)
                .unwrap_err()
                .to_string(),
            "exclude_db_collections has 65 entries: at most 64"
        );
    }

    #[test]
    fn a_name_mapping_names_real_databases_and_collections_not_patterns() {
        let mapping = |source_db: &str, target_db: &str, from: &str, to: &str| NameMapping {
            source_db: source_db.into(),
            target_db: target_db.into(),
            col_mapping: BTreeMap::from([(from.to_owned(), to.to_owned())]),
        };
        let check = |m: NameMapping| {
            NameBudget::default()
                .name_mapping(&[m])
                .map_err(|e| e.to_string())
        };
        assert_eq!(check(mapping("", "", "a", "b")), Ok(()));
        assert_eq!(check(mapping("sales", "dr", "a", "b")), Ok(()));
        let refused = check(mapping("*", "", "a", "b")).unwrap_err();
        assert!(
            refused.starts_with("name_mapping[0].source_db \"*\""),
            "{refused}"
        );
        let refused = check(mapping("", "", "a", "*")).unwrap_err();
        assert!(
            refused.starts_with("name_mapping[0].col_mapping.a \"*\""),
            "{refused}"
        );
        let refused = check(mapping("", "", &"k".repeat(256), "b")).unwrap_err();
        assert_eq!(
            refused,
            "name_mapping[0].col_mapping key is 256 characters long: at most 255"
        );
    }

    #[test]
    fn a_task_id_is_short_and_plain_and_its_problem_is_named() {
        for ok in ["t", "rest-1", "a.b_c", &"x".repeat(128)] {
            assert_eq!(check_task_id(ok), Ok(()), "{ok}");
        }
        let refused = |id: &str| check_task_id(id).unwrap_err().to_string();
        assert_eq!(refused(""), format!("task_id is empty: {TASK_ID_RULE}"));
        assert_eq!(
            refused(&"x".repeat(2_000_000)),
            "task_id is 2000000 characters long: at most 128"
        );
        assert_eq!(
            refused("a b"),
            format!("task_id \"a b\" holds ' ': {TASK_ID_RULE}")
        );
        assert_eq!(
            refused("../x"),
            format!("task_id \"../x\" holds '/': {TASK_ID_RULE}")
        );
    }

    #[test]
    fn positions_are_bounded_in_number_and_length() {
        let one = |channel: &str, text: &str| {
            check_positions(&BTreeMap::from([(channel.to_owned(), text.to_owned())]))
        };
        assert_eq!(one("by-dev-rootcoord-dml_0", "CgRub3Bl"), Ok(()));
        assert!(one(&"c".repeat(256), "x").is_err());
        assert_eq!(
            one("c", &"A".repeat(5000)).unwrap_err().to_string(),
            "positions.c is 5000 characters long: at most 4096"
        );
        let many: BTreeMap<_, _> = (0..1025)
            .map(|i| (format!("c{i}"), String::new()))
            .collect();
        assert_eq!(
            check_positions(&many).unwrap_err().to_string(),
            "positions has 1025 entries: at most 1024"
        );
    }
}
