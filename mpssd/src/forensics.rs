//! Crash forensics: one directory per crash under
//! `DIR/var/lib/mpssd/crash/micN-<time>/`, written while the card is still
//! `shutting_down` (its log is readable only until the reset). The layout —
//! names, files, `summary.json` — is [`mpssd_proto::crash`]'s, which the
//! tools read bundles by.
//!
//! Every file is capped at `max_file_bytes` (a longer log keeps its end);
//! bundles are written under a temporary name and renamed whole; after
//! each, the oldest are removed until at most `keep` remain and all of them
//! fit in `max_total_bytes`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use libmic::{Card, MicStatus, klog};
use mpssd_proto::crash::{self, BundleName, Summary};
use mpssd_proto::timefmt;

use crate::config::CrashConfig;

/// Everything a bundle holds that the card does not provide.
#[derive(Debug, Clone)]
pub struct BundleInput {
    pub card: Card,
    pub at: SystemTime,
    pub status: Option<MicStatus>,
    pub timeline: Vec<String>,
    /// `None`: no console backend.
    pub console: Option<Vec<u8>>,
}

/// Writes a bundle into `dir` (created if missing) and prunes old ones.
/// Returns the bundle's path. Pieces that cannot be read are listed in
/// `summary.json` and `errors.txt`; only failing to write is an error.
pub fn write_bundle(dir: &Path, limits: &CrashConfig, input: &BundleInput) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let mut name = BundleName::new(input.card.id(), input.at);
    while dir.join(name.to_string()).exists() {
        name = name.clone().with_seq(name.seq + 1);
    }
    let tmp = dir.join(name.partial());
    let name = name.to_string();
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir(&tmp)?;
    let cap = usize::try_from(limits.max_file_bytes).unwrap_or(usize::MAX);
    let mut errors: Vec<String> = Vec::new();
    let mut files: Vec<&str> = Vec::new();
    let put = |file: &'static str, bytes: &[u8], files: &mut Vec<&str>| -> io::Result<()> {
        fs::write(tmp.join(file), tail(bytes, cap))?;
        files.push(file);
        Ok(())
    };

    match input.card.log_buf_raw() {
        Ok(raw) => {
            let mut text = String::new();
            for r in klog::decode(&raw) {
                text.push_str(&r.dmesg_line());
                text.push('\n');
            }
            put(crash::CARD_LOG, text.as_bytes(), &mut files)?;
        }
        Err(e) => errors.push(format!("{}: {e}", crash::CARD_LOG)),
    }
    match input.card.dp_raw() {
        Ok(t) => put(crash::DP, t.as_bytes(), &mut files)?,
        Err(e) => errors.push(format!("{}: {e}", crash::DP)),
    }
    match input.card.smpt_raw() {
        Ok(t) => put(crash::SMPT, t.as_bytes(), &mut files)?,
        Err(e) => errors.push(format!("{}: {e}", crash::SMPT)),
    }
    let status = input.status.map_or(crash::NO_STATUS, MicStatus::as_str);
    put(
        crash::SHUTDOWN_STATUS,
        format!("{status}\n").as_bytes(),
        &mut files,
    )?;
    let mut timeline = input.timeline.join("\n");
    timeline.push('\n');
    put(crash::TIMELINE, timeline.as_bytes(), &mut files)?;
    match &input.console {
        Some(c) => put(crash::CONSOLE_LOG, c, &mut files)?,
        None => put(crash::CONSOLE_LOG, crash::NO_CONSOLE.as_bytes(), &mut files)?,
    }
    if !errors.is_empty() {
        put(
            crash::ERRORS,
            format!("{}\n", errors.join("\n")).as_bytes(),
            &mut files,
        )?;
    }
    let summary = Summary {
        card: input.card.name().to_owned(),
        time: timefmt::rfc3339(input.at),
        shutdown_status: input.status,
        files: files.iter().map(|f| (*f).to_owned()).collect(),
        errors,
    };
    let mut json = serde_json::to_vec_pretty(&summary).map_err(io::Error::other)?;
    json.push(b'\n');
    fs::write(tmp.join(crash::SUMMARY), json)?;
    let path = dir.join(&name);
    fs::rename(&tmp, &path)?;
    prune(dir, limits, &path)?;
    Ok(path)
}

/// The last `cap` bytes of `bytes`.
fn tail(bytes: &[u8], cap: usize) -> &[u8] {
    &bytes[bytes.len().saturating_sub(cap)..]
}

