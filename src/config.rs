//! The appliance's configuration: one TOML file, every key defaulted for the local testbed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::Secret;
use crate::source::SourceConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error(
        "listen = {0} is reachable from other hosts and the API has no token: set [api] token \
         (or MILVUS_CDC_API_TOKEN), listen on a loopback address, or set \
         [api] allow_remote_without_token = true"
    )]
    OpenApi(SocketAddr),
    /// An empty secret is a mistake (an unset variable in a deployment), not a wish to run
    /// without authentication: that is said by setting no token at all.
    #[error(
        "the API token in {0} is empty: give it a value, or remove it to run without a token \
         (loopback only)"
    )]
    EmptyToken(String),
    #[error("[api] token and [api] token_file are both set: keep one")]
    TwoTokens,
    #[error("cannot read [api] token_file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the HTTP API. Loopback by default; any other address needs an API token.
    pub listen: SocketAddr,
    /// Folder holding the journal; created if missing.
    pub data_dir: PathBuf,
    pub source: SourceConfig,
    pub journal: JournalConfig,
    pub apply: ApplyConfig,
    pub api: ApiConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ApplyConfig {
    /// Largest target call: consecutive inserts (or deletes) of one collection and partition
    /// are merged into one call up to this many bytes. Milvus ingests calls of a few MiB
    /// faster than larger ones; it must stay under the target's gRPC message limit.
    pub max_call_bytes: usize,
    /// Bytes of journal rows read per vchannel for one batch (an applied-position commit).
    /// Two batches are in memory at a time (one sent, the next read), with their calls; one
    /// call's worth keeps the target busy without holding more.
    pub max_batch_bytes: usize,
}

impl Default for ApplyConfig {
    fn default() -> Self {
        Self {
            max_call_bytes: 4 << 20,
            max_batch_bytes: 4 << 20,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Bearer token every API request must carry (`/healthz`, `/` and `/openapi.json`
    /// excepted). The environment variable `MILVUS_CDC_API_TOKEN` overrides it.
    pub token: Option<Secret>,
    /// A file holding the token (a trailing newline is ignored), instead of `token`.
    pub token_file: Option<PathBuf>,
    /// Serve a non-loopback address without a token: only behind a proxy that authenticates.
    pub allow_remote_without_token: bool,
    /// Host names (`name` or `name:port`) requests may be addressed to besides the listen
    /// address and, on loopback, `localhost`: the names clients use to reach the appliance.
    pub allowed_hosts: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct JournalConfig {
    /// Past this many bytes of staged rows, readers wait for the appliers to drain.
    pub max_bytes: u64,
    /// Keep applied rows (for `dump`) instead of deleting them once the target has them.
    pub retain_applied: bool,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 30,
            retain_applied: false,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8444)),
            data_dir: PathBuf::from("cdc-data"),
            source: SourceConfig::default(),
            journal: JournalConfig::default(),
            apply: ApplyConfig::default(),
            api: ApiConfig::default(),
        }
    }
}

