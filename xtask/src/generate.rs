//! `cargo xtask gen`: man pages and shell completions, generated from the one
//! clap definition of each tool (`CommandFactory::command()`).
//!
//! - `man/<bin>.1` and `man/<bin>-<subcommand>.1` (clap_mangen, no date, so
//!   the output depends only on the definitions and the crate version);
//! - `shell-completions/<shell>/<file>` for bash, zsh, fish, elvish and
//!   PowerShell (clap_complete), named as each shell looks them up; the bash
//!   script also completes card names ([`crate::bash_cards`]).
//!
//! Both directories belong to the generator: `gen` removes files in them it
//! did not generate, and `gen --check` reports them.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::{Command, CommandFactory};
use clap_complete::{Generator, Shell};
use clap_mangen::Man;

use crate::bash_cards;

/// A documented binary: its name and its clap definition.
pub type Binary = (&'static str, fn() -> Command);

/// Every binary whose man pages and completions are generated. Adding a tool
/// is one line.
pub const BINARIES: &[Binary] = &[
    ("micctl", <micctl::cli::Cli as CommandFactory>::command),
    ("micemu", <micemu::cli::Cli as CommandFactory>::command),
    ("mictop", <mictop::cli::Cli as CommandFactory>::command),
    ("mpssd", <mpssd::cli::Cli as CommandFactory>::command),
];

/// Where the man pages go, relative to the workspace root.
pub const MAN_DIR: &str = "man";
/// Where the shell completions go, relative to the workspace root.
pub const COMPLETIONS_DIR: &str = "shell-completions";
/// The directories the generator owns entirely.
pub const OUTPUT_DIRS: [&str; 2] = [MAN_DIR, COMPLETIONS_DIR];

/// The shells completions are generated for.
pub const SHELLS: [Shell; 5] = [
    Shell::Bash,
    Shell::Zsh,
    Shell::Fish,
    Shell::Elvish,
    Shell::PowerShell,
];

/// The manual the pages belong to (the centre of the `.TH` footer).
const MANUAL: &str = "Intel MIC X100 host tools";

/// Generated files: path relative to the workspace root → contents.
pub type Artifacts = BTreeMap<PathBuf, Vec<u8>>;

/// Renders every artifact of `binaries` in memory.
pub fn render(binaries: &[Binary]) -> Result<Artifacts> {
    let mut out = Artifacts::new();
    for &(name, command) in binaries {
        let cmd = command();
        if cmd.get_name() != name {
            bail!(
                "binary {name:?} is listed with the command line of {:?}",
                cmd.get_name()
            );
        }
        man_pages(&cmd, &mut out).with_context(|| format!("man pages of {name}"))?;
        completions(&cmd, &mut out);
    }
    Ok(out)
}

fn man_pages(cmd: &Command, out: &mut Artifacts) -> Result<()> {
    // As clap_mangen::generate_to: no `help` pages, display names
    // (`micemu-inject`) assigned by building the whole tree once.
    let mut cmd = cmd.clone().disable_help_subcommand(true);
    cmd.build();
    let source = format!("{} {}", cmd.get_name(), cmd.get_version().unwrap_or_default());
    add_man_pages(&cmd, source.trim_end(), out)
}

fn add_man_pages(cmd: &Command, source: &str, out: &mut Artifacts) -> Result<()> {
    let man = Man::new(cmd.clone()).source(source).manual(MANUAL);
    let mut page = Vec::new();
    man.render(&mut page)?;
    let title = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
    let page = with_undated_title(&page, title, source)?;
    out.insert(Path::new(MAN_DIR).join(man.get_filename()), page);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        add_man_pages(sub, source, out)?;
    }
    Ok(())
}

/// clap_mangen writes an unset date as nothing between two spaces in `.TH`,
/// which roff reads as no argument at all: the source lands in the date's
/// place and the manual name is lost. This writes the `.TH` line with every
/// argument quoted and the date explicitly empty.
fn with_undated_title(page: &[u8], title: &str, source: &str) -> Result<Vec<u8>> {
    let text = std::str::from_utf8(page).context("clap_mangen wrote non-UTF-8")?;
    let Some(th) = text.lines().find(|l| l.starts_with(".TH ")) else {
        bail!("clap_mangen wrote no .TH line");
    };
    if [title, source, MANUAL].iter().any(|a| a.contains('"')) {
        bail!("a man page title argument contains a double quote");
    }
    let fixed = format!(r#".TH "{title}" 1 "" "{source}" "{MANUAL}""#);
    Ok(text.replacen(th, &fixed, 1).into_bytes())
}

fn completions(cmd: &Command, out: &mut Artifacts) {
    let name = cmd.get_name().to_owned();
    for shell in SHELLS {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), &name, &mut script);
        if shell == Shell::Bash {
            script.extend_from_slice(bash_cards::hook(cmd).as_bytes());
        }
        out.insert(completion_path(shell, &name), script);
    }
}

