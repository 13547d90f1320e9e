//! `cargo xtask kernel`: the Rust-for-Linux tier.
//!
//! Builds `mic_host.ko` and `mic_card.ko` (drivers/linux) against a real
//! Linux 6.12.117 tree with `CONFIG_RUST=y`, `CONFIG_WERROR=y` and
//! `CLIPPY=1`, checks their formatting with the kernel's `.rustfmt.toml`,
//! shows `modinfo`, then runs mic-core's KUnit suite inside a User-Mode
//! Linux kernel. What this verifies, and what it cannot (loading on X100
//! hardware), is printed with the results.
//!
//! Toolchain, all pinned (constants below): Debian bookworm's `rustc-web`
//! family (rustc, rust-src, clippy, rustfmt, cargo 1.96.0), clang/LLVM 19,
//! `linux-source-6.12` (6.12.117), and bindgen-cli 0.69.5 from crates.io
//! (built with `--debug`: 16 s instead of minutes, same bindings). Missing
//! packages are installed with apt (as root). Every tool is passed to make
//! explicitly: rustup's toolchain comes first in PATH on these machines and
//! must not be mixed in.
//!
//! The prepared tree, bindgen and the UML build directory live in a cache
//! outside the clone (`/var/cache/mic-x100-kernel`, or `MIC_KERNEL_CACHE`),
//! keyed by the kernel and rustc versions and reused when present. The
//! modules are built from a staged copy of `drivers/`, so the clone gets no
//! build products.
//!
//! Outcome: a package or crate that cannot be had (no network, no root)
//! makes the tier [`Outcome::Unavailable`], reported loudly, and the rest of
//! CI goes on; any failure once the tools are there is an error.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use anyhow::{Context as _, Result, bail, ensure};

/// The kernel the modules are built against (Debian's `linux-source-6.12`).
pub const KERNEL_VERSION: &str = "6.12.117";
/// bindgen-cli from crates.io (6.12 needs ≥ 0.65.1; Debian's is 0.60).
pub const BINDGEN_VERSION: &str = "0.69.5";
/// The LLVM the kernel is built with (`LLVM=-19`) and bindgen links.
pub const LLVM_SUFFIX: &str = "-19";

/// Debian packages and the versions verified with them (bookworm and
/// bookworm-security, 2026-12-01).
pub const PACKAGES: &[(&str, &str)] = &[
    ("rustc-web", "1.96.0+dfsg1-1~deb12u2"),
    ("rust-web-src", "1.96.0+dfsg1-1~deb12u2"),
    ("rust-web-clippy", "1.96.0+dfsg1-1~deb12u2"),
    ("rustfmt-web", "1.96.0+dfsg1-1~deb12u2"),
    ("cargo-web", "1.96.0+dfsg1-1~deb12u2"),
    ("linux-source-6.12", "6.12.117-1~deb12u1"),
    ("clang-19", ""),
    ("lld-19", ""),
    ("llvm-19", ""),
    ("libclang-19-dev", ""),
    ("flex", ""),
    ("bison", ""),
    ("bc", ""),
    ("libelf-dev", ""),
    ("libssl-dev", ""),
    ("make", ""),
    ("kmod", ""),
    ("python3", ""),
];

/// The modules under drivers/linux.
pub const MODULES: [&str; 2] = ["mic_host", "mic_card"];
/// Where the KUnit sources go in the kernel tree.
const KUNIT_DIR: &str = "drivers/misc/mic_rs";
/// The KUnit suite's name (suite.c).
const SUITE: &str = "mic_core";
/// PCI device IDs mic_host must claim (0x2250..=0x225e).
const PCI_IDS: std::ops::RangeInclusive<u16> = 0x2250..=0x225E;

/// What this tier proves, printed with every result.
pub const VERIFIED: &str = "verified here: mic_host.ko and mic_card.ko compile against Linux 6.12.117 \
with the kernel's own flags, CONFIG_WERROR and clippy (CLIPPY=1), and mic-core's logic runs \
inside a real (User-Mode Linux) kernel under KUnit";
/// What it cannot prove.
pub const NOT_VERIFIED: &str = "not verified (no hardware exists any more): loading the modules, \
probing an X100, MMIO, DMA, interrupts, booting or resetting a card";

/// How the tier ended.
#[derive(Debug)]
pub enum Outcome {
    /// Everything ran and passed.
    Passed(Summary),
    /// A package, crate or permission was missing: nothing was checked.
    Unavailable(String),
}

