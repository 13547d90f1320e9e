//! The card OS's user space, as far as the console shows it: a login on
//! every console once the OS runs, the shell's commands run against the
//! whole card ([`Sys`] is the shell's [`System`]), output of running
//! commands routed to the console that started them, the status page the
//! HTTP service serves, and the settling of everything the drivers handed
//! back after each event.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use mic_core::abi::MicStatus;
use mic_core::hw::{Memory, Mmio};

use super::console::TYPE_AHEAD;
use super::shell::{self, BlkOp, Iface, Power, Reply, System};
use super::tty::{TtyEvent, safe};
use super::virtio::Which;
use super::{CardHw, CardOs, OsTimer, Phase};

/// Rounds of settling per event (each may run commands that hand back more).
const SETTLE_ROUNDS: usize = 8;

impl CardOs {
    fn hostname(&self) -> String {
        format!("mic{}", self.id)
    }

    /// Handles what the drivers handed back (log lines, command output,
    /// console input, status requests), sends console output, moves a
    /// shutdown on, and arms the timers the devices need.
    pub(super) fn settle<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>) {
        self.login_new_consoles(hw);
        for _ in 0..SETTLE_ROUNDS {
            let worked = self.drain_sink(hw);
            if self.phase == Phase::Down {
                return;
            }
            if let Some(how) = self.pending_power.take() {
                self.begin_shutdown(how);
                continue;
            }
            let worked = self.pump_consoles(hw) || worked;
            self.flush_consoles(hw);
            let moved = self.shutdown_progress(hw);
            if self.phase == Phase::Down {
                return;
            }
            let left = self.virtio.as_ref().is_some_and(|v| !v.sink.is_empty());
            if !worked && !moved && !left {
                break;
            }
        }
        self.arm_devices(Instant::now());
    }

    /// One pass over what the drivers handed back; whether there was any.
    fn drain_sink<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>) -> bool {
        let Some(v) = &mut self.virtio else { return false };
        let sink = std::mem::take(&mut v.sink);
        if sink.is_empty() {
            return false;
        }
        for (level, text) in sink.klog {
            self.printk(hw, level, &text);
        }
        for (console, text, done) in sink.output {
            self.command_output(console, &text, done, hw);
        }
        for (console, ev) in sink.input {
            self.input(hw, console, ev);
            if self.phase == Phase::Down {
                return true;
            }
        }
        for index in sink.http {
            let json = self.status_json(hw);
            if let (Some(v), Some(dev)) = (&mut self.virtio, &mut self.dev) {
                v.with_net(hw, dev, Which::Index(index), Instant::now(), |n, io| {
                    n.answer_status(io, &json)
                });
            }
        }
        true
    }

    /// Prints more of every running `seq` (while the OS runs); a finished
    /// one gets its prompt. Whether one finished.
    fn pump_consoles<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>) -> bool {
        if self.phase != Phase::Running {
            return false;
        }
        let consoles = self
            .virtio
            .as_ref()
            .map(super::virtio::Virtio::consoles)
            .unwrap_or_default();
        let mut finished = false;
        for index in consoles {
            if self
                .virtio
                .as_mut()
                .and_then(|v| v.console_mut(index))
                .is_some_and(super::console::Console::pump)
            {
                self.command_output(index, "", true, hw);
                finished = true;
            }
        }
        finished
    }

    /// Sends what every console holds, and logs dropped output.
    fn flush_consoles<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>) {
        let now = Instant::now();
        let (Some(v), Some(dev)) = (&mut self.virtio, &mut self.dev) else {
            return;
        };
        for index in v.consoles() {
            v.flush_console(hw, dev, index, now);
            if let Some(c) = v.console_mut(index) {
                if c.take_dropping() {
                    let line = format!(
                        "{}: the host is not reading the console; {} bytes of output dropped",
                        c.name(),
                        c.stats().dropped
                    );
                    v.sink.klog.push((4, line));
                }
            }
        }
    }

    /// An orderly shutdown goes on: once the consoles' output reached the
    /// host (or the wait for it ran out) every device is removed; once
    /// they are gone, the status is reported. Whether anything happened.
    fn shutdown_progress<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>) -> bool {
        let Phase::ShuttingDown(how) = self.phase else {
            return false;
        };
        let now = Instant::now();
        if !self.removing {
            let drained = self
                .virtio
                .as_ref()
                .is_none_or(super::virtio::Virtio::consoles_idle);
            if !drained && self.drain_until.is_some_and(|t| now < t) {
                return false;
            }
            self.removing = true;
            if let (Some(v), Some(dev)) = (&mut self.virtio, &mut self.dev) {
                v.shutdown(hw, dev, now);
            }
            return true;
        }
        if self.virtio.as_ref().is_none_or(super::virtio::Virtio::is_empty) {
            self.complete_shutdown(hw, how);
            return true;
        }
        false
    }

    /// Arms the virtio and net timers the devices ask for.
    fn arm_devices(&mut self, now: Instant) {
        let Some(v) = &mut self.virtio else { return };
        let virtio = v.next_wake(now);
        let mut net: Option<Duration> = None;
        for index in v.nets() {
            let d = v.net_next_poll(index, now);
            net = match (net, d) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let drain = match (self.phase, self.removing, self.drain_until) {
            (Phase::ShuttingDown(_), false, Some(t)) => Some(t.saturating_duration_since(now)),
            _ => None,
        };
        if let Some(d) = virtio.into_iter().chain(drain).min() {
            self.arm(OsTimer::Virtio, d);
        }
        if let Some(d) = net {
            self.arm(OsTimer::Net, d);
        }
    }

    /// A login on every live console that has none yet (once the OS runs).
    fn login_new_consoles<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>) {
        if self.phase != Phase::Running {
            return;
        }
        let host = self.hostname();
        let consoles = self
            .virtio
            .as_ref()
            .map(super::virtio::Virtio::consoles)
            .unwrap_or_default();
        for index in consoles {
            let Some(c) = self.virtio.as_mut().and_then(|v| v.console_mut(index)) else {
                continue;
            };
            if c.shell.started {
                continue;
            }
            c.shell.started = true;
            let tty = c.name().to_owned();
            c.write(&shell::banner(&host, &tty));
            c.write(&shell::prompt(&host));
            // Lines typed before the OS was up run now.
            self.run_queued(hw, index);
        }
    }

    fn write_console(&mut self, console: u32, text: &str) {
        if let Some(c) = self.virtio.as_mut().and_then(|v| v.console_mut(console)) {
            c.write(text);
        }
    }

    fn prompt(&mut self, console: u32) {
        let p = shell::prompt(&self.hostname());
        self.write_console(console, &p);
    }

    /// Output of a command that runs on; when it ended, the prompt and any
    /// lines typed meanwhile.
    fn command_output<M: Mmio, P: Memory>(
        &mut self,
        console: u32,
        text: &str,
        done: bool,
        hw: &CardHw<M, P>,
    ) {
        self.write_console(console, text);
        if !done {
            return;
        }
        let Some(c) = self.virtio.as_mut().and_then(|v| v.console_mut(console)) else {
            return;
        };
        if !c.shell.busy {
            return;
        }
        c.shell.busy = false;
        self.prompt(console);
        self.run_queued(hw, console);
    }

    fn run_queued<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>, console: u32) {
        loop {
            let Some(c) = self.virtio.as_mut().and_then(|v| v.console_mut(console)) else {
                return;
            };
            if c.shell.busy || !c.shell.started {
                return;
            }
            let Some(line) = c.shell.queued.pop_front() else {
                return;
            };
            self.run_line(hw, console, &line);
            if self.phase != Phase::Running {
                return;
            }
        }
    }

    /// Console input from the line discipline.
    fn input<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>, console: u32, ev: TtyEvent) {
        let running = self.phase == Phase::Running;
        let host = self.hostname();
        let Some(c) = self.virtio.as_mut().and_then(|v| v.console_mut(console)) else {
            return;
        };
        let (started, busy) = (c.shell.started, c.shell.busy);
        match ev {
            TtyEvent::Interrupt => {
                c.shell.queued.clear();
                c.shell.seq = None;
                if busy {
                    c.shell.busy = false;
                    let text = self
                        .virtio
                        .as_mut()
                        .map(|v| v.cancel_jobs(console))
                        .unwrap_or_default();
                    self.write_console(console, &text);
                }
                if started && running {
                    self.prompt(console);
                }
            }
            TtyEvent::Eof if started && running && !busy => {
                let tty = c.name().to_owned();
                c.write("logout\n");
                c.write(&shell::banner(&host, &tty));
                c.write(&shell::prompt(&host));
            }
            TtyEvent::Eof => {}
            TtyEvent::Line(line) => {
                if busy || !started || !running {
                    if c.shell.queued.len() < TYPE_AHEAD {
                        c.shell.queued.push_back(line);
                    }
                    return;
                }
                self.run_line(hw, console, &line);
            }
        }
    }

    /// Runs one shell line typed on `console`.
    fn run_line<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>, console: u32, line: &str) {
        let reply = shell::run(
            line,
            &mut Sys {
                os: self,
                hw,
                console,
            },
        );
        if self.phase == Phase::Down {
            return;
        }
        let host = self.hostname();
        let Some(c) = self.virtio.as_mut().and_then(|v| v.console_mut(console)) else {
            return;
        };
        match reply {
            Reply::Done(text) => {
                c.write(&text);
                c.write(&shell::prompt(&host));
            }
            Reply::Running(text) => {
                c.write(&text);
                c.shell.busy = true;
            }
            Reply::Logout => {
                let tty = c.name().to_owned();
                c.write("logout\n");
                c.write(&shell::banner(&host, &tty));
                c.write(&shell::prompt(&host));
            }
            Reply::Down(text) => c.write(&text),
            Reply::Seq { next, last } => {
                c.shell.seq = Some((next, last));
                c.shell.busy = true;
            }
        }
    }

    /// The kernel log as `dmesg` prints it, read back from `__log_buf`.
    fn dmesg<M: Mmio, P: Memory>(&self, hw: &CardHw<M, P>) -> String {
        let Some(ring) = &self.ring else {
            return String::new();
        };
        let mut snap = vec![0u8; ring.capacity() as usize];
        if hw.phys.read(ring.base(), &mut snap).is_err() {
            return String::new();
        }
        let mut out = String::new();
        for rec in ring.records(&snap) {
            let ts = rec.ts_nsec();
            let text = String::from_utf8_lossy(rec.text);
            let _ = writeln!(
                out,
                "[{:5}.{:06}] {}",
                ts / 1_000_000_000,
                (ts % 1_000_000_000) / 1000,
                safe(&text, false)
            );
        }
        out
    }

    /// The card's status, as the HTTP service serves it.
    pub(super) fn status_json<M: Mmio, P: Memory>(&self, hw: &CardHw<M, P>) -> String {
        let state = match self.phase {
            Phase::Off => "off",
            Phase::Booting(_) => "booting",
            Phase::Running => "running",
            Phase::Hung => "hung",
            Phase::ShuttingDown(_) => "shutting_down",
            Phase::Down => "down",
        };
        let (release, _) = self
            .info
            .version
            .split_once(' ')
            .unwrap_or((&self.info.version, ""));
        let (arena_used, quarantined) = self
            .virtio
            .as_ref()
            .map_or((0, 0), |v| (v.arena_used(), v.quarantined()));
        let (devices, nets, disks) = match &self.virtio {
            Some(v) => (
                v.list(hw)
                    .into_iter()
                    .map(|(i, ty, name, status)| {
                        serde_json::json!({"name": format!("virtio{i}"), "type": ty, "driver": name, "status": status})
                    })
                    .collect::<Vec<_>>(),
                v.net_list()
                    .map(|n| {
                        let s = n.stats();
                        serde_json::json!({
                            "name": n.name(),
                            "mac": shell::mac_str(&n.mac()),
                            "ipv4": n.addr().map(|(a, l)| format!("{a}/{l}")),
                            "link": if n.link_up() { "up" } else { "down" },
                            "rx_packets": s.rx_packets, "rx_bytes": s.rx_bytes,
                            "rx_dropped": s.rx_dropped, "rx_errors": s.rx_errors,
                            "tx_packets": s.tx_packets, "tx_bytes": s.tx_bytes, "tx_dropped": s.tx_dropped,
                        })
                    })
                    .collect::<Vec<_>>(),
                v.blk_list()
                    .map(|b| {
                        let s = b.stats();
                        serde_json::json!({
                            "name": b.name(), "sectors": b.capacity(), "serial": b.serial(),
                            "reads": s.reads, "writes": s.writes, "errors": s.errors,
                        })
                    })
                    .collect::<Vec<_>>(),
            ),
            None => (Vec::new(), Vec::new(), Vec::new()),
        };
        serde_json::json!({
            "card": self.hostname(),
            "state": state,
            "kernel": release,
            "uptime_ms": u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "memory_bytes": hw.memory,
            "cpus": shell::CPUS,
            "cmdline": self.info.cmdline,
            "virtio_buffers_bytes": arena_used,
            "virtio_quarantined_bytes": quarantined,
            "devices": devices,
            "net": nets,
            "disks": disks,
        })
        .to_string()
    }
}

