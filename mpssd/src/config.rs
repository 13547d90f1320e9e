//! `mpssd.toml`: daemon settings, per-card settings over `[defaults]`.
//!
//! ```toml
//! [daemon]
//! control_group = "mic"        # group of control.sock (mode 0660)
//! max_clients = 64
//! client_timeout = "10s"
//!
//! [metrics]
//! enabled = true
//! listen = "127.0.0.1:9464"    # unset: off unless --metrics
//!
//! [crash]
//! keep = 16
//!
//! [defaults]
//! restart_on_crash = true
//! crash_backoff = "2s"
//!
//! [defaults.console]
//! scrollback_bytes = 262144    # replayed to clients that attach
//! log_max_bytes = 1048576      # DIR/var/log/mpssd/micN-console.log, rotated
//!
//! [cards.mic1]
//! address = "10.0.1.1"         # the host end: 10.0.1.254/24
//! restart_on_crash = false
//!
//! [cards.mic1.block]
//! image = "var/lib/mpss/mic1.img"   # relative to the root, or absolute
//! read_only = false
//!
//! [cards.mic2]
//! net = false                  # no network device (no TAP mic2)
//! ```
//!
//! A card's disk image may also come from the original's
//! `DIR/etc/mpss/mpssd%03d.conf` (`VIRTBLK_BACKEND=path`, see
//! [`compat_block_image`]) when the TOML file names none.
//!
//! A file that does not parse, has an unknown key or a bad value is
//! refused as a whole with its file, line and key named.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A refused configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {message}", path.display())]
    Read { path: PathBuf, message: String },
    #[error("{}:{line}: {key}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
}

/// A duration written `"500ms"`, `"2s"`, `"5m"`, `"1h"` (or a number of
/// seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(de)? {
            Raw::Secs(s) => Ok(Dur(Duration::from_secs(s))),
            Raw::Text(t) => parse_duration(&t).map(Dur).map_err(serde::de::Error::custom),
        }
    }
}

