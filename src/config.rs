//! The appliance's configuration: one TOML file, every key defaulted for the local testbed.

use crate::group::GroupConfig;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::{CaFile, CaFileError, Secret};
use crate::source::ClusterConfig;
use crate::source::mq::MqConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "invalid config file {path}: [group] {key}: give etcd_endpoints, a name (1 to 64 \
         letters, digits, `_` or `-`), the advertise_url the other members reach this one's API \
         at, and a lease_ttl_seconds of 3 or more"
    )]
    Group { path: PathBuf, key: &'static str },
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
    /// Empty, the Pulsar client would connect without authentication.
    #[error(
        "the Pulsar token in {0} is empty: give it a value, or remove it to connect without \
         authentication"
    )]
    EmptyPulsarToken(&'static str),
    #[error("[api] token and [api] token_file are both set: keep one")]
    TwoTokens,
    #[error("cannot read [api] token_file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("[api] tls_cert_file and tls_key_file go together: {missing} is not set")]
    HalfTls { missing: &'static str },
    /// A CA file for a connection that is not TLS: the operator meant TLS and would not get it.
    #[error("{key} is set but {why}")]
    CaWithoutTls { key: String, why: String },
    #[error("{key}: {source}")]
    Ca { key: String, source: CaFileError },
    #[error(
        "invalid config file {path}: [source] and [clusters.source] both name the cluster \
         `source`: keep one"
    )]
    TwoSources { path: PathBuf },
    #[error(
        "invalid config file {path}: cluster name {name:?}: use 1 to 64 letters, digits, `_` or \
         `-`"
    )]
    ClusterName { path: PathBuf, name: String },
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the HTTP API. Loopback by default; any other address needs an API token.
    pub listen: SocketAddr,
    /// Folder holding the journal; created if missing.
    pub data_dir: PathBuf,
    /// The cluster named `source` (the table kept from before clusters had names), unless
    /// `[clusters.source]` is given: see [`Config::cluster`].
    pub source: ClusterConfig,
    /// Clusters by name (`[clusters.NAME]`): sources a task reads, targets it writes to by
    /// name.
    pub clusters: BTreeMap<String, ClusterConfig>,
    pub journal: JournalConfig,
    pub apply: ApplyConfig,
    pub api: ApiConfig,
    pub target: TargetConfig,
    /// Several appliances sharing their tasks (`[group]`); none: this one runs its own.
    pub group: Option<GroupConfig>,
}

/// How the appliance reaches the targets its tasks name.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TargetConfig {
    /// PEM CA certificate(s) an `https://` target's certificate must chain to, instead of the
    /// system's roots. Set here rather than per task: a path in an API request would let any
    /// caller make the appliance read a file.
    pub ca_file: Option<PathBuf>,
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
    /// PEM certificate chain the API serves HTTPS with; needs `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct JournalConfig {
    /// Per task: past this many bytes staged and not yet applied, the task's readers wait for
    /// its applier to drain. Other tasks go on.
    pub max_bytes: u64,
    /// Keep applied rows (for `dump`) instead of deleting them once the target has them.
    pub retain_applied: bool,
    /// The free space staging leaves on the journal's disk at least (it also leaves room for
    /// the journal's file to grow once): the applier needs it to commit, drain and shrink.
    /// Unset, the journal's default (64 MiB).
    pub disk_reserve_bytes: Option<u64>,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 30,
            retain_applied: false,
            disk_reserve_bytes: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8444)),
            data_dir: PathBuf::from("cdc-data"),
            source: ClusterConfig::default(),
            clusters: BTreeMap::new(),
            journal: JournalConfig::default(),
            apply: ApplyConfig::default(),
            api: ApiConfig::default(),
            target: TargetConfig::default(),
            group: None,
        }
    }
}

/// The cluster a task reads when it names none, and what `[source]` is.
pub const SOURCE_CLUSTER: &str = "source";

impl Config {
    /// The cluster of this name: `[clusters.NAME]`, or for `source` the `[source]` table
    /// when no `[clusters.source]` is given.
    pub fn cluster(&self, name: &str) -> Option<&ClusterConfig> {
        match self.clusters.get(name) {
            Some(cluster) => Some(cluster),
            None => (name == SOURCE_CLUSTER).then_some(&self.source),
        }
    }

    /// Every cluster by name, `source` among them.
    pub fn clusters(&self) -> impl Iterator<Item = (&str, &ClusterConfig)> {
        let source =
            (!self.clusters.contains_key(SOURCE_CLUSTER)).then_some((SOURCE_CLUSTER, &self.source));
        source
            .into_iter()
            .chain(self.clusters.iter().map(|(name, c)| (name.as_str(), c)))
    }

