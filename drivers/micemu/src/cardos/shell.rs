//! The card's shell on `hvc0`: a small busybox-like `sh` with the commands
//! an operator reaches for on a coprocessor's console. It parses a line and
//! runs it against a [`System`] (the card OS, or a fake in the tests);
//! commands that take time (ping, disk I/O) start there and print later.
//!
//! Everything printed that came from data — the command line the host
//! wrote, arguments the user typed, disk contents — goes through
//! [`tty::safe`](super::tty::safe); disk bytes are shown as hex.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::tty::{safe, safe_bytes};

/// How the system goes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    Halt,
    PowerOff,
    Reboot,
}

/// A disk operation the shell asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlkOp {
    /// Capacity, serial, features.
    Info,
    /// Hex dump of `count` sectors from `sector`.
    Read { sector: u64, count: u32 },
    /// `data` (zero-padded to whole sectors) at `sector`.
    Write { sector: u64, data: Vec<u8> },
    /// SHA-256 of the first `sectors` sectors (default: the whole disk).
    Sha256 { sectors: Option<u64> },
    /// Sequential read throughput over the first `mib` MiB.
    Bench { mib: Option<u64> },
    /// A pattern of `seed` written over the first `sectors` sectors
    /// (default: the whole disk) in sequential requests, then flushed:
    /// sequential write throughput.
    Fill { seed: u64, sectors: Option<u64> },
}

/// The most sectors `blk read` dumps.
pub const MAX_READ_SECTORS: u32 = 8;

/// One network interface as `ip addr` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub mac: [u8; 6],
    pub addr: Option<(Ipv4Addr, u8)>,
    pub up: bool,
    pub mtu: u32,
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Its output; the prompt follows.
    Done(String),
    /// It goes on (its output so far); the system prints the rest and the
    /// prompt when it ends.
    Running(String),
    /// The shell exits (`exit`, ctrl-D): a fresh login follows.
    Logout,
    /// The system is going down: no prompt follows.
    Down(String),
    /// `seq`: the numbers `next..=last`, a line each, printed as fast as
    /// the host takes them (the system prints them as the console drains);
    /// the prompt follows the last.
    Seq { next: u64, last: u64 },
}

/// What the shell's commands need from the card OS.
pub trait System {
    /// The host name (`mic0`).
    fn hostname(&self) -> String;
    /// The kernel's version string (`3.10.0-... #1 SMP ...`).
    fn kernel_version(&self) -> String;
    /// Time since boot.
    fn uptime(&self) -> Duration;
    /// The kernel command line as the host wrote it.
    fn cmdline(&self) -> String;
    /// GDDR size in bytes, and bytes the kernel uses for itself and devices.
    fn memory(&self) -> (u64, u64);
    /// The kernel log, as `dmesg` prints it (newline-separated lines).
    fn dmesg(&self) -> String;
    /// The network interfaces.
    fn interfaces(&self) -> Vec<Iface>;
    /// Starts pinging `target` `count` times.
    fn ping(&mut self, target: Ipv4Addr, count: u32) -> Result<String, String>;
    /// A disk operation on `dev` (default vda).
    fn blk(&mut self, dev: Option<&str>, op: BlkOp) -> Result<Reply, String>;
    /// halt, poweroff, reboot.
    fn power(&mut self, how: Power);
    /// A magic SysRq key (`c` crashes the kernel).
    fn sysrq(&mut self, key: char) -> Result<Reply, String>;
    /// Binds or unbinds `device` (virtioN) to/from the virtio `driver`.
    fn driver_bind(&mut self, driver: &str, device: &str, bind: bool) -> Result<(), String>;
}

/// The prompt for host `name`.
#[must_use]
pub fn prompt(host: &str) -> String {
    format!("root@{host}:~# ")
}

/// What a fresh login prints before the first prompt.
#[must_use]
pub fn banner(host: &str, tty: &str) -> String {
    format!("\nIntel(R) Xeon Phi(TM) coprocessor {host} ({tty})\n\n")
}

