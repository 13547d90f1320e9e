//! `micctl crash list [CARDS]` and `micctl crash show BUNDLE`: mpssd's
//! crash forensics bundles (`DIR/var/lib/mpssd/crash/micN-TIME/`), read
//! from the files by [`libmic::crash`] — mpssd need not be running.
//!
//! Everything in a bundle that the card wrote (its log, its console, its
//! device page) is printed with control characters escaped.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use libmic::attrs::{escape_untrusted, escape_untrusted_keep_tabs, quote_value};
use libmic::crash::{self, Bundle, BundleName};
use mpssd_proto::crash as layout;
use mpssd_proto::timefmt;
use serde_json::{Value, json};

use crate::cli::{CrashDirArg, CrashListArgs, CrashShowArgs};
use crate::exit::Exit;
use crate::output::{self, Cell, Style, status_style};
use crate::select::Selection;
use crate::{Ctx, NotFound, UsageError};

/// How much of the end of a file `crash show` reads for its last lines.
const TAIL_BYTES: usize = 256 * 1024;
/// The most of one file `crash show --file` prints (its end); mpssd caps
/// its files far below this.
const FILE_BYTES: usize = 64 << 20;

/// The crash directory: `--dir` under the root, unless absolute.
fn crash_dir(ctx: &Ctx, arg: &CrashDirArg) -> PathBuf {
    if arg.dir.is_absolute() {
        arg.dir.clone()
    } else {
        ctx.root.join(&arg.dir)
    }
}

/// One bundle as `list` and `show` report it.
struct Facts {
    bundle: Bundle,
    summary: Result<crash::Summary, String>,
    panic: Option<String>,
    files: Vec<crash::FileInfo>,
}

impl Facts {
    fn read(bundle: Bundle) -> Self {
        Self {
            summary: bundle.summary().map_err(|e| error_text(&e)),
            panic: bundle.panic(),
            files: bundle.files(),
            bundle,
        }
    }

    fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    fn status(&self) -> Option<libmic::MicStatus> {
        self.summary.as_ref().ok().and_then(|s| s.shutdown_status)
    }

    fn to_json(&self) -> Value {
        let n = &self.bundle.name;
        json!({
            "bundle": n.to_string(),
            "path": self.bundle.path.display().to_string(),
            "card": format!("mic{}", n.card),
            "ts_ms": n.at_ms,
            "time": timefmt::rfc3339_ms(n.at_ms),
            "shutdown_status": self.status().map(libmic::MicStatus::as_str),
            "bytes": self.bytes(),
            "panic": self.panic,
            "not_captured": self.summary.as_ref().map(|s| s.errors.clone()).unwrap_or_default(),
            "summary_error": self.summary.as_ref().err(),
        })
    }
}

fn error_text(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let _ = write!(s, ": {c}");
        src = c.source();
    }
    s
}

/// `12 B`, `4.0 KiB`, `3.2 MiB`.
fn human_bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => tenths(n * 10 / 1024, "KiB"),
        _ => tenths(n / 1024 * 10 / 1024, "MiB"),
    }
}

fn tenths(t: u64, unit: &str) -> String {
    format!("{}.{} {unit}", t / 10, t % 10)
}

pub fn list(ctx: &Ctx, args: &CrashListArgs) -> anyhow::Result<Exit> {
    let sel = Selection::parse(&args.cards.cards)?;
    let dir = crash_dir(ctx, &args.dir);
    let found: Vec<Facts> = crash::bundles(&dir)?
        .into_iter()
        .filter(|b| sel.contains(b.name.card))
        .map(Facts::read)
        .collect();
    if ctx.json {
        output::print_json(&output::document(
            "crash list",
            json!({
                "dir": dir.display().to_string(),
                "bundles": found.iter().map(Facts::to_json).collect::<Vec<_>>(),
            }),
        ))?;
        return Ok(Exit::Ok);
    }
    if found.is_empty() {
        let of = if sel.is_all() {
            String::new()
        } else {
            format!(" of {}", args.cards.cards.join(","))
        };
        output::print_text(&format!("no crash bundles{of} in {}\n", dir.display()))?;
        return Ok(Exit::Ok);
    }
    let rows: Vec<Vec<Cell>> = found
        .iter()
        .map(|f| {
            let n = &f.bundle.name;
            vec![
                Cell::new(n.to_string()),
                Cell::new(format!("mic{}", n.card)),
                Cell::new(timefmt::rfc3339_ms(n.at_ms)),
                f.status()
                    .map_or_else(|| Cell::new("-"), |s| Cell::styled(s.as_str(), status_style(s))),
                Cell::new(human_bytes(f.bytes())),
                Cell::new(
                    f.panic
                        .as_deref()
                        .map_or_else(|| "-".to_owned(), escape_untrusted),
                ),
            ]
        })
        .collect();
    output::print_text(&output::table(
        &["BUNDLE", "CARD", "TIME", "STATUS", "SIZE", "PANIC"],
        &rows,
        ctx.color,
    ))?;
    Ok(Exit::Ok)
}