/// Where the completion script of `bin` for `shell` goes: the file name each
/// shell's completion loader looks for (bash-completion wants the bare
/// command name).
#[must_use]
pub fn completion_path(shell: Shell, bin: &str) -> PathBuf {
    let file = match shell {
        Shell::Bash => bin.to_owned(),
        other => other.file_name(bin),
    };
    Path::new(COMPLETIONS_DIR).join(shell.to_string()).join(file)
}

/// What `gen` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub written: usize,
    pub unchanged: usize,
    pub removed: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "generated artifacts: {} written, {} unchanged, {} removed (in {})",
            self.written,
            self.unchanged,
            self.removed,
            OUTPUT_DIRS.map(|d| format!("{d}/")).join(", ")
        )
    }
}

/// `cargo xtask gen`: generates every artifact under `root`.
pub fn write(root: &Path) -> Result<Summary> {
    write_artifacts(root, &render(BINARIES)?)
}

/// Writes `artifacts` under `root`, leaving identical files untouched and
/// removing files in [`OUTPUT_DIRS`] that are not among them.
pub fn write_artifacts(root: &Path, artifacts: &Artifacts) -> Result<Summary> {
    let mut summary = Summary::default();
    for (rel, contents) in artifacts {
        let path = root.join(rel);
        if fs::read(&path).is_ok_and(|old| old == *contents) {
            summary.unchanged += 1;
            continue;
        }
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        summary.written += 1;
    }
    for rel in list_outputs(root)? {
        if !artifacts.contains_key(&rel) {
            let path = root.join(&rel);
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            summary.removed += 1;
        }
    }
    Ok(summary)
}

/// Every file under the [`OUTPUT_DIRS`] of `root`, relative to `root`, sorted.
pub fn list_outputs(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for dir in OUTPUT_DIRS {
        walk(root, Path::new(dir), &mut files)?;
    }
    files.sort();
    Ok(files)
}

fn walk(root: &Path, rel: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let dir = root.join(rel);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let rel = rel.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            walk(root, &rel, files)?;
        } else {
            files.push(rel);
        }
    }
    Ok(())
}

/// How the committed artifacts differ from freshly generated ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Staleness {
    /// Generated, but different from the committed file.
    pub stale: Vec<PathBuf>,
    /// Generated, but not committed.
    pub missing: Vec<PathBuf>,
    /// Committed, but no longer generated.
    pub extra: Vec<PathBuf>,
}

impl Staleness {
    #[must_use]
    pub fn is_fresh(&self) -> bool {
        self.stale.is_empty() && self.missing.is_empty() && self.extra.is_empty()
    }
}

impl fmt::Display for Staleness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_fresh() {
            return write!(f, "generated artifacts are up to date");
        }
        writeln!(
            f,
            "generated artifacts are out of date with the clap definitions:"
        )?;
        for (what, paths) in [
            ("stale  ", &self.stale),
            ("missing", &self.missing),
            ("extra  ", &self.extra),
        ] {
            for p in paths {
                writeln!(f, "  {what} {}", p.display())?;
            }
        }
        write!(
            f,
            "fix: run `cargo xtask gen` and commit {}",
            OUTPUT_DIRS.map(|d| format!("{d}/")).join(" and ")
        )
    }
}