const HELP: &str = "\
Built-in commands:
  help                      this list
  uname [-asnrvm]           system information
  uptime                    time since boot
  dmesg                     the kernel log
  cat FILE                  /proc/cpuinfo, /proc/meminfo, /proc/cmdline, /proc/version
  echo [ARG...] [> FILE]    print; > /proc/sysrq-trigger, > /sys/bus/virtio/drivers/D/(un)bind
  ip addr                   network interfaces
  ping [-c N] HOST          ICMP echo (IPv4 addresses)
  seq [FIRST] LAST          print the numbers FIRST (default 1) to LAST, as fast
                            as the host reads them (ctrl-C stops)
  blk [vdX] info            disk capacity, serial, features
  blk [vdX] read SECTOR [N] hex dump of N sectors (at most 8)
  blk [vdX] write SECTOR TEXT
                            write TEXT (zero-padded to a sector)
  blk [vdX] sha256 [SECTORS]
                            checksum of the disk (or its first SECTORS)
  blk [vdX] bench [MIB]     sequential read throughput
  blk [vdX] fill SEED [SECTORS]
                            write a pattern of SEED over the disk (or its
                            first SECTORS), flush: sequential write throughput
  poweroff, reboot, halt    shut the card down
  exit                      log out
";

/// Splits a command line into words: blanks separate, '…' and "…" quote,
/// `>` is a word of its own.
fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => out.extend(cur.take()),
            '>' => {
                out.extend(cur.take());
                out.push(">".to_owned());
            }
            '\'' | '"' => {
                let s = cur.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some(x) => s.push(x),
                        None => return Err("syntax error: unterminated quoted string".to_owned()),
                    }
                }
            }
            c => cur.get_or_insert_with(String::new).push(c),
        }
    }
    out.extend(cur);
    Ok(out)
}

/// Runs one command line.
pub fn run(line: &str, sys: &mut impl System) -> Reply {
    let words = match words(line) {
        Ok(w) => w,
        Err(e) => return Reply::Done(format!("sh: {e}\n")),
    };
    let Some((cmd, args)) = words.split_first() else {
        return Reply::Done(String::new());
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let done = |r: Result<String, String>| Reply::Done(r.unwrap_or_else(|e| e + "\n"));
    match cmd.as_str() {
        "help" => Reply::Done(HELP.to_owned()),
        "uname" => done(uname(&args, sys)),
        "uptime" => Reply::Done(uptime(sys.uptime())),
        "dmesg" => Reply::Done(sys.dmesg()),
        "cat" => done(cat(&args, sys)),
        "echo" => echo(&args, sys),
        "ip" => done(ip(&args, sys)),
        "ping" => match ping_args(&args) {
            Ok((target, count)) => match sys.ping(target, count) {
                Ok(head) => Reply::Running(head),
                Err(e) => Reply::Done(format!("ping: {e}\n")),
            },
            Err(e) => Reply::Done(format!("ping: {e}\n")),
        },
        "seq" => match seq_args(&args) {
            Ok((next, last)) => Reply::Seq { next, last },
            Err(e) => Reply::Done(format!("seq: {e}\n")),
        },
        "blk" => match blk_args(&args) {
            Ok((dev, op)) => sys
                .blk(dev, op)
                .unwrap_or_else(|e| Reply::Done(format!("blk: {e}\n"))),
            Err(e) => Reply::Done(format!("blk: {e}\n")),
        },
        "poweroff" | "reboot" | "halt" if !args.is_empty() => {
            Reply::Done(format!("{cmd}: takes no arguments\n"))
        }
        "poweroff" | "reboot" | "halt" => {
            sys.power(match cmd.as_str() {
                "poweroff" => Power::PowerOff,
                "reboot" => Power::Reboot,
                _ => Power::Halt,
            });
            Reply::Down("The system is going down NOW!\n".to_owned())
        }
        "exit" | "logout" => Reply::Logout,
        other => Reply::Done(format!("sh: {}: not found\n", safe(other, false))),
    }
}

/// The release (first word) and version (from `#`) of a version string.
fn release_and_version(v: &str) -> (&str, &str) {
    let release = v.split_whitespace().next().unwrap_or("unknown");
    let version = v.find(" #").map_or("", |i| &v[i + 1..]);
    (release, version)
}

fn uname(args: &[&str], sys: &impl System) -> Result<String, String> {
    let mut want = String::new();
    for a in args {
        let flags = a
            .strip_prefix('-')
            .filter(|f| !f.is_empty() && f.chars().all(|c| "asnrvm".contains(c)))
            .ok_or_else(|| {
                format!(
                    "uname: invalid option -- '{}'",
                    safe(a.trim_start_matches('-'), false)
                )
            })?;
        want.push_str(flags);
    }
    if want.contains('a') {
        "snrvm".clone_into(&mut want);
    }
    if want.is_empty() {
        want.push('s');
    }
    let v = sys.kernel_version();
    let (release, version) = release_and_version(&v);
    let host = sys.hostname();
    let fields: Vec<String> = "snrvm"
        .chars()
        .filter(|c| want.contains(*c))
        .map(|c| match c {
            's' => "Linux".to_owned(),
            'n' => host.clone(),
            'r' => safe(release, false),
            'v' => safe(version, false),
            _ => "k1om".to_owned(),
        })
        .collect();
    let mut out = fields.join(" ");
    if want.contains('m') && args.iter().any(|a| a.contains('a')) {
        out.push_str(" GNU/Linux");
    }
    out.push('\n');
    Ok(out)
}

/// ` HH:MM:SS up ...,  load average: ...` (the time of day is the host's,
/// UTC: the card has no clock of its own).
fn uptime(up: Duration) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (h, m, s) = ((now / 3600) % 24, (now / 60) % 60, now % 60);
    let mins = up.as_secs() / 60;
    let up = if mins < 60 {
        format!("{mins} min")
    } else {
        format!("{}:{:02}", mins / 60, mins % 60)
    };
    format!(" {h:02}:{m:02}:{s:02} up {up},  1 user,  load average: 0.00, 0.00, 0.00\n")
}