/// Figures of a passing run.
#[derive(Debug, Default)]
pub struct Summary {
    /// KUnit cases that passed and failed.
    pub kunit_passed: u32,
    pub kunit_failed: u32,
    /// Module file sizes in bytes.
    pub sizes: Vec<(String, u64)>,
}

/// Options of `cargo xtask kernel`.
#[derive(Debug, Clone)]
pub struct Options {
    /// The cache directory (tree, bindgen, build directories).
    pub cache: PathBuf,
    /// Run the KUnit suite (else modules only).
    pub kunit: bool,
}

impl Options {
    /// `MIC_KERNEL_CACHE`, else [`default_cache`].
    #[must_use]
    pub fn from_env() -> Self {
        let cache = std::env::var_os("MIC_KERNEL_CACHE").map_or_else(default_cache, PathBuf::from);
        Self { cache, kunit: true }
    }
}

/// `/var/cache/mic-x100-kernel` where it can be created (CI runs as root),
/// else `~/.cache/mic-x100-kernel`.
#[must_use]
pub fn default_cache() -> PathBuf {
    let system = PathBuf::from("/var/cache/mic-x100-kernel");
    let writable = fs::create_dir_all(&system).is_ok()
        && fs::metadata(&system).is_ok_and(|m| !m.permissions().readonly())
        && tempfile::tempfile_in(&system).is_ok();
    match std::env::var_os("HOME") {
        Some(home) if !writable => PathBuf::from(home).join(".cache/mic-x100-kernel"),
        _ => system,
    }
}

/// Times and prints one phase.
struct Phases {
    start: Instant,
    report: String,
}

impl Phases {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            report: String::new(),
        }
    }

    fn run<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        eprintln!("xtask kernel: {name} ...");
        let t = Instant::now();
        let r = f();
        let secs = t.elapsed().as_secs_f64();
        let status = if r.is_ok() { "ok" } else { "FAILED" };
        eprintln!("xtask kernel: {name}: {status} in {secs:.1} s");
        let _ = writeln!(self.report, "  {name:<28} {secs:>7.1} s  {status}");
        r
    }
}

/// A step that may find the tools missing.
enum Step<T> {
    Done(T),
    Unavailable(String),
}

/// Runs the whole tier.
pub fn run(root: &Path, opts: &Options) -> Result<Outcome> {
    let mut phases = Phases::new();
    let outcome = run_phases(root, opts, &mut phases);
    eprintln!(
        "xtask kernel: phases (total {:.1} s):\n{}",
        phases.start.elapsed().as_secs_f64(),
        phases.report
    );
    outcome
}

fn run_phases(root: &Path, opts: &Options, phases: &mut Phases) -> Result<Outcome> {
    if let Step::Unavailable(why) = phases.run("packages (apt)", install_packages)? {
        return Ok(Outcome::Unavailable(why));
    }
    let rustc = tool_version("/usr/bin/rustc")?;
    let kernel = source_version()?;
    if kernel != KERNEL_VERSION {
        eprintln!(
            "xtask kernel: WARNING: Debian's linux-source-6.12 is {kernel}, pinned {KERNEL_VERSION}; \
             building against {kernel}"
        );
    }
    let cache = Cache::new(&opts.cache, &kernel, &rustc)?;
    let bindgen = match phases.run("bindgen-cli (cargo install)", || cache.bindgen())? {
        Step::Done(b) => b,
        Step::Unavailable(why) => return Ok(Outcome::Unavailable(why)),
    };
    let tools = Tools {
        rustc_version: rustc,
        bindgen,
    };
    phases.run("kernel tree (x86_64)", || cache.prepare_tree(&tools))?;
    let mut summary = Summary::default();
    phases.run("modules (CLIPPY=1)", || {
        summary.sizes = cache.build_modules(root, &tools, &kernel)?;
        Ok(())
    })?;
    phases.run("rustfmt (kernel config)", || check_format(root, &cache))?;
    if opts.kunit {
        let (passed, failed) = phases.run("KUnit (UML)", || cache.kunit(root, &tools))?;
        summary.kunit_passed = passed;
        summary.kunit_failed = failed;
    }
    Ok(Outcome::Passed(summary))
}

