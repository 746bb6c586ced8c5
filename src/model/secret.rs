//! A credential: a target's `user:password`, a broker token, the API token, the password
//! users get on the target. Kept out of every output by its type, so a new field of this type
//! cannot be missed.

use std::cell::Cell;
use std::fmt;

use serde::{Deserialize, Serialize, Serializer};
use tracing::{Level, Metadata};
use tracing_subscriber::filter::{FilterFn, filter_fn};

/// Text that must never reach a log line, an error message, a reply or `dump`: its `Debug`,
/// `Display` and serialized forms are [`Secret::REDACTED`] (empty when there is none). Only
/// the connection that needs it sees the value, through [`Secret::expose`], and the journal,
/// which serializes a task's record inside [`Secret::revealed`] to keep its credentials across
/// restarts.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

thread_local! {
    /// Set only while [`Secret::revealed`] runs, on its thread.
    static REVEALED: Cell<bool> = const { Cell::new(false) };
}

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

    /// Runs `serialize` with secrets serialized in full: for a record written to the journal,
    /// and for nothing else.
    pub fn revealed<T>(serialize: impl FnOnce() -> T) -> T {
        /// Puts the flag back as it was, also when `serialize` panics.
        struct Restore(bool);
        impl Drop for Restore {
            fn drop(&mut self) {
                REVEALED.set(self.0);
            }
        }
        let _restore = Restore(REVEALED.replace(true));
        serialize()
    }

    fn shown(&self) -> &'static str {
        if self.0.is_empty() {
            ""
        } else {
            Self::REDACTED
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if REVEALED.get() {
            serializer.serialize_str(&self.0)
        } else {
            serializer.serialize_str(self.shown())
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.shown())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.shown())
    }
}

/// Log targets whose TRACE events carry credentials: the pulsar crate logs the frames it sends
/// (`CommandConnect`, and the answer to an auth challenge) with their auth data at trace.
const CREDENTIALS_AT_TRACE: &[&str] = &["pulsar::connection"];

/// A global log filter that drops the events of [`CREDENTIALS_AT_TRACE`], whatever the other
/// filters (`RUST_LOG`) let through: layered beside them, it has a veto of its own.
pub fn no_credentials_logged() -> FilterFn<impl Fn(&Metadata<'_>) -> bool + Clone> {
    filter_fn(|meta: &Metadata<'_>| {
        *meta.level() < Level::TRACE
            || !CREDENTIALS_AT_TRACE
                .iter()
                .any(|target| meta.target().starts_with(target))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_prints_and_serializes_as_stars_and_only_the_journal_sees_it() {
        let secret = Secret::new("root:Pw-1");
        assert_eq!(format!("{secret} {secret:?}"), "*** \"***\"");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"***\"");
        let stored = Secret::revealed(|| serde_json::to_string(&secret).unwrap());
        assert_eq!(stored, "\"root:Pw-1\"");
        assert_eq!(serde_json::from_str::<Secret>(&stored).unwrap(), secret);
        assert_eq!(
            serde_json::to_string(&secret).unwrap(),
            "\"***\"",
            "revealed only inside"
        );
        assert_eq!(secret.expose(), "root:Pw-1");
    }

    #[test]
    fn an_empty_secret_shows_that_there_is_none() {
        let none = Secret::default();
        assert_eq!(format!("{none}|{none:?}"), "|\"\"");
        assert_eq!(serde_json::to_string(&none).unwrap(), "\"\"");
    }

    #[test]
    fn a_panic_while_revealed_leaves_secrets_hidden_after_it() {
        let secret = Secret::new("k");
        let caught = std::panic::catch_unwind(|| Secret::revealed(|| panic!("in a serializer")));
        assert!(caught.is_err());
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"***\"");
    }

    /// Every event a subscriber at TRACE receives, as `target: message`.
    fn seen_at_trace(emit: impl FnOnce()) -> Vec<String> {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::layer::{Context, SubscriberExt};
        use tracing_subscriber::{EnvFilter, Layer};

        struct Record(Arc<Mutex<Vec<String>>>);
        impl<S: tracing::Subscriber> Layer<S> for Record {
            fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
                let mut message = String::new();
                event.record(&mut |_: &tracing::field::Field, value: &dyn fmt::Debug| {
                    message += &format!("{value:?}");
                });
                let line = format!("{}: {message}", event.metadata().target());
                self.0.lock().unwrap().push(line);
            }
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new("trace,pulsar::connection=trace"))
            .with(no_credentials_logged())
            .with(Record(seen.clone()));
        tracing::subscriber::with_default(subscriber, emit);
        seen.lock().unwrap().clone()
    }

    #[test]
    fn the_pulsar_crates_connection_frames_never_reach_the_log_whatever_rust_log_says() {
        let seen = seen_at_trace(|| {
            tracing::trace!(target: "pulsar::connection", "connection message: auth_data Canary");
            tracing::trace!(target: "pulsar::connection::inner", "sending message: Canary");
            tracing::debug!(target: "pulsar::connection", "Connecting to pulsar://x");
            tracing::trace!(target: "pulsar::consumer", "a consumer's message");
            tracing::trace!(target: "milvus_cdc::source", "ours");
        });
        assert_eq!(
            seen,
            [
                "pulsar::connection: Connecting to pulsar://x",
                "pulsar::consumer: a consumer's message",
                "milvus_cdc::source: ours",
            ]
        );
    }
}