fn cat(args: &[&str], sys: &impl System) -> Result<String, String> {
    if args.is_empty() {
        return Err("cat: reading standard input is not supported on this console".to_owned());
    }
    let mut out = String::new();
    for &f in args {
        match f {
            "/proc/cpuinfo" => out.push_str(&cpuinfo()),
            "/proc/meminfo" => out.push_str(&meminfo(sys.memory())),
            "/proc/cmdline" => {
                out.push_str(&safe(&sys.cmdline(), false));
                out.push('\n');
            }
            "/proc/version" => {
                let _ = writeln!(out, "Linux version {}", safe(&sys.kernel_version(), false));
            }
            other => {
                let _ = writeln!(out, "cat: {}: No such file or directory", safe(other, false));
            }
        }
    }
    Ok(out)
}

/// Logical CPUs of an X100 (61 cores × 4 threads).
pub const CPUS: u32 = 244;

fn cpuinfo() -> String {
    let mut out = String::new();
    for p in 0..CPUS {
        let _ = write!(
            out,
            "processor\t: {p}\nvendor_id\t: GenuineIntel\ncpu family\t: 11\nmodel\t\t: 1\n\
             model name\t: 0b/01\nstepping\t: 3\ncpu MHz\t\t: 1238.094\ncache size\t: 512 KB\n\
             physical id\t: 0\nsiblings\t: {CPUS}\ncore id\t\t: {}\ncpu cores\t: {}\napicid\t\t: {p}\n\
             fpu\t\t: yes\nflags\t\t: fpu vme de pse tsc msr pae mce cx8 apic mtrr mca pat fxsr ht \
             syscall nx lm nopl lahf_lm\nbogomips\t: 2476.18\nclflush size\t: 64\n\
             address sizes\t: 40 bits physical, 48 bits virtual\n\n",
            p / 4,
            CPUS / 4
        );
    }
    out
}