/// Prints the outcome the way CI logs should show it.
pub fn print_outcome(outcome: &Outcome) {
    match outcome {
        Outcome::Passed(s) => {
            eprintln!("xtask kernel: PASSED");
            for (m, size) in &s.sizes {
                eprintln!("xtask kernel:   {m}.ko  {size} bytes");
            }
            if s.kunit_passed + s.kunit_failed > 0 {
                eprintln!(
                    "xtask kernel:   KUnit suite {SUITE} in UML: {} passed, {} failed",
                    s.kunit_passed, s.kunit_failed
                );
            }
            eprintln!("xtask kernel: {VERIFIED}.");
            eprintln!("xtask kernel: {NOT_VERIFIED}.");
        }
        Outcome::Unavailable(why) => {
            let bar = "!".repeat(78);
            eprintln!("{bar}");
            eprintln!("xtask kernel: KERNEL TIER NOT RUN: {why}");
            eprintln!("xtask kernel: nothing about mic_host.ko, mic_card.ko or KUnit was checked.");
            eprintln!("{bar}");
        }
    }
}

// ---------------------------------------------------------------------------
// Packages
// ---------------------------------------------------------------------------

fn installed_version(pkg: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Abbrev} ${Version}", pkg])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (status, version) = text.split_once(' ')?;
    (out.status.success() && status.starts_with("ii")).then(|| version.trim().to_owned())
}

fn install_packages() -> Result<Step<()>> {
    let mut missing = Vec::new();
    for &(pkg, pinned) in PACKAGES {
        match installed_version(pkg) {
            Some(v) if !pinned.is_empty() && v != pinned => {
                eprintln!("xtask kernel: WARNING: {pkg} {v} is installed, pinned {pinned}");
            }
            Some(_) => {}
            None => missing.push((pkg, pinned)),
        }
    }
    if missing.is_empty() {
        return Ok(Step::Done(()));
    }
    let names: Vec<&str> = missing.iter().map(|(p, _)| *p).collect();
    // Root or not, through `id -u` (xtask has no unsafe code for geteuid).
    let uid = Command::new("id").arg("-u").output().context("running id -u")?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Ok(Step::Unavailable(format!(
            "packages missing ({}) and installing them needs root",
            names.join(" ")
        )));
    }
    eprintln!("xtask kernel: installing {}", names.join(" "));
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
    };
    let update = apt(&["update", "-qq"]).context("running apt-get update")?;
    if !update.status.success() {
        return Ok(Step::Unavailable(format!(
            "apt-get update failed (package archive unreachable?): {}",
            last_lines(&update, 5)
        )));
    }
    // The pinned version when the archive still has it, else the
    // candidate, loudly (bookworm-security moves rustc-web forward).
    let mut specs = Vec::new();
    for &(pkg, pinned) in &missing {
        if pinned.is_empty() {
            specs.push(pkg.to_owned());
            continue;
        }
        let policy = Command::new("apt-cache")
            .args(["madison", pkg])
            .output()
            .context("running apt-cache madison")?;
        if String::from_utf8_lossy(&policy.stdout).contains(pinned) {
            specs.push(format!("{pkg}={pinned}"));
        } else {
            eprintln!(
                "xtask kernel: WARNING: {pkg} {pinned} (pinned) is not in the archive any more; \
                 installing the current candidate. Update PACKAGES in xtask/src/kernel.rs."
            );
            specs.push(pkg.to_owned());
        }
    }
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(specs.iter().map(String::as_str));
    let install = apt(&args).context("running apt-get install")?;
    if !install.status.success() {
        return Ok(Step::Unavailable(format!(
            "apt-get install {} failed: {}",
            specs.join(" "),
            last_lines(&install, 8)
        )));
    }
    Ok(Step::Done(()))
}

/// `rustc 1.96.0 (...)` → `1.96.0`.
fn tool_version(bin: &str) -> Result<String> {
    let out = Command::new(bin)
        .arg("-V")
        .output()
        .with_context(|| format!("running {bin} -V"))?;
    ensure!(out.status.success(), "{bin} -V failed");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .map(str::to_owned)
        .with_context(|| format!("unexpected {bin} -V output {text:?}"))
}

/// The version of the installed `linux-source-6.12` (upstream part).
fn source_version() -> Result<String> {
    let v = installed_version("linux-source-6.12").context("linux-source-6.12 is not installed")?;
    Ok(v.split('-').next().unwrap_or(&v).to_owned())
}

// ---------------------------------------------------------------------------
// The cache: bindgen, the tree, the build directories
// ---------------------------------------------------------------------------

struct Tools {
    rustc_version: String,
    bindgen: PathBuf,
}

impl Tools {
    /// Every tool named explicitly, for make.
    fn make_vars(&self) -> Vec<String> {
        vec![
            format!("LLVM={LLVM_SUFFIX}"),
            "RUSTC=/usr/bin/rustc".into(),
            "HOSTRUSTC=/usr/bin/rustc".into(),
            "RUSTDOC=/usr/bin/rustdoc".into(),
            "RUSTFMT=/usr/bin/rustfmt".into(),
            "CLIPPY_DRIVER=/usr/bin/clippy-driver".into(),
            format!("RUST_LIB_SRC=/usr/src/rustc-{}/library", self.rustc_version),
            format!("BINDGEN={}", self.bindgen.display()),
        ]
    }
}