fn dir_size(p: &Path) -> u64 {
    fs::read_dir(p)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Removes the oldest bundles (never `keep_path`) until at most
/// `limits.keep` remain and their total size fits `limits.max_total_bytes`.
/// Leftover `.partial` directories of an interrupted write go too.
pub fn prune(dir: &Path, limits: &CrashConfig, keep_path: &Path) -> io::Result<()> {
    let mut bundles: Vec<((u64, u32, u32), PathBuf, u64)> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if !entry.file_type()?.is_dir() {
            continue;
        }
        if crash::is_partial(&name) {
            let _ = fs::remove_dir_all(&path);
            continue;
        }
        if let Some(b) = BundleName::parse(&name) {
            let size = dir_size(&path);
            bundles.push((b.sort_key(), path, size));
        }
    }
    bundles.sort();
    let mut total: u64 = bundles.iter().map(|b| b.2).sum();
    let mut count = bundles.len();
    for (_, path, size) in &bundles {
        let over = count > limits.keep.max(1) as usize || total > limits.max_total_bytes;
        if !over {
            break;
        }
        if path == keep_path {
            continue;
        }
        fs::remove_dir_all(path)?;
        total -= size;
        count -= 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use libmic::MicRoot;
    use std::time::{Duration, UNIX_EPOCH};

    fn limits(keep: u32, total: u64) -> CrashConfig {
        CrashConfig {
            dir: PathBuf::from("crash"),
            keep,
            max_file_bytes: 4096,
            max_total_bytes: total,
        }
    }

    fn input(root: &Path, secs: u64) -> BundleInput {
        BundleInput {
            card: MicRoot::new(root).card_by_id(2),
            at: UNIX_EPOCH + Duration::from_secs(secs),
            status: Some(MicStatus::Crashed),
            timeline: vec!["t1 a".into(), "t2 b".into()],
            console: Some(vec![b'x'; 10_000]),
        }
    }

    #[test]
    fn a_bundle_without_a_card_still_records_what_it_can() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("crash");
        let p = write_bundle(&dir, &limits(4, 1 << 20), &input(root.path(), 1_700_000_000)).unwrap();
        assert_eq!(p.file_name().unwrap(), "mic2-20231114T221320.000Z");
        assert_eq!(
            fs::read_to_string(p.join("shutdown_status")).unwrap(),
            "crashed\n"
        );
        assert_eq!(
            fs::read_to_string(p.join("timeline.txt")).unwrap(),
            "t1 a\nt2 b\n"
        );
        // Capped: the console's last 4096 bytes.
        assert_eq!(fs::read(p.join("console.log")).unwrap().len(), 4096);
        let errors = fs::read_to_string(p.join("errors.txt")).unwrap();
        assert!(errors.contains("card.log: "), "{errors}");
        let summary: serde_json::Value =
            serde_json::from_slice(&fs::read(p.join("summary.json")).unwrap()).unwrap();
        assert_eq!(summary["card"], "mic2");
        assert_eq!(summary["time"], "2023-11-14T22:13:20.000Z");
        assert_eq!(summary["errors"].as_array().unwrap().len(), 3);
        // Same instant again: a second directory, not an overwrite.
        let q = write_bundle(&dir, &limits(4, 1 << 20), &input(root.path(), 1_700_000_000)).unwrap();
        assert_eq!(q.file_name().unwrap(), "mic2-20231114T221320.000Z-2");
    }

    #[test]
    fn oldest_bundles_go_first() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("crash");
        let l = limits(3, 1 << 20);
        let mut paths = Vec::new();
        for i in 0..5 {
            paths.push(write_bundle(&dir, &l, &input(root.path(), 1_700_000_000 + i)).unwrap());
        }
        fs::create_dir(dir.join(".mic9-x.partial")).unwrap();
        let newest = write_bundle(&dir, &l, &input(root.path(), 1_700_000_100)).unwrap();
        let mut left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left.len(), 3, "{left:?}");
        assert!(paths[4].exists() && paths[3].exists() && newest.exists());
        // Size bound: one bundle is ~4.2 KiB; 6 KiB total keeps only the newest.
        let newest = write_bundle(&dir, &limits(10, 6 << 10), &input(root.path(), 1_700_000_200)).unwrap();
        let left = fs::read_dir(&dir).unwrap().count();
        assert_eq!(left, 1);
        assert!(newest.exists());
    }
}