/// Parses `"250ms"`, `"2s"`, `"1.5s"`, `"5m"`, `"1h"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?}: expected a number and a unit, like \"2s\""))?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "s" | "" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "bad duration {s:?}: unknown unit {other:?} (use ms, s, m or h)"
            ));
        }
    };
    let secs = n * scale;
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("bad duration {s:?}: out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// What the file may say; everything optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    daemon: DaemonFile,
    #[serde(default)]
    metrics: MetricsFile,
    #[serde(default)]
    crash: CrashFile,
    #[serde(default)]
    defaults: CardFile,
    #[serde(default)]
    cards: BTreeMap<String, CardFile>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DaemonFile {
    control_group: Option<String>,
    max_clients: Option<u32>,
    client_timeout: Option<Dur>,
    system_map: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsFile {
    enabled: Option<bool>,
    listen: Option<SocketAddr>,
    allow_remote: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CrashFile {
    dir: Option<PathBuf>,
    keep: Option<u32>,
    max_file_bytes: Option<u64>,
    max_total_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CardFile {
    address: Option<Ipv4Addr>,
    host_address: Option<Ipv4Addr>,
    net: Option<bool>,
    cmdline: Option<String>,
    restart_on_crash: Option<bool>,
    crash_backoff: Option<Dur>,
    crash_backoff_max: Option<Dur>,
    crash_loop_limit: Option<u32>,
    crash_loop_window: Option<Dur>,
    shutdown_status_timeout: Option<Dur>,
    reset_timeout: Option<Dur>,
    #[serde(default)]
    console: ConsoleFile,
    #[serde(default)]
    block: BlockFile,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsoleFile {
    scrollback_bytes: Option<u64>,
    log: Option<bool>,
    log_max_bytes: Option<u64>,
    log_keep: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockFile {
    image: Option<PathBuf>,
    read_only: Option<bool>,
    serial: Option<String>,
}

/// The running configuration, every value resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it came from (`None`: built-in defaults, no file).
    pub source: Option<PathBuf>,
    pub daemon: DaemonConfig,
    pub metrics: MetricsConfig,
    pub crash: CrashConfig,
    defaults: CardConfig,
    cards: BTreeMap<u32, CardFileResolved>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct CardFileResolved(CardConfig);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Group owning control.sock; `None`: the daemon's own.
    pub control_group: Option<String>,
    pub max_clients: u32,
    /// A client must finish a frame, and read what it is sent, within this.
    pub client_timeout: Duration,
    /// Relative to the root; `None`: `lib/firmware/mic/System.map`.
    pub system_map: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// The off switch: `false` disables the endpoint even with `--metrics`.
    pub enabled: bool,
    pub listen: Option<SocketAddr>,
    /// Whether a non-loopback `listen` is allowed.
    pub allow_remote: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashConfig {
    /// Relative to the root.
    pub dir: PathBuf,
    /// Bundles kept (all cards together); older ones are removed.
    pub keep: u32,
    /// Largest file in a bundle (a longer card log keeps its end).
    pub max_file_bytes: u64,
    /// All bundles together.
    pub max_total_bytes: u64,
}

/// The settings of one card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardConfig {
    /// The card's address (written into its cmdline when the operator has
    /// not set one); `None`: 172.31.N.1.
    pub address: Option<Ipv4Addr>,
    /// The host's address on the card's TAP `micN` (/24); `None`: the
    /// card's /24 with host part 254 (172.31.N.254).
    pub host_address: Option<Ipv4Addr>,
    /// Whether the card gets its network device (TAP `micN`).
    pub net: bool,
    /// A whole cmdline instead of mpssd's (then `address` is not used).
    pub cmdline: Option<String>,
    pub restart_on_crash: bool,
    /// The delay before the first reboot after a crash; doubles with each
    /// crash in the window, up to `crash_backoff_max`.
    pub crash_backoff: Duration,
    pub crash_backoff_max: Duration,
    /// More crashes than this within `crash_loop_window` leave the card down.
    pub crash_loop_limit: u32,
    pub crash_loop_window: Duration,
    /// How long to wait for the card's final shutdown status (original: 60 s).
    pub shutdown_status_timeout: Duration,
    /// How long to wait for `offline` after a reset (original: 120 s).
    pub reset_timeout: Duration,
    pub console: ConsoleConfig,
    pub block: BlockConfig,
}

/// The console of one card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleConfig {
    /// Output kept in memory, replayed to clients that attach and put in
    /// crash bundles.
    pub scrollback_bytes: usize,
    /// Whether everything the card prints is appended to
    /// `DIR/var/log/mpssd/micN-console.log`.
    pub log: bool,
    /// The log is rotated (`.1`, `.2`, ...) when it would grow past this.
    pub log_max_bytes: u64,
    /// Rotated logs kept.
    pub log_keep: u32,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            scrollback_bytes: 256 << 10,
            log: true,
            log_max_bytes: 1 << 20,
            log_keep: 4,
        }
    }
}

/// The disk of one card.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockConfig {
    /// The raw image (relative to the root, or absolute; `{card}` is the
    /// card's number); `None`: the original's `mpssd%03d.conf` decides.
    pub image: Option<PathBuf>,
    /// Offer the disk read-only (`VIRTIO_BLK_F_RO`; writes fail with IOERR).
    pub read_only: bool,
    /// The GET_ID serial (at most 20 bytes); `None`: the image's file name.
    pub serial: Option<String>,
}

/// The most bytes of a GET_ID serial.
pub const SERIAL_MAX: usize = mic_core::abi::virtio::VIRTIO_BLK_ID_BYTES;

impl Default for CardConfig {
    fn default() -> Self {
        Self {
            address: None,
            host_address: None,
            net: true,
            cmdline: None,
            restart_on_crash: true,
            crash_backoff: Duration::from_secs(2),
            crash_backoff_max: Duration::from_secs(300),
            crash_loop_limit: 5,
            crash_loop_window: Duration::from_secs(1800),
            shutdown_status_timeout: Duration::from_secs(60),
            reset_timeout: Duration::from_secs(120),
            console: ConsoleConfig::default(),
            block: BlockConfig::default(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            source: None,
            daemon: DaemonConfig {
                control_group: None,
                max_clients: 64,
                client_timeout: Duration::from_secs(10),
                system_map: None,
            },
            metrics: MetricsConfig {
                enabled: true,
                listen: None,
                allow_remote: false,
            },
            crash: CrashConfig {
                dir: PathBuf::from(mpssd_proto::crash::DEFAULT_DIR),
                keep: 16,
                max_file_bytes: 4 << 20,
                max_total_bytes: 64 << 20,
            },
            defaults: CardConfig::default(),
            cards: BTreeMap::new(),
        }
    }
}

impl Config {
    /// The settings of card `id`: its section over `[defaults]` (a
    /// `{card}` in the block image replaced by `id`).
    #[must_use]
    pub fn card(&self, id: u32) -> CardConfig {
        let mut c = self
            .cards
            .get(&id)
            .map_or_else(|| self.defaults.clone(), |c| c.0.clone());
        if let Some(img) = &c.block.image {
            let s = img.to_string_lossy();
            if s.contains(CARD_PLACEHOLDER) {
                c.block.image = Some(PathBuf::from(s.replace(CARD_PLACEHOLDER, &id.to_string())));
            }
        }
        c
    }

    /// The cmdline mpssd writes for card `id` when the operator has set none.
    #[must_use]
    pub fn cmdline(&self, id: u32) -> String {
        let c = self.card(id);
        c.cmdline.unwrap_or_else(|| {
            libmic::lifecycle::cmdline_with_address(
                c.address
                    .unwrap_or_else(|| libmic::lifecycle::default_card_address(id)),
            )
        })
    }

    /// Whether anything but the source differs.
    #[must_use]
    pub fn same_settings(&self, other: &Config) -> bool {
        self.daemon == other.daemon
            && self.metrics == other.metrics
            && self.crash == other.crash
            && self.defaults == other.defaults
            && self.cards == other.cards
    }

    /// Reads `path`. A missing file is the built-in defaults when
    /// `missing_ok`.
    pub fn load(path: &Path, missing_ok: bool) -> Result<Config, ConfigError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|e| ConfigError::Invalid {
                    path: path.to_owned(),
                    line: line_of(
                        &String::from_utf8_lossy(e.as_bytes()),
                        e.utf8_error().valid_up_to(),
                    ),
                    key: "(file)".into(),
                    message: "not UTF-8 text".into(),
                })?;
                Self::parse(path, &text)
            }
            Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(ConfigError::Read {
                path: path.to_owned(),
                message: e.to_string(),
            }),
        }
    }

    /// Parses the text of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            ConfigError::Invalid {
                path: path.to_owned(),
                line: line_of(text, at),
                key: key_at(text, at),
                message: e.message().trim().to_owned(),
            }
        })?;
        let bad = |table: &str, key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            line: find_key_line(text, table, key),
            key: if table.is_empty() {
                key.to_owned()
            } else {
                format!("{table}.{key}")
            },
            message,
        };
        let d = Config::default();
        let daemon = DaemonConfig {
            control_group: file.daemon.control_group.clone(),
            max_clients: file.daemon.max_clients.unwrap_or(d.daemon.max_clients),
            client_timeout: file
                .daemon
                .client_timeout
                .map_or(d.daemon.client_timeout, |x| x.0),
            system_map: file.daemon.system_map.clone(),
        };
        if daemon.max_clients == 0 {
            return Err(bad("daemon", "max_clients", "must be at least 1".into()));
        }
        if daemon.client_timeout.is_zero() {
            return Err(bad("daemon", "client_timeout", "must be longer than 0".into()));
        }
        if let Some(g) = &daemon.control_group {
            match nix::unistd::Group::from_name(g) {
                Ok(Some(_)) => {}
                Ok(None) => return Err(bad("daemon", "control_group", format!("no group named {g:?}"))),
                Err(e) => {
                    return Err(bad(
                        "daemon",
                        "control_group",
                        format!("looking up group {g:?}: {e}"),
                    ));
                }
            }
        }
        let metrics = resolve_metrics(&file.metrics, &bad)?;
        let crash = resolve_crash(&file.crash, &bad)?;
        let defaults = resolve_card(&CardConfig::default(), &file.defaults, "defaults", &bad)?;
        let mut cards = BTreeMap::new();
        for (name, section) in &file.cards {
            let table = format!("cards.{name}");
            let Some(id) = name.strip_prefix("mic").and_then(|n| n.parse::<u32>().ok()) else {
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    line: find_table_line(text, &table),
                    key: table,
                    message: "card sections are named cards.micN".into(),
                });
            };
            cards.insert(
                id,
                CardFileResolved(resolve_card(&defaults, section, &table, &bad)?),
            );
        }
        Ok(Config {
            source: Some(path.to_owned()),
            daemon,
            metrics,
            crash,
            defaults,
            cards,
        })
    }
}