struct Cache {
    /// `<cache>/linux-<kernel>-rustc-<rustc>`.
    dir: PathBuf,
    bindgen_root: PathBuf,
    cargo_home: PathBuf,
}

fn libclang_path() -> String {
    format!("/usr/lib/llvm{LLVM_SUFFIX}/lib")
}

impl Cache {
    fn new(base: &Path, kernel: &str, rustc: &str) -> Result<Self> {
        let dir = base.join(format!("linux-{kernel}-rustc-{rustc}"));
        fs::create_dir_all(&dir).with_context(|| format!("creating the kernel cache {}", dir.display()))?;
        Ok(Self {
            bindgen_root: base.join(format!("bindgen-{BINDGEN_VERSION}-rustc-{rustc}")),
            cargo_home: base.join("cargo-home"),
            dir,
        })
    }

    fn src(&self) -> PathBuf {
        self.dir.join("src")
    }

    fn build(&self) -> PathBuf {
        self.dir.join("build")
    }

    fn uml(&self) -> PathBuf {
        self.dir.join("uml")
    }

    fn bindgen(&self) -> Result<Step<PathBuf>> {
        let bin = self.bindgen_root.join("bin/bindgen");
        if bin.exists() {
            return Ok(Step::Done(bin));
        }
        let out = clean_command("/usr/bin/cargo")
            .args([
                "install",
                "bindgen-cli",
                "--version",
                BINDGEN_VERSION,
                "--locked",
                "--debug",
            ])
            .arg("--root")
            .arg(&self.bindgen_root)
            .env("CARGO_HOME", &self.cargo_home)
            .env("RUSTC", "/usr/bin/rustc")
            .env("LIBCLANG_PATH", libclang_path())
            .output()
            .context("running /usr/bin/cargo install bindgen-cli")?;
        if !out.status.success() {
            let tail = last_lines(&out, 10);
            if tail.contains("failed to download")
                || tail.contains("Unable to update registry")
                || tail.contains("failed to get")
                || tail.contains("Could not resolve host")
            {
                return Ok(Step::Unavailable(format!(
                    "bindgen-cli {BINDGEN_VERSION} could not be fetched from the crate registry: {tail}"
                )));
            }
            bail!("cargo install bindgen-cli {BINDGEN_VERSION} failed:\n{tail}");
        }
        Ok(Step::Done(bin))
    }

    /// Unpacks the source and configures and prepares the x86_64 build
    /// directory, once.
    fn prepare_tree(&self, tools: &Tools) -> Result<()> {
        let stamp = self.dir.join("prepared");
        if stamp.exists() {
            eprintln!("xtask kernel: reusing {}", self.dir.display());
            return Ok(());
        }
        let src = self.src();
        if !src.join("Makefile").exists() {
            let tmp = self.dir.join("src.partial");
            let _ = fs::remove_dir_all(&tmp);
            fs::create_dir_all(&tmp)?;
            run_quiet(
                Command::new("tar")
                    .arg("xf")
                    .arg("/usr/src/linux-source-6.12.tar.xz")
                    .arg("-C")
                    .arg(&tmp)
                    .arg("--strip-components=1"),
                &self.dir.join("unpack.log"),
            )?;
            let _ = fs::remove_dir_all(&src);
            fs::rename(&tmp, &src)?;
        }
        let build = self.build();
        let o = format!("O={}", build.display());
        let log = self.dir.join("prepare.log");
        let make = |args: &[&str]| -> Result<()> {
            let mut c = clean_command("make");
            c.current_dir(&src)
                .args(tools.make_vars())
                .arg(&o)
                .args(args)
                .env("LIBCLANG_PATH", libclang_path());
            run_quiet(&mut c, &log)
        };
        make(&["x86_64_defconfig"])?;
        run_quiet(
            clean_command(src.join("scripts/config"))
                .arg("--file")
                .arg(build.join(".config"))
                .args([
                    "-e",
                    "RUST",
                    "-d",
                    "MODVERSIONS",
                    "-e",
                    "WERROR",
                    "-e",
                    "DEBUG_FS",
                ])
                .args([
                    "-e",
                    "FW_LOADER",
                    "-e",
                    "RUST_FW_LOADER_ABSTRACTIONS",
                    "-e",
                    "PCI_MSI",
                ]),
            &log,
        )?;
        make(&["olddefconfig"])?;
        let config = fs::read_to_string(build.join(".config"))?;
        for want in [
            "CONFIG_RUST=y",
            "CONFIG_WERROR=y",
            "CONFIG_PCI_MSI=y",
            "CONFIG_DEBUG_FS=y",
        ] {
            ensure!(
                config.lines().any(|l| l == want),
                "{want} did not survive olddefconfig (see {})",
                log.display()
            );
        }
        make(&["rustavailable"])?;
        make(&["-j", &jobs(), "modules_prepare"])?;
        fs::write(&stamp, b"")?;
        Ok(())
    }