fn meminfo((total, used): (u64, u64)) -> String {
    let kb = |b: u64| b >> 10;
    let avail = total.saturating_sub(used);
    format!(
        "MemTotal:       {:>8} kB\nMemFree:        {:>8} kB\nMemAvailable:   {:>8} kB\n\
         Buffers:               0 kB\nCached:                0 kB\nSwapTotal:             0 kB\n\
         SwapFree:              0 kB\n",
        kb(total),
        kb(avail),
        kb(avail)
    )
}

fn echo(args: &[&str], sys: &mut impl System) -> Reply {
    let (text, file) = match args.iter().position(|a| *a == ">") {
        Some(i) => match args.get(i + 1..) {
            Some([f]) => (&args[..i], Some(*f)),
            _ => return Reply::Done("sh: syntax error: bad redirection\n".to_owned()),
        },
        None => (args, None),
    };
    let text = text.join(" ");
    let Some(file) = file else {
        return Reply::Done(format!("{}\n", safe(&text, false)));
    };
    if file == "/proc/sysrq-trigger" {
        let Some(key) = text.chars().next() else {
            return Reply::Done(String::new());
        };
        return sys.sysrq(key).unwrap_or_else(|e| Reply::Done(e + "\n"));
    }
    let bind = file
        .strip_prefix("/sys/bus/virtio/drivers/")
        .and_then(|rest| rest.split_once('/'))
        .and_then(|(driver, op)| match op {
            "bind" => Some((driver, true)),
            "unbind" => Some((driver, false)),
            _ => None,
        });
    match bind {
        Some((driver, bind)) => match sys.driver_bind(driver, text.trim(), bind) {
            Ok(()) => Reply::Done(String::new()),
            Err(e) => Reply::Done(format!("sh: write error: {e}\n")),
        },
        None => Reply::Done(format!(
            "sh: can't create {}: Read-only file system\n",
            safe(file, false)
        )),
    }
}

fn ip(args: &[&str], sys: &impl System) -> Result<String, String> {
    match args {
        ["addr" | "a" | "address"] | ["addr" | "a" | "address", "show"] => Ok(ip_addr(&sys.interfaces())),
        _ => Err("Usage: ip addr".to_owned()),
    }
}

/// `aa:bb:cc:dd:ee:ff`.
#[must_use]
pub fn mac_str(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

fn ip_addr(ifs: &[Iface]) -> String {
    let mut out = String::from(
        "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN\n    \
         link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n    inet 127.0.0.1/8 scope host lo\n",
    );
    for (i, f) in ifs.iter().enumerate() {
        let (flags, state) = if f.up {
            ("BROADCAST,MULTICAST,UP,LOWER_UP", "UP")
        } else {
            ("BROADCAST,MULTICAST", "DOWN")
        };
        let _ = write!(
            out,
            "{}: {}: <{flags}> mtu {} qdisc pfifo_fast state {state} qlen 1000\n    \
             link/ether {} brd ff:ff:ff:ff:ff:ff\n",
            i + 2,
            f.name,
            f.mtu,
            mac_str(&f.mac)
        );
        if let Some((a, len)) = f.addr {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            let brd = Ipv4Addr::from(u32::from(a) | !mask);
            let _ = writeln!(out, "    inet {a}/{len} brd {brd} scope global {}", f.name);
        }
    }
    out
}

fn ping_args(args: &[&str]) -> Result<(Ipv4Addr, u32), String> {
    let mut count = 4;
    let mut target = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "-c" => {
                count = it
                    .next()
                    .and_then(|n| n.parse::<u32>().ok())
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or("-c needs a count from 1 to 1000")?;
            }
            h if target.is_none() && !h.starts_with('-') => {
                target = Some(
                    h.parse::<Ipv4Addr>()
                        .map_err(|_| format!("bad address '{}'", safe(h, false)))?,
                );
            }
            other => return Err(format!("unexpected argument '{}'", safe(other, false))),
        }
    }
    Ok((target.ok_or("usage: ping [-c COUNT] HOST")?, count))
}

fn seq_args(args: &[&str]) -> Result<(u64, u64), String> {
    match args {
        [last] => Ok((1, num(Some(last), "LAST")?)),
        [first, last] => Ok((num(Some(first), "FIRST")?, num(Some(last), "LAST")?)),
        _ => Err("usage: seq [FIRST] LAST".to_owned()),
    }
}