/// The bundle BUNDLE names: a path, a name in `dir`, or a card's newest.
fn resolve(dir: &Path, arg: &str) -> anyhow::Result<Bundle> {
    let card = arg.strip_suffix(":latest").unwrap_or(arg);
    if let Some(id) = libmic::root::parse_card_id(card) {
        let newest = crash::bundles(dir)?.into_iter().rfind(|b| b.name.card == id);
        return newest
            .ok_or_else(|| NotFound(format!("mic{id} has no crash bundles in {}", dir.display())).into());
    }
    if arg.ends_with(":latest") {
        return Err(UsageError(format!(
            "{}: only a card (mic0:latest) has a latest bundle",
            quote_value(arg)
        ))
        .into());
    }
    let path = if BundleName::parse(arg).is_some() {
        dir.join(arg)
    } else {
        PathBuf::from(arg)
    };
    let Some(bundle) = Bundle::at(&path) else {
        return Err(UsageError(format!(
            "{} is not a crash bundle (micN-TIME, as crash list shows), a card, or card:latest",
            quote_value(arg)
        ))
        .into());
    };
    if !std::fs::symlink_metadata(&bundle.path).is_ok_and(|m| m.is_dir()) {
        return Err(NotFound(format!("no crash bundle {}", bundle.path.display())).into());
    }
    Ok(bundle)
}

/// The last `n` lines of a file of the bundle (escaped); empty if it
/// cannot be read.
fn last_lines(b: &Bundle, file: &str, n: usize) -> Vec<String> {
    let Ok(bytes) = b.tail(file, TAIL_BYTES) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .copied()
        .map(escape_untrusted_keep_tabs)
        .collect()
}

pub fn show(ctx: &Ctx, args: &CrashShowArgs) -> anyhow::Result<Exit> {
    let dir = crash_dir(ctx, &args.dir);
    let bundle = resolve(&dir, &args.bundle)?;
    if let Some(file) = &args.file {
        let bytes = bundle.tail(file, FILE_BYTES)?;
        if ctx.json {
            output::print_json(&output::document(
                "crash show",
                json!({
                    "bundle": Facts::read(bundle).to_json(),
                    "file": { "name": file, "bytes": bytes.len(), "text": String::from_utf8_lossy(&bytes) },
                }),
            ))?;
        } else {
            let mut text = String::new();
            for l in String::from_utf8_lossy(&bytes).lines() {
                text.push_str(&escape_untrusted_keep_tabs(l));
                text.push('\n');
            }
            output::print_text(&text)?;
        }
        return Ok(Exit::Ok);
    }
    let facts = Facts::read(bundle);
    let b = &facts.bundle;
    let timeline = last_lines(b, layout::TIMELINE, usize::MAX);
    let card_log = last_lines(b, layout::CARD_LOG, args.lines);
    let console = last_lines(b, layout::CONSOLE_LOG, args.lines);
    if ctx.json {
        let mut v = facts.to_json();
        v["files"] = json!(
            facts
                .files
                .iter()
                .map(|f| json!({ "name": f.name, "bytes": f.bytes }))
                .collect::<Vec<_>>()
        );
        v["timeline"] = json!(timeline);
        v["card_log"] = json!(card_log);
        v["console"] = json!(console);
        output::print_json(&output::document("crash show", json!({ "bundle": v })))?;
        return Ok(Exit::Ok);
    }
    let c = ctx.color;
    let mut out = format!("{}\n", Style::Bold.paint(&b.name.to_string(), c));
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "  {k:<18}{v}");
    };
    line("path", b.path.display().to_string());
    line("card", format!("mic{}", b.name.card));
    line("time", timefmt::rfc3339_ms(b.name.at_ms));
    line(
        "shutdown_status",
        facts
            .status()
            .map_or_else(|| "-".to_owned(), |s| status_style(s).paint(s.as_str(), c)),
    );
    line(
        "panic",
        facts.panic.as_deref().map_or_else(
            || "-".to_owned(),
            |p| Style::BoldRed.paint(&escape_untrusted(p), c),
        ),
    );
    let files: Vec<String> = facts
        .files
        .iter()
        .map(|f| format!("{} {}", f.name, human_bytes(f.bytes)))
        .collect();
    line("files", files.join(", "));
    match &facts.summary {
        Ok(s) => {
            for e in &s.errors {
                line("not captured", escape_untrusted(e));
            }
        }
        Err(e) => line("summary", Style::Red.paint(e, c)),
    }
    let mut section = |title: &str, lines: &[String]| {
        let _ = writeln!(out, "{}", Style::Bold.paint(&format!("── {title}"), c));
        if lines.is_empty() {
            out.push_str("  -\n");
        }
        for l in lines {
            let _ = writeln!(out, "  {l}");
        }
    };
    section("timeline", &timeline);
    section(&format!("card log (last {} lines)", card_log.len()), &card_log);
    section(&format!("console (last {} lines)", console.len()), &console);
    output::print_text(&out)?;
    Ok(Exit::Ok)
}
