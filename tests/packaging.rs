//! What the Debian package ships, checked against the code so it cannot drift: the example
//! config (packaging/cdc.toml) read by the real config loader, as shipped and with every setting
//! it leaves commented out switched on; the man pages the real binary generates; the README's
//! list of commands against `milvus-cdc --help`.

use std::path::{Path, PathBuf};
use std::process::Command;

use milvus_cdc::config::Config;

fn packaged() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/cdc.toml")
}

/// The config with each commented-out setting (`#key = ...`, `#[table]`) uncommented; prose
/// comments (`# ...`) stay.
fn everything_switched_on() -> String {
    let text = std::fs::read_to_string(packaged()).unwrap();
    text.lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest) if !rest.is_empty() && !rest.starts_with([' ', '#']) => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_packaged_config_loads_as_shipped_and_keeps_the_journal_in_var_lib() {
    let config = Config::load(&packaged()).unwrap();
    assert_eq!(config.data_dir, Path::new("/var/lib/milvus-cdc"));
    assert!(config.listen.ip().is_loopback(), "{}", config.listen);
    // Loopback without a token is allowed: the service starts as installed.
    assert_eq!(config.api_token(None).unwrap(), None);
    assert!(config.group.is_none());
    config.check_ca_files().unwrap();
    let defaults = Config {
        data_dir: config.data_dir.clone(),
        ..Config::default()
    };
    assert_eq!(
        config, defaults,
        "the values shown uncommented are the defaults"
    );
}

#[test]
fn every_setting_the_packaged_config_leaves_commented_out_is_a_real_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cdc.toml");
    std::fs::write(&path, everything_switched_on()).unwrap();
    let config = Config::load(&path).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        config.api.token_file.as_deref(),
        Some(Path::new("/etc/milvus-cdc/api-token"))
    );
    assert!(config.api.tls_cert_file.is_some() && config.api.tls_key_file.is_some());
    assert!(config.source.milvus_token.is_some());
    assert!(config.source.mq.ca_file().is_some());
    assert!(config.target.ca_file.is_some());
    assert!(
        config
            .cluster("backup")
            .is_some_and(|c| c.milvus_uri.is_some())
    );
    let group = config.group.expect("[group]");
    assert_eq!(group.name, "cdc-1");
    // The defaults the comments state are the code's.
    let defaults = Config::default();
    assert_eq!(config.journal.max_bytes, defaults.journal.max_bytes);
    assert_eq!(
        config.journal.retain_applied,
        defaults.journal.retain_applied
    );
    assert_eq!(config.apply, defaults.apply);
}

fn milvus_cdc(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_milvus-cdc"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_package_gets_a_man_page_per_command_and_none_for_the_hidden_generate() {
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man");
    milvus_cdc(&["generate", "man", man.to_str().unwrap()]);
    let pages: Vec<String> = std::fs::read_dir(&man)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for page in [
        "milvus-cdc.1",
        "milvus-cdc-serve.1",
        "milvus-cdc-task-skip.1",
    ] {
        assert!(pages.iter().any(|p| p == page), "{page} not in {pages:?}");
    }
    assert!(!pages.iter().any(|p| p.contains("generate")), "{pages:?}");
}

#[test]
fn the_readme_lists_every_command_as_help_describes_it() {
    let help = milvus_cdc(&["--help"]);
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    // `  name   description`, one line each (clap does not wrap without a terminal).
    let commands: Vec<(&str, &str)> = help
        .lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.trim().split_once(' '))
        .filter(|(name, _)| *name != "help")
        .collect();
    assert!(commands.len() >= 7, "{help}");
    for (name, about) in commands {
        let row = format!("| `milvus-cdc {name}` | {} |", about.trim());
        assert!(readme.contains(&row), "README.md has no row\n{row}");
    }
}