impl Config {
    /// The API token in effect: `env_token` (from `MILVUS_CDC_API_TOKEN`) over the config's
    /// `token` or `token_file`. Refuses an empty one, and an API open to other hosts without
    /// one unless that was asked for.
    pub fn api_token(&self, env_token: Option<String>) -> Result<Option<Secret>, ConfigError> {
        let (token, from) = match (env_token, &self.api.token, &self.api.token_file) {
            (Some(env), _, _) => (Some(Secret::new(env)), "MILVUS_CDC_API_TOKEN".to_owned()),
            (None, Some(_), Some(_)) => return Err(ConfigError::TwoTokens),
            (None, Some(token), None) => (Some(token.clone()), "[api] token".to_owned()),
            (None, None, Some(path)) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::TokenFile {
                        path: path.clone(),
                        source,
                    })?;
                let token = text.strip_suffix('\n').unwrap_or(&text);
                let token = token.strip_suffix('\r').unwrap_or(token);
                let from = format!("[api] token_file {}", path.display());
                (Some(Secret::new(token)), from)
            }
            (None, None, None) => (None, String::new()),
        };
        if token.as_ref().is_some_and(|t| t.expose().trim().is_empty()) {
            return Err(ConfigError::EmptyToken(from));
        }
        if token.is_none()
            && !self.listen.ip().is_loopback()
            && !self.api.allow_remote_without_token
        {
            return Err(ConfigError::OpenApi(self.listen));
        }
        Ok(token)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::mq::MqConfig;

    #[test]
    fn an_empty_file_means_the_local_testbed() {
        let config: Config = toml::from_str("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(
            config.source.mq,
            MqConfig::Kafka {
                brokers: "127.0.0.1:9092".into()
            }
        );
    }

    #[test]
    fn pulsar_defaults_tenant_and_namespace() {
        let config: Config =
            toml::from_str("[source.mq]\ntype = \"pulsar\"\nurl = \"pulsar://127.0.0.1:6650\"\n")
                .unwrap();
        assert_eq!(
            config.source.mq,
            MqConfig::Pulsar {
                url: "pulsar://127.0.0.1:6650".into(),
                token: None,
                tenant: "public".into(),
                namespace: "default".into()
            }
        );
    }

    #[test]
    fn journal_limits_are_configurable() {
        let config: Config =
            toml::from_str("[journal]\nmax_bytes = 1024\nretain_applied = true\n").unwrap();
        assert_eq!(
            config.journal,
            JournalConfig {
                max_bytes: 1024,
                retain_applied: true
            }
        );
    }

    #[test]
    fn an_unknown_key_is_an_error_that_names_it() {
        let err = toml::from_str::<Config>("listn = \"127.0.0.1:1\"").unwrap_err();
        assert!(err.to_string().contains("listn"), "{err}");
    }

    #[test]
    fn an_api_open_to_other_hosts_needs_a_token_unless_told_otherwise() {
        let open: Config = toml::from_str("listen = \"0.0.0.0:8444\"").unwrap();
        let err = open.api_token(None).unwrap_err();
        assert!(err.to_string().contains("[api] token"), "{err}");
        assert_eq!(
            open.api_token(Some("s3cret".into())).unwrap(),
            Some(Secret::new("s3cret"))
        );
        let told: Config =
            toml::from_str("listen = \"0.0.0.0:8444\"\n[api]\nallow_remote_without_token = true")
                .unwrap();
        assert_eq!(told.api_token(None).unwrap(), None);
        assert_eq!(Config::default().api_token(None).unwrap(), None);
    }

    #[test]
    fn the_environment_token_overrides_the_file() {
        let config: Config = toml::from_str("[api]\ntoken = \"from-file\"").unwrap();
        assert_eq!(
            config.api_token(None).unwrap(),
            Some(Secret::new("from-file"))
        );
        assert_eq!(
            config.api_token(Some("from-env".into())).unwrap(),
            Some(Secret::new("from-env"))
        );
    }

    #[test]
    fn an_empty_token_is_an_error_naming_where_it_came_from_not_a_wish_for_none() {
        let none = Config::default();
        for blank in ["", "  ", "\n"] {
            let err = none.api_token(Some(blank.into())).unwrap_err();
            assert!(err.to_string().contains("MILVUS_CDC_API_TOKEN"), "{err}");
        }
        let in_file: Config = toml::from_str("[api]\ntoken = \"\"").unwrap();
        let err = in_file.api_token(None).unwrap_err();
        assert!(err.to_string().contains("[api] token is empty"), "{err}");
    }

    #[test]
    fn the_token_can_come_from_a_file_without_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let config: Config =
            toml::from_str(&format!("[api]\ntoken_file = \"{}\"", path.display())).unwrap();
        let err = config.api_token(None).unwrap_err();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        std::fs::write(&path, "from-a-file\n").unwrap();
        assert_eq!(
            config.api_token(None).unwrap(),
            Some(Secret::new("from-a-file"))
        );
        std::fs::write(&path, "\n").unwrap();
        let err = config.api_token(None).unwrap_err();
        assert!(err.to_string().contains("token_file"), "{err}");
        let both: Config = toml::from_str(&format!(
            "[api]\ntoken = \"x\"\ntoken_file = \"{}\"",
            path.display()
        ))
        .unwrap();
        assert!(matches!(both.api_token(None), Err(ConfigError::TwoTokens)));
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let err = Config::load(Path::new("/nonexistent/cdc.toml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cdc.toml"), "{err}");
    }
}