    /// The name of the cluster whose public API is `uri` (compared without a trailing `/`).
    pub fn cluster_at(&self, uri: &str) -> Option<&str> {
        let uri = uri.trim_end_matches('/');
        self.clusters()
            .find(|(_, c)| {
                c.milvus_uri
                    .as_deref()
                    .is_some_and(|u| u.trim_end_matches('/').eq_ignore_ascii_case(uri))
            })
            .map(|(name, _)| name)
    }

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

    /// Puts the Pulsar token in effect into `[source.mq]`: `env_token` (from
    /// `MILVUS_CDC_PULSAR_TOKEN`) over the config's `token`. An empty one is refused, as the
    /// API's is. On Kafka there is none to set.
    pub fn resolve_pulsar_token(&mut self, env_token: Option<String>) -> Result<(), ConfigError> {
        let MqConfig::Pulsar { token, .. } = &mut self.source.mq else {
            return Ok(());
        };
        let from = if env_token.is_some() {
            "MILVUS_CDC_PULSAR_TOKEN"
        } else {
            "[source.mq] token"
        };
        if let Some(env) = env_token {
            *token = Some(Secret::new(env));
        }
        if token.as_ref().is_some_and(|t| t.expose().trim().is_empty()) {
            return Err(ConfigError::EmptyPulsarToken(from));
        }
        Ok(())
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let parse_error = |source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        };
        let table: toml::Table = toml::from_str(&text).map_err(parse_error)?;
        let config: Self = toml::from_str(&text).map_err(parse_error)?;
        if table.contains_key("source") && config.clusters.contains_key(SOURCE_CLUSTER) {
            return Err(ConfigError::TwoSources {
                path: path.to_owned(),
            });
        }
        if let Some(name) = config.clusters.keys().find(|n| !valid_cluster_name(n)) {
            return Err(ConfigError::ClusterName {
                path: path.to_owned(),
                name: name.clone(),
            });
        }
        if let Some(group) = &config.group {
            let missing = [
                ("etcd_endpoints", group.etcd_endpoints.is_empty()),
                ("name", !valid_cluster_name(&group.name)),
                ("advertise_url", group.advertise_url.is_empty()),
                ("lease_ttl_seconds", group.lease_ttl_seconds < 3),
            ];
            if let Some((key, _)) = missing.iter().find(|(_, bad)| *bad) {
                return Err(ConfigError::Group {
                    path: path.to_owned(),
                    key,
                });
            }
        }
        config.check_tls()?;
        Ok(config)
    }

    /// The API's certificate and key, when it serves HTTPS. Both or neither.
    pub fn api_tls(&self) -> Result<Option<(&Path, &Path)>, ConfigError> {
        match (&self.api.tls_cert_file, &self.api.tls_key_file) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(ConfigError::HalfTls {
                missing: "tls_key_file",
            }),
            (None, Some(_)) => Err(ConfigError::HalfTls {
                missing: "tls_cert_file",
            }),
        }
    }

    /// Refuses TLS settings that contradict each other, without reading any file.
    pub fn check_tls(&self) -> Result<(), ConfigError> {
        self.api_tls()?;
        for (name, cluster) in self.clusters() {
            let table = self.table_of(name);
            if let Some(why) = cluster.etcd_ca_without_tls() {
                return Err(ConfigError::CaWithoutTls {
                    key: format!("[{table}] etcd_ca_file"),
                    why,
                });
            }
            if let Some(why) = cluster.mq.ca_without_tls() {
                return Err(ConfigError::CaWithoutTls {
                    key: format!("[{table}.mq] ca_file"),
                    why,
                });
            }
        }
        Ok(())
    }

    /// Reads every CA file the config names, so one that is missing or holds no certificate
    /// stops the server at start-up, named, rather than failing a task later.
    pub fn check_ca_files(&self) -> Result<(), ConfigError> {
        let mut files = vec![(
            "[target] ca_file".to_owned(),
            self.target.ca_file.as_deref(),
        )];
        for (name, cluster) in self.clusters() {
            let table = self.table_of(name);
            files.push((
                format!("[{table}] etcd_ca_file"),
                cluster.etcd_ca_file.as_deref(),
            ));
            files.push((format!("[{table}.mq] ca_file"), cluster.mq.ca_file()));
            files.push((
                format!("[{table}] milvus_ca_file"),
                cluster.milvus_ca_file.as_deref(),
            ));
        }
        for (key, path) in files {
            if let Some(path) = path {
                CaFile::read(path).map_err(|source| ConfigError::Ca { key, source })?;
            }
        }
        Ok(())
    }

    /// The config table a cluster is given in.
    pub fn table_of(&self, name: &str) -> String {
        if self.clusters.contains_key(name) {
            format!("clusters.{name}")
        } else {
            "source".to_owned()
        }
    }
}