fn resolve_metrics(
    f: &MetricsFile,
    bad: &dyn Fn(&str, &str, String) -> ConfigError,
) -> Result<MetricsConfig, ConfigError> {
    let d = Config::default();
    let metrics = MetricsConfig {
        enabled: f.enabled.unwrap_or(d.metrics.enabled),
        listen: f.listen,
        allow_remote: f.allow_remote.unwrap_or(false),
    };
    if let Some(a) = metrics.listen {
        if !a.ip().is_loopback() && !metrics.allow_remote {
            return Err(bad(
                "metrics",
                "listen",
                format!("{a} is not a loopback address; set metrics.allow_remote = true to serve it"),
            ));
        }
    }
    Ok(metrics)
}

fn resolve_crash(
    f: &CrashFile,
    bad: &dyn Fn(&str, &str, String) -> ConfigError,
) -> Result<CrashConfig, ConfigError> {
    let d = Config::default();
    let crash = CrashConfig {
        dir: f.dir.clone().unwrap_or(d.crash.dir),
        keep: f.keep.unwrap_or(d.crash.keep),
        max_file_bytes: f.max_file_bytes.unwrap_or(d.crash.max_file_bytes),
        max_total_bytes: f.max_total_bytes.unwrap_or(d.crash.max_total_bytes),
    };
    if crash.dir.is_absolute()
        || crash
            .dir
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(bad(
            "crash",
            "dir",
            "must be a path relative to the root, without ..".into(),
        ));
    }
    if crash.max_file_bytes < 4096 {
        return Err(bad("crash", "max_file_bytes", "must be at least 4096".into()));
    }
    Ok(crash)
}