    /// Stages drivers/core/src and drivers/linux under `dest/drivers`,
    /// keeping the relative paths the modules' `#[path]` includes use, and
    /// touching only changed files (so unchanged modules are not rebuilt;
    /// make's outputs beside the sources are kept).
    fn stage(root: &Path, dest: &Path) -> Result<()> {
        let staged = dest.with_extension("staging");
        let _ = fs::remove_dir_all(&staged);
        copy_tree(&root.join("drivers/core/src"), &staged.join("core/src"))?;
        copy_tree(&root.join("drivers/linux"), &staged.join("linux"))?;
        mirror(&staged, dest, is_build_product)?;
        fs::remove_dir_all(&staged)?;
        Ok(())
    }

    /// Builds both modules from a staged copy with CLIPPY=1; any compiler
    /// or clippy warning fails. Returns the module sizes.
    fn build_modules(&self, root: &Path, tools: &Tools, kernel: &str) -> Result<Vec<(String, u64)>> {
        let stage = self.dir.join("stage/drivers");
        Self::stage(root, &stage)?;
        let mut sizes = Vec::new();
        for m in MODULES {
            let dir = stage.join("linux").join(m);
            let out = clean_command("make")
                .arg("-C")
                .arg(self.build())
                .args(tools.make_vars())
                .arg(format!("M={}", dir.display()))
                .args(["KBUILD_MODPOST_WARN=1", "CLIPPY=1", "-j", &jobs()])
                .env("LIBCLANG_PATH", libclang_path())
                .output()
                .with_context(|| format!("building {m}"))?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            fs::write(self.dir.join(format!("{m}.log")), &text)?;
            let ko = dir.join(format!("{m}.ko"));
            ensure!(out.status.success(), "building {m}.ko failed:\n{text}");
            let (warnings, unresolved) = classify_build_output(&text);
            if !warnings.is_empty() {
                // Not reused by the next run: it must show the warnings again.
                let _ = fs::remove_file(&ko);
            }
            ensure!(
                warnings.is_empty(),
                "building {m}.ko produced warnings:\n{}",
                warnings.join("\n")
            );
            let size = fs::metadata(&ko)
                .with_context(|| format!("{} missing", ko.display()))?
                .len();
            eprintln!(
                "xtask kernel: {m}.ko: {size} bytes, no warnings ({unresolved} unresolved-symbol \
                 notes from modpost are expected: vmlinux is not built here)"
            );
            check_modinfo(&ko, m, kernel)?;
            sizes.push((m.to_owned(), size));
        }
        Ok(sizes)
    }

    /// Copies the KUnit suite and mic-core into the tree under a Kconfig
    /// entry and runs kunit.py on UML; returns (passed, failed).
    fn kunit(&self, root: &Path, tools: &Tools) -> Result<(u32, u32)> {
        let src = self.src();
        let dest = src.join(KUNIT_DIR);
        sync_kunit_sources(root, &dest)?;
        hook_line(&src.join("drivers/misc/Makefile"), "obj-y += mic_rs/\n", None)?;
        hook_line(
            &src.join("drivers/misc/Kconfig"),
            "source \"drivers/misc/mic_rs/Kconfig\"\n",
            Some("endmenu"),
        )?;
        let mut c = clean_command("python3");
        c.current_dir(&src)
            .arg("tools/testing/kunit/kunit.py")
            .arg("run")
            .arg(format!("--build_dir={}", self.uml().display()))
            .args(["--jobs", &jobs()])
            .arg(format!("--kunitconfig={KUNIT_DIR}/linux/kunit/.kunitconfig"));
        for v in tools.make_vars() {
            c.arg("--make_options").arg(v);
        }
        c.arg(SUITE).env("LIBCLANG_PATH", libclang_path());
        let out = c.output().context("running kunit.py")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        fs::write(self.dir.join("kunit.log"), &text)?;
        let results: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("[PASSED]") || l.contains("[FAILED]") || l.contains("[CRASHED]"))
            .collect();
        for l in &results {
            eprintln!("xtask kernel: {}", l.trim());
        }
        let ours = kunit_build_warnings(&text);
        ensure!(
            ours.is_empty(),
            "the KUnit suite's sources build with warnings:\n{}",
            ours.join("\n")
        );
        let (passed, failed) = parse_kunit_totals(&text)
            .with_context(|| format!("no KUnit totals in kunit.py's output:\n{}", tail(&text, 30)))?;
        ensure!(
            out.status.success() && failed == 0 && passed > 0,
            "KUnit: {passed} passed, {failed} failed (log: {}):\n{}",
            self.dir.join("kunit.log").display(),
            tail(&text, 40)
        );
        Ok((passed, failed))
    }
}

