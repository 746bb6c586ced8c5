//! A credential: a target's `user:password`, a broker token, the API token.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Text that must never reach a log line, an error message, a reply or `dump`: its `Debug`
/// and `Display` print [`Secret::REDACTED`]. Only the journal and the connection that needs
/// it see the value, through [`Secret::expose`]. Serialized in full, because the journal must
/// keep a task's target credential across restarts; every output path redacts it instead.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// What is shown in place of a secret.
    pub const REDACTED: &'static str = "***";

    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            Self::REDACTED
        })
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            ""
        } else {
            Self::REDACTED
        })
    }
}

/// Replaces the value of every `token` key in `value` (a task record, say) by
/// [`Secret::REDACTED`], so JSON read back from the journal can be shown.
pub fn redact_tokens(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                let filled = field.as_str().is_some_and(|s| !s.is_empty());
                if key == "token" && filled {
                    *field = serde_json::Value::String(Secret::REDACTED.into());
                } else {
                    redact_tokens(field);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_tokens),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_prints_as_stars_but_is_stored_in_full() {
        let secret = Secret::new("root:Pw-1");
        assert_eq!(format!("{secret} {secret:?}"), "*** ***");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"root:Pw-1\"");
        assert_eq!(secret.expose(), "root:Pw-1");
    }

    #[test]
    fn an_empty_secret_shows_that_there_is_none() {
        assert_eq!(
            format!("{}|{:?}", Secret::default(), Secret::default()),
            "|\"\""
        );
    }

    #[test]
    fn every_token_key_of_a_record_is_redacted_at_any_depth() {
        let mut record = serde_json::json!({
            "task_id": "t", "target": { "uri": "http://x", "token": "root:Pw-1" },
            "list": [{ "token": "k" }], "empty": { "token": "" }
        });
        redact_tokens(&mut record);
        assert_eq!(
            record,
            serde_json::json!({
                "task_id": "t", "target": { "uri": "http://x", "token": "***" },
                "list": [{ "token": "***" }], "empty": { "token": "" }
            })
        );
    }
}
