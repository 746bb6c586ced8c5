//! The appliance's configuration: one TOML file, every key defaulted for the local testbed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the HTTP API. Loopback by default: the API has no auth yet.
    pub listen: SocketAddr,
    /// Folder holding the journal; created if missing.
    pub data_dir: PathBuf,
    pub source: SourceConfig,
    pub journal: JournalConfig,
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

/// Where the source Milvus keeps its metadata and its message queue.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SourceConfig {
    pub etcd_endpoints: Vec<String>,
    /// The source's `etcd.rootPath`; its metadata lives under `{root_path}/meta`.
    pub etcd_root_path: String,
    /// The source's `msgChannel.chanNamePrefix.cluster`: topics are `{prefix}-rootcoord-dml_N`.
    pub channel_prefix: String,
    pub mq: MqConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum MqConfig {
    Kafka {
        brokers: String,
    },
    Pulsar {
        url: String,
        #[serde(default = "default_pulsar_tenant")]
        tenant: String,
        #[serde(default = "default_pulsar_namespace")]
        namespace: String,
    },
}

fn default_pulsar_tenant() -> String {
    "public".into()
}

fn default_pulsar_namespace() -> String {
    "default".into()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8444)),
            data_dir: PathBuf::from("cdc-data"),
            source: SourceConfig::default(),
            journal: JournalConfig::default(),
        }
    }
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            etcd_endpoints: vec!["127.0.0.1:2379".into()],
            etcd_root_path: "by-dev".into(),
            channel_prefix: "by-dev".into(),
            mq: MqConfig::Kafka {
                brokers: "127.0.0.1:9092".into(),
            },
        }
    }
}

impl Config {
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
    fn a_missing_file_names_the_path() {
        let err = Config::load(Path::new("/nonexistent/cdc.toml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cdc.toml"), "{err}");
    }
}
