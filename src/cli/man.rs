//! `cronwarden man`: the man pages, generated from the clap definition
//! with clap_mangen, so they can never disagree with `--help`.
//!
//! A subcommand rather than a build step: the page always matches the
//! binary that prints it (an upgraded binary prints the new page), and no
//! build script has to compile the CLI definition a second time. The main
//! page cronwarden(1) lists the commands as cronwarden-COMMAND(1); `--dir`
//! writes those pages too, so every reference resolves.

use std::{io::Write, path::Path, process::ExitCode};

use anyhow::Context;
use clap::CommandFactory;

use super::Cli;

pub(crate) fn man(dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let cli = Cli::command();
    let Some(dir) = dir else {
        // Into a buffer first, as the completions: a closed pipe stays quiet.
        let mut page = vec![];
        clap_mangen::Man::new(cli).render(&mut page)?;
        std::io::stdout().lock().write_all(&page)?;
        return Ok(ExitCode::SUCCESS);
    };
    let mut written = vec![];
    for (name, cmd) in pages(cli) {
        let mut page = vec![];
        clap_mangen::Man::new(cmd).render(&mut page)?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    for p in written {
        println!("{}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The main page and one per visible command (nested ones included, as
/// `cronwarden-alerts-test`), each named as the main page refers to it.
fn pages(cli: clap::Command) -> Vec<(String, clap::Command)> {
    fn walk(prefix: &str, cmd: &clap::Command, out: &mut Vec<(String, clap::Command)>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let name = format!("{prefix}-{}", sub.get_name());
            out.push((
                name.clone(),
                sub.clone()
                    .name(name.clone())
                    .bin_name(name.replace('-', " ")),
            ));
            walk(&name, sub, out);
        }
    }
    let mut out = vec![];
    walk("cronwarden", &cli, &mut out);
    out.insert(0, ("cronwarden".into(), cli));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_for_every_visible_command_and_none_for_the_worker() {
        let names: Vec<String> = pages(Cli::command()).into_iter().map(|(n, _)| n).collect();
        for want in [
            "cronwarden",
            "cronwarden-run",
            "cronwarden-status",
            "cronwarden-import",
            "cronwarden-alerts-test",
            "cronwarden-man",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
        assert!(!names.iter().any(|n| n == "cronwarden-worker"), "{names:?}");
    }
}