/// In a block image path: the card's number.
pub const CARD_PLACEHOLDER: &str = "{card}";

fn resolve_console(
    base: &ConsoleConfig,
    f: &ConsoleFile,
    table: &str,
    bad: &dyn Fn(&str, &str, String) -> ConfigError,
) -> Result<ConsoleConfig, ConfigError> {
    let table = format!("{table}.console");
    let c = ConsoleConfig {
        scrollback_bytes: f.scrollback_bytes.map_or(base.scrollback_bytes, |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        }),
        log: f.log.unwrap_or(base.log),
        log_max_bytes: f.log_max_bytes.unwrap_or(base.log_max_bytes),
        log_keep: f.log_keep.unwrap_or(base.log_keep),
    };
    if !(4096..=(64 << 20)).contains(&c.scrollback_bytes) {
        return Err(bad(
            &table,
            "scrollback_bytes",
            "must be from 4096 to 67108864".into(),
        ));
    }
    if c.log_max_bytes < 4096 {
        return Err(bad(&table, "log_max_bytes", "must be at least 4096".into()));
    }
    if c.log_keep > 100 {
        return Err(bad(&table, "log_keep", "must be at most 100".into()));
    }
    Ok(c)
}

fn resolve_block(
    base: &BlockConfig,
    f: &BlockFile,
    table: &str,
    bad: &dyn Fn(&str, &str, String) -> ConfigError,
) -> Result<BlockConfig, ConfigError> {
    let table = format!("{table}.block");
    let b = BlockConfig {
        image: f.image.clone().or_else(|| base.image.clone()),
        read_only: f.read_only.unwrap_or(base.read_only),
        serial: f.serial.clone().or_else(|| base.serial.clone()),
    };
    if let Some(img) = &f.image {
        if img.as_os_str().is_empty() {
            return Err(bad(&table, "image", "must not be empty".into()));
        }
        if table == "defaults.block" && !img.to_string_lossy().contains(CARD_PLACEHOLDER) {
            return Err(bad(
                &table,
                "image",
                format!(
                    "one image would back every card's disk: put {CARD_PLACEHOLDER} in the path, or set it in [cards.micN.block]"
                ),
            ));
        }
    }
    if let Some(s) = &b.serial {
        if s.len() > SERIAL_MAX || s.contains('\0') {
            return Err(bad(
                &table,
                "serial",
                format!("must be at most {SERIAL_MAX} bytes, without NUL"),
            ));
        }
    }
    Ok(b)
}

