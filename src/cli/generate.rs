//! `milvus-cdc generate man|completions DIR` (hidden): the man pages and shell completions the
//! Debian package ships, made from the CLI's own definition so they cannot drift from `--help`.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use clap_complete::Shell;

#[derive(Args)]
pub struct GenerateArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// One man page per command (`milvus-cdc.1`, `milvus-cdc-serve.1`, ...), in roff.
    Man { dir: PathBuf },
    /// Completions for bash (`milvus-cdc.bash`), zsh (`_milvus-cdc`) and fish
    /// (`milvus-cdc.fish`).
    Completions { dir: PathBuf },
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write {what} into {dir}: {source}")]
pub struct GenerateError {
    what: &'static str,
    dir: PathBuf,
    source: std::io::Error,
}

/// Writes what was asked for into its folder (created if missing); `cli` is the whole command
/// line's definition. Hidden commands (this one) are left out of both.
pub fn run(args: GenerateArgs, cli: clap::Command) -> Result<(), GenerateError> {
    match args.what {
        What::Man { dir } => write(&dir, "man pages", |dir| clap_mangen::generate_to(cli, dir)),
        What::Completions { dir } => write(&dir, "completions", |dir| completions(cli, dir)),
    }
}

fn write(
    dir: &Path,
    what: &'static str,
    make: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<(), GenerateError> {
    std::fs::create_dir_all(dir)
        .and_then(|()| make(dir))
        .map_err(|source| GenerateError {
            what,
            dir: dir.to_owned(),
            source,
        })
}

fn completions(cli: clap::Command, dir: &Path) -> std::io::Result<()> {
    let mut cli = visible(&cli);
    let name = cli.get_name().to_owned();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cli, &name, dir)?;
    }
    Ok(())
}

/// The command without its hidden subcommands, which the completion generators would offer
/// (the man page generator leaves them out itself). clap cannot remove a subcommand, so the
/// command is made again from what completions read: names, help, arguments and groups.
fn visible(cmd: &clap::Command) -> clap::Command {
    let mut out = clap::Command::new(cmd.get_name().to_owned())
        .args(cmd.get_arguments().cloned())
        .groups(cmd.get_groups().cloned())
        .subcommands(
            cmd.get_subcommands()
                .filter(|sub| !sub.is_hide_set())
                .map(visible),
        );
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    if let Some(version) = cmd.get_version() {
        out = out.version(version.to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// A command line shaped like the real one: a visible command with a nested one, and this
    /// hidden one.
    #[derive(Parser)]
    #[command(name = "tool")]
    struct Tool {
        #[command(subcommand)]
        command: ToolCommand,
    }

    #[derive(Subcommand)]
    enum ToolCommand {
        /// Runs it.
        Serve,
        /// Sub-commands.
        #[command(subcommand)]
        Task(TaskCommand),
        #[command(hide = true)]
        Generate(GenerateArgs),
    }

    #[derive(Subcommand)]
    enum TaskCommand {
        List,
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn every_visible_command_gets_a_man_page_and_the_hidden_one_none() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("man");
        let args = GenerateArgs {
            what: What::Man { dir: out.clone() },
        };
        run(args, <Tool as clap::CommandFactory>::command()).unwrap();
        assert_eq!(
            files(&out),
            ["tool-serve.1", "tool-task-list.1", "tool-task.1", "tool.1"]
        );
        let top = std::fs::read_to_string(out.join("tool.1")).unwrap();
        assert!(top.contains("Runs it"), "{top}");
        assert!(!top.contains("generate"), "{top}");
    }

    #[test]
    fn completions_are_written_for_bash_zsh_and_fish_without_the_hidden_command() {
        let dir = tempfile::tempdir().unwrap();
        let args = GenerateArgs {
            what: What::Completions {
                dir: dir.path().to_owned(),
            },
        };
        run(args, <Tool as clap::CommandFactory>::command()).unwrap();
        assert_eq!(files(dir.path()), ["_tool", "tool.bash", "tool.fish"]);
        let bash = std::fs::read_to_string(dir.path().join("tool.bash")).unwrap();
        assert!(bash.contains("serve"), "{bash}");
        assert!(!bash.contains("generate"), "{bash}");
    }

    #[test]
    fn a_folder_that_cannot_be_made_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let args = GenerateArgs {
            what: What::Man {
                dir: file.join("man"),
            },
        };
        let err = run(args, <Tool as clap::CommandFactory>::command()).unwrap_err();
        assert!(
            err.to_string().starts_with("cannot write man pages into "),
            "{err}"
        );
        assert!(err.to_string().contains("a-file/man"), "{err}");
    }
}