/// Puts the KUnit sources into the tree, rewriting only what changed (so an
/// unchanged suite rebuilds nothing).
fn sync_kunit_sources(root: &Path, dest: &Path) -> Result<()> {
    let staged = dest.with_extension("staging");
    let _ = fs::remove_dir_all(&staged);
    copy_tree(&root.join("drivers/core/src"), &staged.join("core/src"))?;
    copy_tree(&root.join("drivers/linux/kunit"), &staged.join("linux/kunit"))?;
    fs::copy(
        root.join("drivers/linux/mic_core.rs"),
        staged.join("linux/mic_core.rs"),
    )?;
    fs::write(staged.join("Makefile"), "obj-y += linux/kunit/\n")?;
    fs::write(
        staged.join("Kconfig"),
        "source \"drivers/misc/mic_rs/linux/kunit/Kconfig\"\n",
    )?;
    mirror(&staged, dest, |_| false)?;
    fs::remove_dir_all(&staged)?;
    Ok(())
}

/// Makes `dst` hold the files of `src`, touching only files whose contents
/// differ (make looks at mtimes). Files of `dst` that `src` lacks are
/// removed unless `keep` says they are to stay (make's outputs).
fn mirror(src: &Path, dst: &Path, keep: fn(&str) -> bool) -> Result<()> {
    fs::create_dir_all(dst)?;
    for entry in fs::read_dir(dst)? {
        let entry = entry?;
        let name = entry.file_name();
        if !keep(&name.to_string_lossy()) && !src.join(&name).exists() {
            let p = entry.path();
            if p.is_dir() {
                fs::remove_dir_all(&p)?;
            } else {
                fs::remove_file(&p)?;
            }
        }
    }
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        if from.is_dir() {
            mirror(&from, &to, keep)?;
        } else {
            let data = fs::read(&from)?;
            if fs::read(&to).ok().as_deref() != Some(data.as_slice()) {
                fs::write(&to, data)?;
            }
        }
    }
    Ok(())
}