fn resolve_card(
    base: &CardConfig,
    f: &CardFile,
    table: &str,
    bad: &dyn Fn(&str, &str, String) -> ConfigError,
) -> Result<CardConfig, ConfigError> {
    let pick = |v: Option<Dur>, d: Duration| v.map_or(d, |x| x.0);
    let c = CardConfig {
        address: f.address.or(base.address),
        host_address: f.host_address.or(base.host_address),
        net: f.net.unwrap_or(base.net),
        cmdline: f.cmdline.clone().or_else(|| base.cmdline.clone()),
        restart_on_crash: f.restart_on_crash.unwrap_or(base.restart_on_crash),
        crash_backoff: pick(f.crash_backoff, base.crash_backoff),
        crash_backoff_max: pick(f.crash_backoff_max, base.crash_backoff_max),
        crash_loop_limit: f.crash_loop_limit.unwrap_or(base.crash_loop_limit),
        crash_loop_window: pick(f.crash_loop_window, base.crash_loop_window),
        shutdown_status_timeout: pick(f.shutdown_status_timeout, base.shutdown_status_timeout),
        reset_timeout: pick(f.reset_timeout, base.reset_timeout),
        console: resolve_console(&base.console, &f.console, table, bad)?,
        block: resolve_block(&base.block, &f.block, table, bad)?,
    };
    if let Some(cmd) = &c.cmdline {
        if cmd.contains(['\n', '\0']) || cmd.len() > libmic::card::CMDLINE_MAX {
            return Err(bad(
                table,
                "cmdline",
                format!("must be one line of at most {} bytes", libmic::card::CMDLINE_MAX),
            ));
        }
    }
    if c.host_address.is_some() && c.host_address == c.address {
        return Err(bad(
            table,
            "host_address",
            "must differ from the card's address".into(),
        ));
    }
    if c.crash_backoff_max < c.crash_backoff {
        return Err(bad(
            table,
            "crash_backoff_max",
            "must not be shorter than crash_backoff".into(),
        ));
    }
    for (key, v) in [
        ("shutdown_status_timeout", c.shutdown_status_timeout),
        ("reset_timeout", c.reset_timeout),
        ("crash_loop_window", c.crash_loop_window),
    ] {
        if v.is_zero() {
            return Err(bad(table, key, "must be longer than 0".into()));
        }
    }
    Ok(c)
}