/// A cluster's name: what a task names it by, in the API and in metrics.
pub fn valid_cluster_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pulsar(token_line: &str) -> Config {
        let text = format!(
            "[source.mq]\ntype = \"pulsar\"\nurl = \"pulsar://127.0.0.1:6650\"\n{token_line}"
        );
        toml::from_str(&text).unwrap()
    }

    fn pulsar_token(config: &Config) -> Option<Secret> {
        match &config.source.mq {
            MqConfig::Pulsar { token, .. } => token.clone(),
            MqConfig::Kafka { .. } => None,
        }
    }

    #[test]
    fn an_empty_pulsar_token_is_an_error_naming_where_it_came_from_not_authentication_off() {
        for blank in ["", " ", "\n"] {
            let err = pulsar("")
                .resolve_pulsar_token(Some(blank.into()))
                .unwrap_err();
            assert!(
                err.to_string().contains("MILVUS_CDC_PULSAR_TOKEN is empty"),
                "{err}"
            );
        }
        let err = pulsar("token = \"\"")
            .resolve_pulsar_token(None)
            .unwrap_err();
        assert!(
            err.to_string().contains("[source.mq] token is empty"),
            "{err}"
        );
    }

    #[test]
    fn the_environments_pulsar_token_overrides_the_files_and_none_means_no_authentication() {
        let mut config = pulsar("token = \"from-file\"");
        config.resolve_pulsar_token(None).unwrap();
        assert_eq!(pulsar_token(&config), Some(Secret::new("from-file")));
        config
            .resolve_pulsar_token(Some("from-env".into()))
            .unwrap();
        assert_eq!(pulsar_token(&config), Some(Secret::new("from-env")));
        let mut none = pulsar("");
        none.resolve_pulsar_token(None).unwrap();
        assert_eq!(pulsar_token(&none), None);
        let mut kafka = Config::default();
        kafka.resolve_pulsar_token(Some(String::new())).unwrap();
        assert_eq!(kafka, Config::default(), "Kafka has no Pulsar token");
    }

    #[test]
    fn an_empty_file_means_the_local_testbed() {
        let config: Config = toml::from_str("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(
            config.source.mq,
            MqConfig::Kafka {
                brokers: "127.0.0.1:9092".into(),
                tls: false,
                ca_file: None,
            }
        );
    }

    #[test]
    fn clusters_are_named_and_source_is_the_source_table_unless_given_as_a_cluster() {
        let config: Config = toml::from_str(
            "[source]\nmilvus_uri = \"http://a:19530\"\n\
             [clusters.backup]\netcd_root_path = \"dr\"\nchannel_prefix = \"dr\"\n\
             milvus_uri = \"http://b:19530\"\n\
             [clusters.backup.mq]\ntype = \"kafka\"\nbrokers = \"b:9092\"\n",
        )
        .unwrap();
        let names: Vec<&str> = config.clusters().map(|(name, _)| name).collect();
        assert_eq!(names, ["source", "backup"]);
        assert_eq!(config.cluster("source"), Some(&config.source));
        assert_eq!(config.cluster("backup").unwrap().etcd_root_path, "dr");
        assert_eq!(config.cluster("nowhere"), None);
        assert_eq!(config.cluster_at("http://B:19530/"), Some("backup"));
        assert_eq!(config.cluster_at("http://c:19530"), None);
        assert_eq!(config.table_of("backup"), "clusters.backup");
        assert_eq!(config.table_of("source"), "source");
    }

    #[test]
    fn loading_refuses_two_sources_and_a_cluster_name_the_api_could_not_take() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdc.toml");
        std::fs::write(&path, "[source]\n[clusters.source]\n").unwrap();
        let err = Config::load(&path).unwrap_err();
        assert!(matches!(err, ConfigError::TwoSources { .. }), "{err}");
        std::fs::write(&path, "[clusters.source]\netcd_root_path = \"x\"\n").unwrap();
        let only_cluster = Config::load(&path).unwrap();
        assert_eq!(only_cluster.cluster("source").unwrap().etcd_root_path, "x");
        std::fs::write(&path, "[clusters.\"two words\"]\n").unwrap();
        let err = Config::load(&path).unwrap_err();
        assert!(err.to_string().contains("\"two words\""), "{err}");
    }

    #[test]
    fn a_cluster_s_ca_file_without_tls_is_named_by_its_table() {
        let config: Config = toml::from_str(
            "[clusters.backup]\netcd_endpoints = [\"http://e:2379\"]\netcd_ca_file = \"/e.pem\"\n",
        )
        .unwrap();
        let err = config.check_tls().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("[clusters.backup] etcd_ca_file is set"),
            "{err}"
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
                namespace: "default".into(),
                ca_file: None,
            }
        );
    }

    #[test]
    fn journal_limits_are_configurable() {
        let config: Config = toml::from_str(
            "[journal]\nmax_bytes = 1024\nretain_applied = true\ndisk_reserve_bytes = 5\n",
        )
        .unwrap();
        assert_eq!(
            config.journal,
            JournalConfig {
                max_bytes: 1024,
                retain_applied: true,
                disk_reserve_bytes: Some(5),
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

    #[test]
    fn the_api_certificate_and_key_go_together() {
        let both: Config =
            toml::from_str("[api]\ntls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"").unwrap();
        assert_eq!(
            both.api_tls().unwrap(),
            Some((Path::new("c.pem"), Path::new("k.pem")))
        );
        assert_eq!(Config::default().api_tls().unwrap(), None);
        let cert_only: Config = toml::from_str("[api]\ntls_cert_file = \"c.pem\"").unwrap();
        let err = cert_only.check_tls().unwrap_err();
        assert!(err.to_string().contains("tls_key_file is not set"), "{err}");
        let key_only: Config = toml::from_str("[api]\ntls_key_file = \"k.pem\"").unwrap();
        let err = key_only.check_tls().unwrap_err();
        assert!(
            err.to_string().contains("tls_cert_file is not set"),
            "{err}"
        );
    }

    #[test]
    fn loading_refuses_half_a_tls_setting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdc.toml");
        std::fs::write(&path, "[api]\ntls_key_file = \"k.pem\"\n").unwrap();
        let err = Config::load(&path).unwrap_err();
        assert!(matches!(err, ConfigError::HalfTls { .. }), "{err}");
    }

    #[test]
    fn every_ca_file_is_a_key_of_its_section() {
        let config: Config = toml::from_str(
            "[target]\nca_file = \"/t.pem\"\n\
             [source]\netcd_endpoints = [\"https://etcd:2379\"]\netcd_ca_file = \"/e.pem\"\n\
             [source.mq]\ntype = \"kafka\"\nbrokers = \"k:9093\"\nca_file = \"/k.pem\"\n",
        )
        .unwrap();
        config.check_tls().unwrap();
        assert_eq!(config.target.ca_file.as_deref(), Some(Path::new("/t.pem")));
        assert_eq!(
            config.source.etcd_ca_file.as_deref(),
            Some(Path::new("/e.pem"))
        );
        assert_eq!(config.source.mq.ca_file(), Some(Path::new("/k.pem")));
        let err = toml::from_str::<Config>("[target]\nca_fil = \"/t.pem\"").unwrap_err();
        assert!(err.to_string().contains("ca_fil"), "{err}");
    }

    #[test]
    fn a_ca_file_for_a_plain_connection_is_an_error() {
        let etcd: Config = toml::from_str(
            "[source]\netcd_endpoints = [\"http://etcd:2379\"]\netcd_ca_file = \"/e.pem\"",
        )
        .unwrap();
        let err = etcd.check_tls().unwrap_err();
        assert!(err.to_string().contains("etcd_ca_file"), "{err}");
        // Without a scheme the CA file means TLS, as etcd's client reads it.
        let bare: Config =
            toml::from_str("[source]\netcd_endpoints = [\"etcd:2379\"]\netcd_ca_file = \"/e.pem\"")
                .unwrap();
        bare.check_tls().unwrap();

        let pulsar = |url: &str| -> Config {
            toml::from_str(&format!(
                "[source.mq]\ntype = \"pulsar\"\nurl = \"{url}\"\nca_file = \"/p.pem\""
            ))
            .unwrap()
        };
        let err = pulsar("pulsar://p:6650").check_tls().unwrap_err();
        assert!(err.to_string().contains("[source.mq] ca_file"), "{err}");
        pulsar("pulsar+ssl://p:6651").check_tls().unwrap();
    }

    #[test]
    fn a_ca_file_that_cannot_be_read_is_named() {
        let config: Config = toml::from_str("[target]\nca_file = \"/nonexistent/ca.pem\"").unwrap();
        let err = config.check_ca_files().unwrap_err().to_string();
        assert!(
            err.contains("[target] ca_file") && err.contains("/nonexistent/ca.pem"),
            "{err}"
        );
        Config::default().check_ca_files().unwrap();
    }
}