/// Whether `name` is something make writes beside the sources.
fn is_build_product(name: &str) -> bool {
    name.starts_with('.')
        || [
            ".o", ".ko", ".mod", ".mod.c", ".order", ".symvers", ".rmeta", ".d",
        ]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// Adds `line` to `file` once (before the last line equal to `before`, or at the end).
fn hook_line(file: &Path, line: &str, before: Option<&str>) -> Result<()> {
    let text = fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    if text.contains(line.trim_end()) {
        return Ok(());
    }
    let new = match before.and_then(|b| text.rfind(&format!("\n{b}\n"))) {
        Some(i) => format!("{}\n{}{}", &text[..i], line, &text[i + 1..]),
        None => format!("{text}{line}"),
    };
    fs::write(file, new)?;
    Ok(())
}

/// kunit.py's closing line: "Testing complete. Ran N tests: passed: P, failed: F, ...".
fn parse_kunit_totals(text: &str) -> Option<(u32, u32)> {
    let line = text.lines().rev().find(|l| l.contains("Testing complete."))?;
    let field = |name: &str| -> u32 {
        line.split(name)
            .nth(1)
            .and_then(|rest| {
                rest.trim_start()
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(0)
    };
    let ran = field("Ran ");
    let passed = field("passed:");
    let failed = field("failed:") + field("crashed:") + field("errors:");
    // "Ran N tests" with no per-status fields means all passed.
    let passed = if passed == 0 && failed == 0 && !line.contains("passed:") {
        ran
    } else {
        passed
    };
    Some((passed, failed))
}

/// Compiler warnings about the suite's own files (drivers/misc/mic_rs) in
/// kunit.py's build output; the rest of the UML build is not ours to judge.
fn kunit_build_warnings(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if !l.contains("warning:") {
            continue;
        }
        // C: "path:line:col: warning: ..."; Rust: "warning: ..." then "--> path".
        let near = lines.iter().skip(i).take(3);
        if l.contains(KUNIT_DIR)
            || near
                .clone()
                .any(|n| n.trim_start().starts_with("-->") && n.contains(KUNIT_DIR))
        {
            out.push((*l).to_owned());
        }
    }
    out
}

/// Splits a module build's output into real warnings and modpost's notes
/// about symbols it cannot resolve without vmlinux (expected here).
fn classify_build_output(text: &str) -> (Vec<String>, usize) {
    let mut warnings = Vec::new();
    let mut unresolved = 0;
    let mut in_symvers_note = false;
    for line in text.lines() {
        let l = line.trim();
        let suppressed = l
            .strip_prefix("WARNING: modpost: suppressed ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<usize>().ok());
        if let Some(n) = suppressed {
            unresolved += n;
        } else if l.starts_with("WARNING: modpost:") && l.ends_with("undefined!") {
            unresolved += 1;
        } else if l.starts_with("WARNING: Module.symvers is missing") {
            in_symvers_note = true;
        } else if in_symvers_note && line.starts_with(' ') {
            // The indented continuation of the Module.symvers note.
        } else {
            in_symvers_note = false;
            if l.to_ascii_lowercase().contains("warning") {
                warnings.push(line.to_owned());
            }
        }
    }
    (warnings, unresolved)
}

/// `modinfo`: printed, and checked for the vermagic and (mic_host) the PCI
/// alias table.
fn check_modinfo(ko: &Path, module: &str, kernel: &str) -> Result<()> {
    let out = Command::new("/sbin/modinfo")
        .arg(ko)
        .output()
        .context("running modinfo")?;
    ensure!(out.status.success(), "modinfo {} failed", ko.display());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for l in text.lines() {
        eprintln!("xtask kernel:   {l}");
    }
    let field = |name: &'static str| {
        text.lines()
            .filter_map(move |l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
    };
    let vermagic = field("vermagic:").next().unwrap_or_default();
    ensure!(
        vermagic.split_whitespace().next() == Some(kernel),
        "{module}.ko: vermagic {vermagic:?} is not {kernel}"
    );
    ensure!(
        field("name:").next().as_deref() == Some(module),
        "{module}.ko: wrong module name"
    );
    if module == "mic_host" {
        let aliases: Vec<String> = field("alias:").collect();
        for id in PCI_IDS {
            let want = format!("pci:v00008086d0000{id:04X}sv*sd*bc*sc*i*");
            ensure!(aliases.contains(&want), "mic_host.ko: no alias {want}");
        }
        ensure!(
            aliases.len() == PCI_IDS.count(),
            "mic_host.ko: unexpected aliases {aliases:?}"
        );
    }
    Ok(())
}

/// The kernel's rustfmt config over every glue file (each on its own: the
/// kernel formats modules, and mic-core follows the workspace rustfmt.toml).
fn check_format(root: &Path, cache: &Cache) -> Result<()> {
    let config = cache.src().join(".rustfmt.toml");
    let mut files = Vec::new();
    collect_rs(&root.join("drivers/linux"), &mut files)?;
    files.sort();
    let mut bad = Vec::new();
    for f in &files {
        let input = fs::read(f)?;
        let mut child = clean_command("/usr/bin/rustfmt")
            .args(["--edition", "2021", "--emit", "stdout", "--config-path"])
            .arg(&config)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("running /usr/bin/rustfmt")?;
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().context("rustfmt stdin")?;
            stdin.write_all(&input)?;
        }
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "rustfmt failed on {}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.stdout != input {
            bad.push(f.strip_prefix(root).unwrap_or(f).display().to_string());
        }
    }
    ensure!(
        bad.is_empty(),
        "not formatted with the kernel's .rustfmt.toml (run /usr/bin/rustfmt --edition 2021 \
         --config-path {} on them): {}",
        config.display(),
        bad.join(", ")
    );
    eprintln!(
        "xtask kernel: {} glue files formatted as the kernel wants",
        files.len()
    );
    Ok(())
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_dir() {
            collect_rs(&p, out)?;
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// Runs a command with its output to `log`; on failure the error carries
/// the log's tail.
fn run_quiet(cmd: &mut Command, log: &Path) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut all = fs::read_to_string(log).unwrap_or_default();
    let _ = writeln!(all, "$ {cmd:?}\n{text}");
    fs::write(log, all)?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed (log: {}):\n{}",
        log.display(),
        tail(&text, 30)
    );
    Ok(())
}

/// A command without the variables cargo sets for xtask (`CARGO_PKG_*`
/// make clippy-driver read the workspace's MSRV; `RUSTFLAGS`, `RUSTC_*`
/// would leak the rustup toolchain into the kernel's).
fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO")
            || k.starts_with("RUSTC")
            || k.starts_with("RUSTUP")
            || k == "RUSTFLAGS"
            || k == "RUSTDOCFLAGS"
        {
            c.env_remove(&*k);
        }
    }
    c.env("LIBCLANG_PATH", libclang_path());
    c
}