fn num(s: Option<&&str>, what: &str) -> Result<u64, String> {
    let s = s.ok_or_else(|| format!("missing {what}"))?;
    s.parse()
        .map_err(|_| format!("{what} '{}' is not a number", safe(s, false)))
}

fn blk_args<'a>(args: &[&'a str]) -> Result<(Option<&'a str>, BlkOp), String> {
    let (dev, args) = match args.first() {
        Some(d) if d.starts_with("vd") => (Some(*d), &args[1..]),
        _ => (None, args),
    };
    let op = match args {
        ["info"] => BlkOp::Info,
        ["read", rest @ ..] if rest.len() <= 2 => {
            let sector = num(rest.first(), "sector")?;
            let count = match rest.get(1) {
                Some(n) => u32::try_from(num(Some(n), "count")?).unwrap_or(u32::MAX),
                None => 1,
            };
            if count == 0 || count > MAX_READ_SECTORS {
                return Err(format!("read: count must be 1 to {MAX_READ_SECTORS}"));
            }
            BlkOp::Read { sector, count }
        }
        ["write", sector, text @ ..] if !text.is_empty() => BlkOp::Write {
            sector: num(Some(sector), "sector")?,
            data: text.join(" ").into_bytes(),
        },
        ["sha256"] => BlkOp::Sha256 { sectors: None },
        ["sha256", n] => BlkOp::Sha256 {
            sectors: Some(num(Some(n), "sectors")?),
        },
        ["fill", seed] => BlkOp::Fill {
            seed: num(Some(seed), "seed")?,
            sectors: None,
        },
        ["fill", seed, n] => BlkOp::Fill {
            seed: num(Some(seed), "seed")?,
            sectors: Some(num(Some(n), "sectors")?).filter(|&s| s > 0),
        },
        ["bench"] => BlkOp::Bench { mib: None },
        ["bench", n] => BlkOp::Bench {
            mib: Some(num(Some(n), "MiB")?).filter(|&m| m > 0),
        },
        _ => {
            return Err(
                "usage: blk [vdX] info|read SECTOR [N]|write SECTOR TEXT|sha256 [SECTORS]|bench [MIB]|fill SEED [SECTORS]"
                    .to_owned(),
            );
        }
    };
    Ok((dev, op))
}

/// A sector dump as `hexdump -C` shows it: offset, 16 bytes in hex, and
/// the printable ASCII (anything else as `.`).
#[must_use]
pub fn hexdump(base: u64, data: &[u8]) -> String {
    let mut out = String::new();
    for (i, row) in data.chunks(16).enumerate() {
        let _ = write!(out, "{:08x}  ", base + i as u64 * 16);
        for k in 0..16 {
            match row.get(k) {
                Some(b) => {
                    let _ = write!(out, "{b:02x} ");
                }
                None => out.push_str("   "),
            }
            if k == 7 {
                out.push(' ');
            }
        }
        out.push_str(" |");
        out.extend(row.iter().map(|&b| {
            if (0x20..0x7f).contains(&b) {
                char::from(b)
            } else {
                '.'
            }
        }));
        out.push_str("|\n");
    }
    out
}

/// A disk serial as GET_ID returned it: up to the first NUL, made safe.
#[must_use]
pub fn serial_str(id: &[u8]) -> String {
    let end = id.iter().position(|&b| b == 0).unwrap_or(id.len());
    safe_bytes(&id[..end])
}