/// The original's per-card configuration, `etc/mpss/mpssd%03d.conf` (the
/// first sample put it in `etc/sysconfig/mic/`, also looked at): the text
/// after `=` on the first line not starting with `#` that begins with
/// `VIRTBLK_BACKEND`, as the original's parser takes it. `None`: no file,
/// or no such line.
#[must_use]
pub fn compat_block_image(root: &libmic::MicRoot, card: u32) -> Option<(PathBuf, PathBuf)> {
    let name = format!("mpssd{card:03}.conf");
    for dir in ["etc/mpss", "etc/sysconfig/mic"] {
        let file = root.join(dir).join(&name);
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        return parse_virtblk_backend(&text).map(|p| (p, file));
    }
    None
}

/// The `VIRTBLK_BACKEND=` value of a `mpssd%03d.conf` text.
#[must_use]
pub fn parse_virtblk_backend(text: &str) -> Option<PathBuf> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with("VIRTBLK_BACKEND") && l.contains('='))
        .and_then(|l| l.split_once('='))
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// 1-based line of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .split(|&b| b == b'\n')
        .count()
}

/// The dotted key whose line holds byte offset `at`: the nearest table
/// header above it and the key on its line.
fn key_at(text: &str, at: usize) -> String {
    let at = at.min(text.len());
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let line = text[start..end].trim();
    let table = text[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find_map(table_name)
        .unwrap_or_default();
    if let Some(t) = table_name(line) {
        return t;
    }
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_owned())
        .unwrap_or_default();
    match (table.is_empty(), key.is_empty()) {
        (_, true) if table.is_empty() => "(top level)".into(),
        (_, true) => table,
        (true, false) => key,
        (false, false) => format!("{table}.{key}"),
    }
}

fn table_name(line: &str) -> Option<String> {
    let inner = line.strip_prefix('[')?.split(']').next()?;
    Some(inner.trim_matches(['[', ' ']).replace(['"', ' '], ""))
}

fn find_table_line(text: &str, table: &str) -> usize {
    text.lines()
        .position(|l| table_name(l.trim()).as_deref() == Some(table))
        .map_or(1, |i| i + 1)
}