fn jobs() -> String {
    std::thread::available_parallelism()
        .map_or(2, std::num::NonZero::get)
        .to_string()
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn last_lines(out: &Output, n: usize) -> String {
    tail(
        &format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        n,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kunit_totals() {
        let out = "[09:20:01] Testing complete. Ran 12 tests: passed: 11, failed: 1\n";
        assert_eq!(parse_kunit_totals(out), Some((11, 1)));
        let out = "x\n[09:20:01] Testing complete. Ran 12 tests: passed: 12\n";
        assert_eq!(parse_kunit_totals(out), Some((12, 0)));
        let out = "Testing complete. Ran 3 tests: passed: 1, crashed: 2\n";
        assert_eq!(parse_kunit_totals(out), Some((1, 2)));
        assert_eq!(parse_kunit_totals("no summary"), None);
    }

    #[test]
    fn build_output_warnings() {
        let out = "  RUSTC [M] x.o\n\
                   WARNING: Module.symvers is missing.\n\
                   \x20        Modules may not have dependencies or modversions.\n\
                   \x20        You can set KBUILD_MODPOST_WARN=1 to turn errors into warning\n\
                   WARNING: modpost: \"bcmp\" [x.ko] undefined!\n\
                   WARNING: modpost: suppressed 10 unresolved symbol warnings because there were too many)\n\
                   x.rs:3:1: warning: unused variable\n\
                   shim.c:9: warning: unused function\n";
        let (w, unresolved) = classify_build_output(out);
        assert_eq!(unresolved, 11);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(classify_build_output("  LD [M] x.ko\n").0.is_empty());
    }

    #[test]
    fn kunit_warnings_are_ours_only() {
        let log = "src/include/asm-generic/io.h:727:20: warning: null pointer arithmetic\n\
                   drivers/misc/mic_rs/linux/kunit/suite.c:9:1: warning: unused\n\
                   warning: unused variable: `x`\n\
                   \x20  --> drivers/misc/mic_rs/linux/kunit/tests.rs:10:9\n\
                   warning: elsewhere\n\
                   \x20  --> rust/kernel/lib.rs:1:1\n";
        let w = kunit_build_warnings(log);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("suite.c"));
        assert!(w[1].contains("unused variable"));
    }

    #[test]
    fn hook_line_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("Kconfig");
        fs::write(&f, "menu \"Misc\"\nsource \"a\"\nendmenu\n").unwrap();
        hook_line(&f, "source \"b\"\n", Some("endmenu")).unwrap();
        hook_line(&f, "source \"b\"\n", Some("endmenu")).unwrap();
        assert_eq!(
            fs::read_to_string(&f).unwrap(),
            "menu \"Misc\"\nsource \"a\"\nsource \"b\"\nendmenu\n"
        );
        let m = dir.path().join("Makefile");
        fs::write(&m, "obj-y += a/\n").unwrap();
        hook_line(&m, "obj-y += b/\n", None).unwrap();
        hook_line(&m, "obj-y += b/\n", None).unwrap();
        assert_eq!(fs::read_to_string(&m).unwrap(), "obj-y += a/\nobj-y += b/\n");
    }

    #[test]
    fn mirror_touches_only_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::create_dir_all(a.join("sub")).unwrap();
        fs::write(a.join("same"), "1").unwrap();
        fs::write(a.join("sub/new"), "2").unwrap();
        fs::create_dir_all(&b).unwrap();
        fs::write(b.join("same"), "1").unwrap();
        fs::write(b.join("stale"), "x").unwrap();
        let before = fs::metadata(b.join("same")).unwrap().modified().unwrap();
        fs::write(b.join("x.ko"), "built").unwrap();
        mirror(&a, &b, is_build_product).unwrap();
        assert!(b.join("x.ko").exists(), "make's output stays");
        mirror(&a, &b, |_| false).unwrap();
        assert!(!b.join("x.ko").exists());
        assert_eq!(fs::read_to_string(b.join("sub/new")).unwrap(), "2");
        assert!(!b.join("stale").exists());
        assert_eq!(fs::metadata(b.join("same")).unwrap().modified().unwrap(), before);
    }
}