/// `string_get_size` of Linux 3.10: three significant digits, truncated,
/// in powers of 1000 (`B kB MB GB ...`) or 1024 (`B KiB MiB ...`).
#[must_use]
pub fn size_str(bytes: u64, binary: bool) -> String {
    const UNITS_10: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    const UNITS_2: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let (div, units) = if binary { (1024, UNITS_2) } else { (1000, UNITS_10) };
    let (mut size, mut rem, mut i) = (bytes, 0u64, 0);
    while size >= div && i + 1 < units.len() {
        rem = size % div;
        size /= div;
        i += 1;
    }
    let mut tmp = String::new();
    if i > 0 {
        let mut sf = size;
        let mut j = 0;
        while sf * 10 < 1000 {
            sf *= 10;
            j += 1;
        }
        if j > 0 {
            let frac = format!(".{:03}", rem * 1000 / div);
            frac[..=j].clone_into(&mut tmp);
        }
    }
    format!("{size}{tmp} {}", units[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Fake {
        pings: Vec<(Ipv4Addr, u32)>,
        blk: Vec<(Option<String>, BlkOp)>,
        power: Vec<Power>,
        sysrq: Vec<char>,
        binds: Vec<(String, String, bool)>,
    }

    impl System for Fake {
        fn hostname(&self) -> String {
            "mic3".into()
        }
        fn kernel_version(&self) -> String {
            "3.10.0-micemu (build@micemu) (gcc version 4.7.0 (GCC) ) #1 SMP Tue Nov 24 12:00:00 UTC 2026"
                .into()
        }
        fn uptime(&self) -> Duration {
            Duration::from_secs(3725)
        }
        fn cmdline(&self) -> String {
            "quiet ifcfg=static;address,172.31.3.1 \x1b]0;pwned\x07".into()
        }
        fn memory(&self) -> (u64, u64) {
            (8 << 30, 64 << 20)
        }
        fn dmesg(&self) -> String {
            "[    0.000000] Linux version 3.10.0\n".into()
        }
        fn interfaces(&self) -> Vec<Iface> {
            vec![Iface {
                name: "eth0".into(),
                mac: [2, 0x6d, 0x69, 0x63, 3, 0],
                addr: Some(("172.31.3.1".parse().unwrap(), 24)),
                up: true,
                mtu: 1500,
            }]
        }
        fn ping(&mut self, target: Ipv4Addr, count: u32) -> Result<String, String> {
            self.pings.push((target, count));
            Ok(format!("PING {target}\n"))
        }
        fn blk(&mut self, dev: Option<&str>, op: BlkOp) -> Result<Reply, String> {
            if dev == Some("vdz") {
                return Err("vdz: no such disk".into());
            }
            self.blk.push((dev.map(Into::into), op));
            Ok(Reply::Running(String::new()))
        }
        fn power(&mut self, how: Power) {
            self.power.push(how);
        }
        fn sysrq(&mut self, key: char) -> Result<Reply, String> {
            self.sysrq.push(key);
            Ok(Reply::Down(String::new()))
        }
        fn driver_bind(&mut self, driver: &str, device: &str, bind: bool) -> Result<(), String> {
            if driver != "virtio_net" {
                return Err("No such device".into());
            }
            self.binds.push((driver.into(), device.into(), bind));
            Ok(())
        }
    }

    fn out(line: &str, sys: &mut Fake) -> String {
        match run(line, sys) {
            Reply::Done(s) => s,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn uname_names_the_card() {
        let mut f = Fake::default();
        assert_eq!(out("uname", &mut f), "Linux\n");
        assert_eq!(
            out("uname -a", &mut f),
            "Linux mic3 3.10.0-micemu #1 SMP Tue Nov 24 12:00:00 UTC 2026 k1om GNU/Linux\n"
        );
        assert_eq!(out("uname -nr", &mut f), "mic3 3.10.0-micemu\n");
        assert_eq!(out("uname -m -s", &mut f), "Linux k1om\n");
        assert_eq!(out("uname -x", &mut f), "uname: invalid option -- 'x'\n");
    }

    #[test]
    fn files_and_text_are_safe() {
        let mut f = Fake::default();
        let c = out("cat /proc/cmdline", &mut f);
        assert_eq!(c, "quiet ifcfg=static;address,172.31.3.1 \\x1b]0;pwned\\x07\n");
        assert!(out("cat /proc/version", &mut f).starts_with("Linux version 3.10.0-micemu"));
        let cpu = out("cat /proc/cpuinfo", &mut f);
        assert_eq!(cpu.matches("processor\t:").count(), 244);
        assert!(cpu.contains("processor\t: 243\n"));
        let mem = out("cat /proc/meminfo", &mut f);
        assert!(
            mem.starts_with("MemTotal:        8388608 kB\nMemFree:         8323072 kB\n"),
            "{mem}"
        );
        assert_eq!(
            out("cat /etc/shadow", &mut f),
            "cat: /etc/shadow: No such file or directory\n"
        );
        assert_eq!(out("echo hello   'big  world'", &mut f), "hello big  world\n");
        assert_eq!(out("echo \x1b[31mred", &mut f), "\\x1b[31mred\n");
        assert_eq!(out("no\x07such", &mut f), "sh: no\\x07such: not found\n");
        assert_eq!(
            out("echo 'open", &mut f),
            "sh: syntax error: unterminated quoted string\n"
        );
        assert_eq!(out("", &mut f), "");
        assert!(out("help", &mut f).contains("blk [vdX] sha256"));
        assert!(out("uptime", &mut f).contains(" up 1:02,  1 user"));
        assert_eq!(out("dmesg", &mut f), "[    0.000000] Linux version 3.10.0\n");
    }

    #[test]
    fn ip_addr_lists_eth0() {
        let mut f = Fake::default();
        let s = out("ip addr", &mut f);
        assert!(
            s.contains("2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500"),
            "{s}"
        );
        assert!(
            s.contains("link/ether 02:6d:69:63:03:00 brd ff:ff:ff:ff:ff:ff"),
            "{s}"
        );
        assert!(
            s.contains("inet 172.31.3.1/24 brd 172.31.3.255 scope global eth0"),
            "{s}"
        );
        assert_eq!(out("ip route", &mut f), "Usage: ip addr\n");
    }

    #[test]
    fn redirections_reach_sysrq_and_driver_binding() {
        let mut f = Fake::default();
        assert_eq!(
            run("echo c > /proc/sysrq-trigger", &mut f),
            Reply::Down(String::new())
        );
        assert_eq!(f.sysrq, ['c']);
        assert_eq!(
            out("echo virtio1 > /sys/bus/virtio/drivers/virtio_net/unbind", &mut f),
            ""
        );
        assert_eq!(
            out("echo virtio1 >/sys/bus/virtio/drivers/virtio_net/bind", &mut f),
            ""
        );
        assert_eq!(
            f.binds,
            [
                ("virtio_net".into(), "virtio1".into(), false),
                ("virtio_net".into(), "virtio1".into(), true)
            ]
        );
        assert_eq!(
            out("echo virtio1 > /sys/bus/virtio/drivers/virtio_blk/unbind", &mut f),
            "sh: write error: No such device\n"
        );
        assert_eq!(
            out("echo x > /etc/passwd", &mut f),
            "sh: can't create /etc/passwd: Read-only file system\n"
        );
        assert_eq!(out("echo x >", &mut f), "sh: syntax error: bad redirection\n");
    }

    #[test]
    fn seq_parses_its_range() {
        let mut sys = Fake::default();
        assert_eq!(run("seq 3", &mut sys), Reply::Seq { next: 1, last: 3 });
        assert_eq!(run("seq 5 7", &mut sys), Reply::Seq { next: 5, last: 7 });
        assert_eq!(out("seq x", &mut sys), "seq: LAST 'x' is not a number\n");
        assert_eq!(out("seq 1 2 3", &mut sys), "seq: usage: seq [FIRST] LAST\n");
    }

    #[test]
    fn ping_and_blk_parse_their_arguments() {
        let mut f = Fake::default();
        assert_eq!(
            run("ping -c 2 172.31.3.254", &mut f),
            Reply::Running("PING 172.31.3.254\n".into())
        );
        assert_eq!(
            run("ping 10.0.0.1", &mut f),
            Reply::Running("PING 10.0.0.1\n".into())
        );
        assert_eq!(
            f.pings,
            [
                ("172.31.3.254".parse().unwrap(), 2),
                ("10.0.0.1".parse().unwrap(), 4)
            ]
        );
        assert_eq!(
            out("ping host.example", &mut f),
            "ping: bad address 'host.example'\n"
        );
        assert_eq!(
            out("ping -c 0 1.2.3.4", &mut f),
            "ping: -c needs a count from 1 to 1000\n"
        );
        assert_eq!(out("ping", &mut f), "ping: usage: ping [-c COUNT] HOST\n");
        for line in [
            "blk info",
            "blk vdb read 7 2",
            "blk write 3 hello  world",
            "blk sha256",
            "blk sha256 64",
            "blk bench 4",
            "blk fill 7",
            "blk vdb fill 9 128",
        ] {
            assert_eq!(run(line, &mut f), Reply::Running(String::new()), "{line}");
        }
        assert_eq!(
            f.blk,
            [
                (None, BlkOp::Info),
                (Some("vdb".into()), BlkOp::Read { sector: 7, count: 2 }),
                (
                    None,
                    BlkOp::Write {
                        sector: 3,
                        data: b"hello world".to_vec()
                    }
                ),
                (None, BlkOp::Sha256 { sectors: None }),
                (None, BlkOp::Sha256 { sectors: Some(64) }),
                (None, BlkOp::Bench { mib: Some(4) }),
                (
                    None,
                    BlkOp::Fill {
                        seed: 7,
                        sectors: None
                    }
                ),
                (
                    Some("vdb".into()),
                    BlkOp::Fill {
                        seed: 9,
                        sectors: Some(128)
                    }
                ),
            ]
        );
        assert_eq!(
            out("blk fill", &mut f).lines().next(),
            Some(
                "blk: usage: blk [vdX] info|read SECTOR [N]|write SECTOR TEXT|sha256 [SECTORS]|bench [MIB]|fill SEED [SECTORS]"
            )
        );
        assert_eq!(out("blk read 1 9", &mut f), "blk: read: count must be 1 to 8\n");
        assert_eq!(out("blk read x", &mut f), "blk: sector 'x' is not a number\n");
        assert!(out("blk write 1", &mut f).starts_with("blk: usage"));
        assert_eq!(out("blk vdz info", &mut f), "blk: vdz: no such disk\n");
    }

    #[test]
    fn power_and_logout() {
        let mut f = Fake::default();
        assert!(matches!(run("poweroff", &mut f), Reply::Down(_)));
        assert!(matches!(run("reboot", &mut f), Reply::Down(_)));
        assert!(matches!(run("halt", &mut f), Reply::Down(_)));
        assert_eq!(f.power, [Power::PowerOff, Power::Reboot, Power::Halt]);
        assert_eq!(out("reboot now", &mut f), "reboot: takes no arguments\n");
        assert_eq!(run("exit", &mut f), Reply::Logout);
        assert_eq!(prompt("mic0"), "root@mic0:~# ");
    }

    #[test]
    fn formats() {
        assert_eq!(size_str(1 << 20, false), "1.04 MB");
        assert_eq!(size_str(1 << 20, true), "1.00 MiB");
        assert_eq!(size_str(8 << 30, false), "8.58 GB");
        assert_eq!(size_str(8 << 30, true), "8.00 GiB");
        assert_eq!(size_str(512, false), "512 B");
        assert_eq!(size_str(0, true), "0 B");
        assert_eq!(size_str(123_456_789, false), "123 MB");
        assert_eq!(size_str(u64::MAX, true), "15.9 EiB");
        let d = hexdump(0x200, b"hello\x00\x1b[2J world!!");
        assert_eq!(
            d,
            "00000200  68 65 6c 6c 6f 00 1b 5b  32 4a 20 77 6f 72 6c 64  |hello..[2J world|\n\
             00000210  21 21                                             |!!|\n"
        );
        assert_eq!(serial_str(b"mic0-vda\0\0\0"), "mic0-vda");
        assert_eq!(serial_str(b"\x1b]2;x"), "\\x1b]2;x");
        assert_eq!(mac_str(&[2, 0x6d, 0x69, 0x63, 0, 1]), "02:6d:69:63:00:01");
    }
}