/// The shell's [`System`]: the whole card, seen from `console`.
struct Sys<'a, M: Mmio, P: Memory> {
    os: &'a mut CardOs,
    hw: &'a CardHw<M, P>,
    console: u32,
}

impl<M: Mmio, P: Memory> System for Sys<'_, M, P> {
    fn hostname(&self) -> String {
        self.os.hostname()
    }

    fn kernel_version(&self) -> String {
        self.os.info.version.clone()
    }

    fn uptime(&self) -> Duration {
        self.os.started.elapsed()
    }

    fn cmdline(&self) -> String {
        self.os.info.cmdline.clone()
    }

    fn memory(&self) -> (u64, u64) {
        let devices = self
            .os
            .virtio
            .as_ref()
            .map_or(0, super::virtio::Virtio::arena_used);
        (self.hw.memory, (64 << 20) + devices)
    }

    fn dmesg(&self) -> String {
        self.os.dmesg(self.hw)
    }

    fn interfaces(&self) -> Vec<Iface> {
        let Some(v) = &self.os.virtio else {
            return Vec::new();
        };
        v.net_list()
            .map(|n| Iface {
                name: n.name().to_owned(),
                mac: n.mac(),
                addr: n.addr(),
                up: n.link_up(),
                mtu: super::net::MTU,
            })
            .collect()
    }

    fn ping(&mut self, target: Ipv4Addr, count: u32) -> Result<String, String> {
        let (Some(v), Some(dev)) = (&mut self.os.virtio, &mut self.os.dev) else {
            return Err("connect: Network is unreachable".to_owned());
        };
        let console = self.console;
        let now = Instant::now();
        v.with_net(self.hw, dev, Which::Named("eth0"), now, |n, io| {
            let r = n.start_ping(console, target, count, now);
            if r.is_ok() {
                n.poll(io)?;
            }
            Ok(r)
        })
        .unwrap_or_else(|| Err("connect: Network is unreachable".to_owned()))
    }

    fn blk(&mut self, dev: Option<&str>, op: BlkOp) -> Result<Reply, String> {
        let (Some(v), Some(card)) = (&mut self.os.virtio, &mut self.os.dev) else {
            return Err("no disks".to_owned());
        };
        let console = self.console;
        let which = dev.map_or(Which::First, Which::Named);
        v.with_blk(self.hw, card, which, Instant::now(), |b, io| {
            b.command(io, console, op)
        })
        .unwrap_or_else(|| Err(format!("{}: no such disk", safe(dev.unwrap_or("vda"), false))))
    }

    fn power(&mut self, how: Power) {
        self.os.pending_power = Some(match how {
            Power::Halt => MicStatus::Halted,
            Power::PowerOff => MicStatus::PowerOff,
            Power::Reboot => MicStatus::Restart,
        });
    }

    fn sysrq(&mut self, key: char) -> Result<Reply, String> {
        match key {
            'c' => {
                self.os.printk(self.hw, 6, "sysrq: SysRq : Trigger a crash");
                self.os.panic(self.hw, "sysrq triggered crash");
                Ok(Reply::Down(String::new()))
            }
            'h' => {
                self.os.printk(
                    self.hw,
                    6,
                    "sysrq: SysRq : HELP : crash(c) help(h) show-memory-usage(m)",
                );
                Ok(Reply::Done(String::new()))
            }
            'm' => {
                let (total, used) = self.memory();
                let line = format!(
                    "sysrq: SysRq : Show Memory: {}k total, {}k used",
                    total >> 10,
                    used >> 10
                );
                self.os.printk(self.hw, 6, &line);
                Ok(Reply::Done(String::new()))
            }
            _ => Ok(Reply::Done(String::new())),
        }
    }

    fn driver_bind(&mut self, driver: &str, device: &str, bind: bool) -> Result<(), String> {
        let (Some(v), Some(card)) = (&mut self.os.virtio, &mut self.os.dev) else {
            return Err("No such device".to_owned());
        };
        v.driver_bind(self.hw, card, driver, device, bind, Instant::now())
    }
}