/// Generates every artifact into a temporary directory and compares it with
/// what is under `root`.
pub fn compare(root: &Path) -> Result<Staleness> {
    let fresh = tempfile::tempdir().context("creating a temporary directory")?;
    write_artifacts(fresh.path(), &render(BINARIES)?)?;
    let generated = list_outputs(fresh.path())?;
    let committed = list_outputs(root)?;
    let mut report = Staleness::default();
    for rel in &generated {
        match fs::read(root.join(rel)) {
            Ok(old) if old == fs::read(fresh.path().join(rel))? => {}
            Ok(_) => report.stale.push(rel.clone()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => report.missing.push(rel.clone()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", root.join(rel).display())),
        }
    }
    report.extra = committed
        .into_iter()
        .filter(|rel| generated.binary_search(rel).is_err())
        .collect();
    Ok(report)
}

/// `cargo xtask gen --check`: fails, listing the differences and the fix,
/// unless the artifacts under `root` are what `gen` would write.
pub fn check(root: &Path) -> Result<()> {
    let report = compare(root)?;
    if !report.is_fresh() {
        bail!("{report}");
    }
    eprintln!("xtask: {report}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_binary_has_a_page_per_subcommand_and_five_completions() {
        let artifacts = render(BINARIES).unwrap();
        for &(name, command) in BINARIES {
            let cmd = command();
            assert!(artifacts.contains_key(&Path::new(MAN_DIR).join(format!("{name}.1"))));
            for sub in cmd.get_subcommands() {
                let page = Path::new(MAN_DIR).join(format!("{name}-{}.1", sub.get_name()));
                assert!(artifacts.contains_key(&page), "{}", page.display());
            }
            for shell in SHELLS {
                assert!(artifacts.contains_key(&completion_path(shell, name)));
            }
            assert!(!artifacts.contains_key(&Path::new(MAN_DIR).join(format!("{name}-help.1"))));
        }
    }

    #[test]
    fn output_is_deterministic_and_undated() {
        let a = render(BINARIES).unwrap();
        assert_eq!(a, render(BINARIES).unwrap());
        for (path, page) in a.iter().filter(|(p, _)| p.starts_with(MAN_DIR)) {
            let text = String::from_utf8_lossy(page);
            let th = text.lines().find(|l| l.starts_with(".TH ")).unwrap();
            // `.TH title section date source manual`: the date is left empty.
            assert!(th.contains(r#" 1 "" ""#), "{}: {th}", path.display());
            assert!(
                th.ends_with(&format!(r#""{MANUAL}""#)),
                "{}: {th}",
                path.display()
            );
        }
    }

    #[test]
    fn completion_file_names() {
        let names: Vec<_> = SHELLS.map(|s| completion_path(s, "micctl")).into_iter().collect();
        let expect = [
            "bash/micctl",
            "zsh/_micctl",
            "fish/micctl.fish",
            "elvish/micctl.elv",
            "powershell/_micctl.ps1",
        ];
        for (got, want) in names.iter().zip(expect) {
            assert_eq!(*got, Path::new(COMPLETIONS_DIR).join(want));
        }
    }

    #[test]
    fn write_then_compare_is_fresh_and_detects_every_kind_of_difference() {
        let dir = tempfile::tempdir().unwrap();
        let artifacts = render(BINARIES).unwrap();
        let first = write_artifacts(dir.path(), &artifacts).unwrap();
        assert_eq!(first.written, artifacts.len());
        let again = write_artifacts(dir.path(), &artifacts).unwrap();
        assert_eq!(
            again,
            Summary {
                written: 0,
                unchanged: artifacts.len(),
                removed: 0
            }
        );
        assert!(compare(dir.path()).unwrap().is_fresh());

        let mut paths = artifacts.keys();
        let stale = paths.next().unwrap();
        let missing = paths.next().unwrap();
        fs::write(dir.path().join(stale), "old\n").unwrap();
        fs::remove_file(dir.path().join(missing)).unwrap();
        let extra = Path::new(MAN_DIR).join("gone-tool.1");
        fs::write(dir.path().join(&extra), "x").unwrap();
        let report = compare(dir.path()).unwrap();
        assert_eq!(report.stale, std::slice::from_ref(stale));
        assert_eq!(report.missing, std::slice::from_ref(missing));
        assert_eq!(report.extra, std::slice::from_ref(&extra));
        let msg = report.to_string();
        assert!(
            msg.contains("cargo xtask gen") && msg.contains(&extra.display().to_string()),
            "{msg}"
        );

        let fixed = write_artifacts(dir.path(), &artifacts).unwrap();
        assert_eq!((fixed.written, fixed.removed), (2, 1));
        assert!(compare(dir.path()).unwrap().is_fresh());
    }
}