/// The line of `key` inside `[table]` (dotted keys at the top level
/// counted too); 1 if it cannot be found.
fn find_key_line(text: &str, table: &str, key: &str) -> usize {
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if let Some(t) = table_name(l) {
            current = t;
            continue;
        }
        let Some((k, _)) = l.split_once('=') else { continue };
        let k = k.trim().replace(['"', ' '], "");
        let full = if current.is_empty() {
            k
        } else {
            format!("{current}.{k}")
        };
        if full == format!("{table}.{key}") || (table.is_empty() && full == key) {
            return i + 1;
        }
    }
    find_table_line(text, table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/mpss/mpssd.toml"), text)
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn empty_is_the_defaults() {
        let c = parse("").unwrap();
        assert!(c.same_settings(&Config::default()));
        assert_eq!(c.card(7), CardConfig::default());
        assert_eq!(
            c.cmdline(7),
            "clocksource=tsc highres=off nohz=off cpufreq_on;corec6_off;pc3_off;pc6_off \
             ifcfg=static;address,172.31.7.1;netmask,255.255.255.0"
        );
    }

    #[test]
    fn card_sections_override_defaults() {
        let c = parse(
            r#"
[defaults]
restart_on_crash = false
crash_backoff = "250ms"

[cards.mic1]
address = "10.1.2.3"
crash_loop_limit = 2
crash_loop_window = "1m"
reset_timeout = 30
"#,
        )
        .unwrap();
        let d = c.card(0);
        assert!(!d.restart_on_crash);
        assert_eq!(d.crash_backoff, Duration::from_millis(250));
        let one = c.card(1);
        assert!(!one.restart_on_crash, "inherits [defaults]");
        assert_eq!(one.crash_backoff, Duration::from_millis(250));
        assert_eq!(one.crash_loop_limit, 2);
        assert_eq!(one.crash_loop_window, Duration::from_secs(60));
        assert_eq!(one.reset_timeout, Duration::from_secs(30));
        assert!(
            c.cmdline(1)
                .contains("ifcfg=static;address,10.1.2.3;netmask,255.255.255.0")
        );
        assert!(c.cmdline(0).contains("address,172.31.0.1;"));
        assert!(c.card(0).net && c.card(1).net && c.card(1).host_address.is_none());
        let c = parse("[defaults]\nnet = false\n[cards.mic3]\nnet = true\nhost_address = \"10.3.3.3\"\n")
            .unwrap();
        assert!(!c.card(0).net);
        assert!(c.card(3).net);
        assert_eq!(c.card(3).host_address, Some(Ipv4Addr::new(10, 3, 3, 3)));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        assert_eq!(
            err("[defaults]\nrestart_on_crash = true\ncrash_backoff = \"fast\"\n"),
            "/etc/mpss/mpssd.toml:3: defaults.crash_backoff: bad duration \"fast\": expected a \
             number and a unit, like \"2s\""
        );
        let e = err("[daemon]\nmax_clients = 4\n\n[cards.mic0]\nrestart_on_crahs = true\n");
        assert!(
            e.starts_with(
                "/etc/mpss/mpssd.toml:5: cards.mic0.restart_on_crahs: unknown field `restart_on_crahs`"
            ),
            "{e}"
        );
        let e = err("[metrics]\nlisten = \"8.8.8.8:9\"\n");
        assert!(
            e.starts_with("/etc/mpss/mpssd.toml:2: metrics.listen: 8.8.8.8:9 is not a loopback"),
            "{e}"
        );
        let e = err("[cards.gpu0]\nreset_timeout = 1\n");
        assert_eq!(
            e,
            "/etc/mpss/mpssd.toml:1: cards.gpu0: card sections are named cards.micN"
        );
        let e = err("[daemon]\nmax_clients = 0\n");
        assert_eq!(
            e,
            "/etc/mpss/mpssd.toml:2: daemon.max_clients: must be at least 1"
        );
        let e = err("[defaults]\ncrash_backoff = \"10s\"\ncrash_backoff_max = \"1s\"\n");
        assert_eq!(
            e,
            "/etc/mpss/mpssd.toml:3: defaults.crash_backoff_max: must not be shorter than crash_backoff"
        );
        let e = err("[daemon\n");
        assert!(e.starts_with("/etc/mpss/mpssd.toml:1: "), "{e}");
        let e = err("[daemon]\ncontrol_group = \"no-such-group-here\"\n");
        assert_eq!(
            e,
            "/etc/mpss/mpssd.toml:2: daemon.control_group: no group named \"no-such-group-here\""
        );
        let e = err("[defaults]\nreset_timeout = \"1 fortnight\"\n");
        assert!(e.contains("defaults.reset_timeout: bad duration"), "{e}");
        let e = err("[cards.mic1]\naddress = \"10.0.0.1\"\nhost_address = \"10.0.0.1\"\n");
        assert_eq!(
            e,
            "/etc/mpss/mpssd.toml:3: cards.mic1.host_address: must differ from the card's address"
        );
        let e = err("[defaults]\nhost_address = \"300.1.1.1\"\n");
        assert!(
            e.starts_with("/etc/mpss/mpssd.toml:2: defaults.host_address: "),
            "{e}"
        );
        let e = err("[crash]\ndir = \"../../etc\"\n");
        assert!(e.contains(":2: crash.dir: must be a path relative"), "{e}");
    }

    #[test]
    fn console_and_block_sections() {
        let c = parse(
            r#"
[defaults.console]
scrollback_bytes = 8192

[defaults.block]
image = "var/lib/mpss/mic{card}.img"

[cards.mic1.block]
image = "/srv/one.img"
read_only = true
serial = "disk-one"

[cards.mic2.console]
log = false
"#,
        )
        .unwrap();
        let zero = c.card(0);
        assert_eq!(zero.console.scrollback_bytes, 8192);
        assert!(zero.console.log);
        assert_eq!(zero.block.image, Some(PathBuf::from("var/lib/mpss/mic0.img")));
        assert!(!zero.block.read_only);
        let one = c.card(1);
        assert_eq!(one.block.image, Some(PathBuf::from("/srv/one.img")));
        assert!(one.block.read_only);
        assert_eq!(one.block.serial.as_deref(), Some("disk-one"));
        assert_eq!(one.console.scrollback_bytes, 8192, "inherits [defaults.console]");
        let two = c.card(2);
        assert!(!two.console.log);
        assert_eq!(two.block.image, Some(PathBuf::from("var/lib/mpss/mic2.img")));
        assert_eq!(parse("").unwrap().card(0).block, BlockConfig::default());
    }

    #[test]
    fn bad_console_and_block_values_are_named() {
        let e = err("[defaults.block]\nimage = \"/srv/shared.img\"\n");
        assert!(
            e.starts_with("/etc/mpss/mpssd.toml:2: defaults.block.image: one image would back every card"),
            "{e}"
        );
        let e = err("[cards.mic0.block]\nserial = \"an-overly-long-serial-number\"\n");
        assert_eq!(
            e,
            "/etc/mpss/mpssd.toml:2: cards.mic0.block.serial: must be at most 20 bytes, without NUL"
        );
        let e = err("[cards.mic3.console]\nscrollback_bytes = 10\n");
        assert_eq!(
            e,
            "/etc/mpss/mpssd.toml:2: cards.mic3.console.scrollback_bytes: must be from 4096 to 67108864"
        );
        let e = err("[cards.mic0.block]\nimage = \"x\"\nwritable = true\n");
        assert!(e.contains(":3: cards.mic0.block.writable: unknown field"), "{e}");
    }

    #[test]
    fn the_originals_conf_line() {
        assert_eq!(
            parse_virtblk_backend("# VIRTBLK_BACKEND=/no\nFOO=1\nVIRTBLK_BACKEND=/var/mpss/mic0.img\n"),
            Some(PathBuf::from("/var/mpss/mic0.img"))
        );
        assert_eq!(parse_virtblk_backend("VIRTBLK_BACKEND\n"), None);
        assert_eq!(parse_virtblk_backend("VIRTBLK_BACKEND=\n"), None);
        assert_eq!(
            parse_virtblk_backend("VIRTBLK_BACKEND = a.img \nVIRTBLK_BACKEND=b.img"),
            Some(PathBuf::from("a.img"))
        );
        let dir = tempfile::tempdir().unwrap();
        let root = libmic::MicRoot::new(dir.path());
        assert_eq!(compat_block_image(&root, 3), None);
        std::fs::create_dir_all(dir.path().join("etc/sysconfig/mic")).unwrap();
        std::fs::write(
            dir.path().join("etc/sysconfig/mic/mpssd003.conf"),
            "VIRTBLK_BACKEND=/img3\n",
        )
        .unwrap();
        let (img, from) = compat_block_image(&root, 3).unwrap();
        assert_eq!(img, PathBuf::from("/img3"));
        assert!(from.ends_with("etc/sysconfig/mic/mpssd003.conf"));
    }

    #[test]
    fn missing_file() {
        let c = Config::load(Path::new("/nonexistent/mpssd.toml"), true).unwrap();
        assert!(c.same_settings(&Config::default()));
        let e = Config::load(Path::new("/nonexistent/mpssd.toml"), false).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("1e300s").is_err());
    }
}
