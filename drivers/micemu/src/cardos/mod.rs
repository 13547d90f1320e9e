//! The card OS model: what runs on the card after the bootstrap hands over.
//!
//! It boots only from what the host driver put in GDDR ([`boot`]), checks
//! all of it as a suspicious kernel would, and writes its kernel log as 3.10
//! printk records into `__log_buf` in card memory, step by step as a real
//! boot does. At boot step 4 it runs the card half of the driver core
//! (device-page discovery, doorbells) and brings up the virtio devices the
//! host published ([`virtio`]): a console with a shell ([`console`],
//! [`tty`], [`shell`], [`system`]), a network stack ([`net`]) and a disk
//! ([`blk`]), all with their buffers in GDDR ([`memmap`]). Orderly
//! shutdowns remove every device before reporting; a panic leaves them.
//!
//! Nothing here blocks or sleeps: every wait is a timer the event loop
//! runs ([`OsTimer`], collected by [`CardOs::take_wakeups`]), and a reset
//! of the card drops all of it.

pub mod blk;
pub mod boot;
pub mod console;
pub mod memmap;
pub mod net;
pub mod shell;
pub mod system;
pub mod tty;
pub mod virtio;

use std::time::{Duration, Instant};

use mic_core::abi::MicStatus;
use mic_core::card::CardDevice;
use mic_core::handshake::AckTiming;
use mic_core::hw::{Memory, Mmio};
use mic_core::printk::LogRing;
use mic_core::regs;
use mic_core::{abi, devpage, post};

use boot::BootInfo;
pub use boot::ifcfg_address;
use virtio::Virtio;

use crate::firmware::{self, LOG_BUF_LEN_VA, LOG_BUF_VA, START_KERNEL_MAP};

/// Where the card OS is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Powered but no OS: in reset, or waiting in the bootstrap.
    Off,
    /// Booting; the number is the next boot step.
    Booting(u32),
    /// Init has run; the OS is up.
    Running,
    /// Boot stopped making progress (bad image, or an injected hang).
    Hung,
    /// An orderly halt, power-off or restart is removing the devices; the
    /// status is reported when they are gone.
    ShuttingDown(MicStatus),
    /// The OS has halted, powered off, rebooted or panicked and reported it.
    Down,
}

/// Number of boot steps; step k runs at k/(STEPS-1) of the boot duration.
pub const BOOT_STEPS: u32 = 8;

/// The line that says the card OS is up (the last boot record): what the
/// tools look for.
pub const BOOT_COMPLETE: &str = mic_core::card::OS_UP_MARKER;

/// The card OS's own timers (besides boot steps and power-off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OsTimer {
    /// Virtio handshake polls and work left over from a doorbell.
    Virtio,
    /// The network stacks' timers (TCP retransmits, ARP, ping).
    Net,
}

impl OsTimer {
    fn slot(self) -> usize {
        self as usize
    }
}

/// Hardware the card OS runs on.
#[derive(Debug)]
pub struct CardHw<M: Mmio, P: Memory> {
    pub mmio: M,
    /// The card's physical address space (GDDR + SMPT window).
    pub phys: P,
    /// GDDR size in bytes.
    pub memory: u64,
}

/// The card's OS.
#[derive(Debug)]
pub struct CardOs {
    id: u32,
    log_buf_len: u32,
    ack: AckTiming,
    phase: Phase,
    started: Instant,
    ring: Option<LogRing>,
    dev: Option<CardDevice>,
    virtio: Option<Virtio>,
    info: BootInfo,
    hang_next_boot: bool,
    rng: u64,
    /// When each [`OsTimer`] is armed for.
    armed: [Option<Instant>; 2],
    /// Timers to schedule: (delay, which).
    wakeups: Vec<(Duration, OsTimer)>,
    /// A shell asked for halt/poweroff/reboot.
    pending_power: Option<MicStatus>,
    /// Shutting down: the devices are being removed (after the consoles
    /// drained, or this deadline passed).
    removing: bool,
    drain_until: Option<Instant>,
}

impl CardOs {
    /// The OS of card `id`, with a kernel log of `log_buf_len` bytes and
    /// the virtio handshake timing `ack`.
    #[must_use]
    pub fn new(id: u32, log_buf_len: u32, ack: AckTiming) -> Self {
        Self {
            id,
            log_buf_len,
            ack,
            phase: Phase::Off,
            started: Instant::now(),
            ring: None,
            dev: None,
            virtio: None,
            info: BootInfo::default(),
            hang_next_boot: false,
            rng: 0x9E37_79B9_7F4A_7C15 ^ u64::from(id),
            armed: [None; 2],
            wakeups: Vec::new(),
            pending_power: None,
            removing: false,
            drain_until: None,
        }
    }

    #[must_use]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The hardware was reset: whatever ran is gone, its virtio state
    /// included (the host resets its side of every device).
    pub fn power_cycle(&mut self) {
        self.phase = Phase::Off;
        self.ring = None;
        self.dev = None;
        self.virtio = None;
        self.info = BootInfo::default();
        self.armed = [None; 2];
        self.wakeups.clear();
        self.pending_power = None;
        self.removing = false;
        self.drain_until = None;
    }

    /// Arms a hang: the current boot stops where it is, or the next one
    /// stops after its banner.
    pub fn arm_hang(&mut self) {
        if matches!(self.phase, Phase::Booting(_)) {
            self.phase = Phase::Hung;
        } else {
            self.hang_next_boot = true;
        }
    }

    fn ts(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The card kernel prints a line. Before the log buffer exists (or after
    /// the OS is gone) there is nobody to print.
    pub fn printk<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>, level: u8, text: &str) {
        let ts = self.ts();
        if let Some(ring) = &mut self.ring {
            // A log write that fails (never, with our own addresses) only
            // loses the line, as a real printk into a broken buffer would.
            let _ = ring.store(&hw.phys, ts, 0, level, text.as_bytes());
        }
    }

    /// The bootstrap interrupt: start booting what the host loaded.
    /// Returns the delay until the next boot step, if the boot goes on.
    pub fn bootstrap<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>, boot: Duration) -> Option<Duration> {
        self.power_cycle();
        self.started = Instant::now();
        let Ok(info) = boot::load(hw) else {
            hw.mmio
                .write32(regs::POSTCODE, post::register_value(post::BAD_IMAGE));
            self.phase = Phase::Hung;
            return None;
        };
        self.info = info;
        // The kernel's log buffer is in its .bss: zero at every boot.
        let base = LOG_BUF_VA - START_KERNEL_MAP;
        let len = u64::from(self.log_buf_len);
        let zeros = vec![0u8; self.log_buf_len as usize];
        if hw.phys.write(base, &zeros).is_err()
            || hw
                .phys
                .write_u32(LOG_BUF_LEN_VA - START_KERNEL_MAP, self.log_buf_len)
                .is_err()
            || len > hw.memory
        {
            self.phase = Phase::Hung;
            return None;
        }
        self.ring = Some(LogRing::new(base, self.log_buf_len));
        self.phase = Phase::Booting(0);
        Some(self.step(hw, boot))
    }

    /// Runs the next boot step; returns the delay to the step after it, or
    /// None when the boot is over (or stopped).
    pub fn step<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>, boot: Duration) -> Duration {
        let Phase::Booting(n) = self.phase else {
            return Duration::ZERO;
        };
        hw.mmio
            .write32(regs::POSTCODE, post::register_value(post::step(n)));
        let mem_mib = hw.memory >> 20;
        match n {
            0 => {
                let v = format!("Linux version {}", self.info.version);
                self.printk(hw, 5, &v);
                let c = format!("Command line: {}", self.info.cmdline);
                self.printk(hw, 6, &c);
                self.printk(hw, 6, "e820: BIOS-provided physical RAM map:");
                let e = format!(
                    "BIOS-e820: [mem 0x0000000000000000-0x{:016x}] usable",
                    hw.memory - 1
                );
                self.printk(hw, 6, &e);
                if self.hang_next_boot {
                    self.hang_next_boot = false;
                    self.phase = Phase::Hung;
                    return Duration::ZERO;
                }
            }
            1 => {
                let m = format!(
                    "Memory: {}k/{}k available ({}k kernel code)",
                    (mem_mib << 10) - 65536,
                    mem_mib << 10,
                    self.info.image_size >> 10
                );
                self.printk(hw, 6, &m);
                self.printk(
                    hw,
                    6,
                    "SLUB: HWalign=64, Order=0-3, MinObjects=0, CPUs=244, Nodes=1",
                );
            }
            2 => {
                self.printk(
                    hw,
                    6,
                    "smpboot: CPU0: Genuine Intel(R) Xeon Phi(TM) coprocessor x100 family",
                );
                self.printk(hw, 6, "smpboot: Total of 244 processors activated");
            }
            3 => self.unpack_initramfs(hw),
            4 => self.start_card_driver(hw),
            5 => {
                let line = match boot::ifcfg(&self.info.cmdline) {
                    Ok(Some((a, len))) => format!("ifcfg: eth0 static address {a}/{len}"),
                    Ok(None) => "ifcfg: no static address on the command line".to_owned(),
                    Err(e) => format!("ifcfg: {e}; eth0 stays unconfigured"),
                };
                self.printk(hw, 6, &line);
            }
            6 => {
                self.printk(hw, 6, "Freeing unused kernel memory: 1076k freed");
            }
            _ => {
                self.printk(hw, 6, BOOT_COMPLETE);
                hw.mmio
                    .write32(regs::POSTCODE, post::register_value(post::RUNNING));
                self.phase = Phase::Running;
                self.settle(hw);
                return Duration::ZERO;
            }
        }
        if self.phase != Phase::Booting(n) {
            return Duration::ZERO;
        }
        self.phase = Phase::Booting(n + 1);
        boot / (BOOT_STEPS - 1)
    }

    fn unpack_initramfs<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>) {
        let Some((addr, size)) = self.info.ramdisk else {
            self.printk(hw, 6, "No initramfs found");
            return;
        };
        self.printk(hw, 6, "Unpacking initramfs...");
        let ok = mic_core::hw::in_bounds(addr, size, hw.memory) && size <= 1 << 30;
        let parsed = if ok {
            let mut buf = vec![0u8; size as usize];
            hw.phys
                .read(addr, &mut buf)
                .map_err(|_| "unreadable")
                .and_then(|()| firmware::parse_initramfs(&buf))
        } else {
            Err("ramdisk outside memory")
        };
        match parsed {
            Ok(info) => {
                let l = format!(
                    "Freeing initrd memory: {}k freed ({} entries)",
                    size >> 10,
                    info.entries
                );
                self.printk(hw, 6, &l);
            }
            Err(why) => {
                let l = format!("Initramfs unpacking failed: {why}");
                self.printk(hw, 0, &l);
                self.panic(hw, "VFS: Unable to mount root fs on unknown-block(0,0)");
            }
        }
    }

    fn start_card_driver<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>) {
        match CardDevice::init(&hw.mmio, &hw.phys) {
            Ok(mut dev) => {
                let l = format!("mic_card: device page at {:#x}, bootparam magic ok", dev.dp());
                self.printk(hw, 6, &l);
                let ifcfg = boot::ifcfg(&self.info.cmdline).ok().flatten();
                let mut v = Virtio::new(self.id, self.ack, ifcfg);
                v.scan(hw, &mut dev, Instant::now());
                self.dev = Some(dev);
                self.virtio = Some(v);
                self.settle(hw);
            }
            Err(e) => {
                let l = format!("mic_card: cannot start: {e}");
                self.printk(hw, 3, &l);
            }
        }
    }

    /// A host→card doorbell rang. Returns true when it was the shutdown
    /// request, after which the caller schedules [`CardOs::finish_poweroff`].
    pub fn doorbell<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>, db: u8) -> bool {
        let Some(dev) = &mut self.dev else { return false };
        let up = matches!(self.phase, Phase::Running | Phase::Booting(_));
        // While shutting down the devices still complete (console output
        // draining, reset handshakes); a second shutdown request is moot.
        if !up && !matches!(self.phase, Phase::ShuttingDown(_)) {
            return false;
        }
        if up && dev.shutdown_db() == db && dev.shutdown_requested(&hw.phys).unwrap_or(false) {
            self.printk(hw, 5, "mic_card: shutdown requested by host");
            self.printk(
                hw,
                6,
                "systemd-shutdown: Sending SIGTERM to remaining processes...",
            );
            return true;
        }
        if let Some(v) = &mut self.virtio {
            v.doorbell(hw, dev, db, Instant::now());
            self.settle(hw);
        }
        false
    }

    /// One of the card OS's own timers fired.
    pub fn timer<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>, which: OsTimer) {
        let now = Instant::now();
        if self.armed[which.slot()].is_some_and(|t| t <= now) {
            self.armed[which.slot()] = None;
        }
        if !matches!(
            self.phase,
            Phase::Running | Phase::Booting(_) | Phase::ShuttingDown(_)
        ) {
            return;
        }
        let (Some(v), Some(dev)) = (&mut self.virtio, &mut self.dev) else {
            return;
        };
        match which {
            OsTimer::Virtio => v.timer(hw, dev, now),
            OsTimer::Net => {
                for index in v.nets() {
                    v.with_net(hw, dev, virtio::Which::Index(index), now, net::Net::poll);
                }
            }
        }
        self.settle(hw);
    }

    /// Timers the OS asked for since the last call: (delay, which).
    pub fn take_wakeups(&mut self) -> Vec<(Duration, OsTimer)> {
        std::mem::take(&mut self.wakeups)
    }

    /// Asks for `which` to fire after `after`, unless it fires sooner anyway.
    fn arm(&mut self, which: OsTimer, after: Duration) {
        let at = Instant::now() + after;
        let slot = &mut self.armed[which.slot()];
        if slot.is_some_and(|t| t <= at) {
            return;
        }
        *slot = Some(at);
        self.wakeups.push((after, which));
    }

    /// The orderly power-off the host asked for completes.
    pub fn finish_poweroff<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>) {
        self.shut_down(hw, MicStatus::PowerOff);
    }

    /// The OS halts, powers off or restarts by itself: the consoles' last
    /// output goes out, every virtio device is removed (each wait bounded
    /// by the handshake budget), then the host is told.
    pub fn shut_down<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>, how: MicStatus) {
        self.begin_shutdown(how);
        self.settle(hw);
    }

    fn begin_shutdown(&mut self, how: MicStatus) {
        if matches!(self.phase, Phase::ShuttingDown(_) | Phase::Down | Phase::Off) {
            return;
        }
        self.phase = Phase::ShuttingDown(how);
        self.removing = false;
        self.drain_until = Some(Instant::now() + Duration::from_millis(self.ack.budget_ms));
    }

    /// Reports the shutdown once no device is left.
    fn complete_shutdown<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>, how: MicStatus) {
        let line = match how {
            MicStatus::Halted => "reboot: System halted",
            MicStatus::Restart => "reboot: Restarting system",
            _ => "reboot: Power down",
        };
        self.printk(hw, 0, line);
        if let Some(dev) = &self.dev {
            // The card has nobody to tell if its report cannot be written.
            let _ = dev.report_shutdown(&hw.mmio, &hw.phys, how);
        }
        self.phase = Phase::Down;
    }

    /// The card kernel panics and tells the host (if its driver is up). The
    /// virtio devices are left as they are.
    pub fn panic<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>, msg: &str) {
        let l = format!("Kernel panic - not syncing: {msg}");
        self.printk(hw, 0, &l);
        self.printk(hw, 4, "CPU: 0 PID: 1 Comm: init Not tainted 3.10.0-micemu #1");
        let l = format!("---[ end Kernel panic - not syncing: {msg}");
        self.printk(hw, 0, &l);
        if let Some(dev) = &self.dev {
            let _ = dev.report_panic(&hw.mmio, &hw.phys);
        }
        self.phase = Phase::Down;
    }

    /// A hostile card: an arbitrary byte as shutdown status, and the
    /// host's shutdown doorbell rung.
    pub fn report_raw_status<M: Mmio, P: Memory>(
        &mut self,
        hw: &CardHw<M, P>,
        status: u8,
    ) -> Result<(), crate::faults::InjectError> {
        use crate::faults::InjectError;
        let dev = self.dev.as_ref().ok_or(InjectError::DriverNotUp)?;
        let err = InjectError::DevicePage;
        devpage::write_u8_at(&hw.phys, dev.dp(), abi::BP_SHUTDOWN_STATUS, status).map_err(err)?;
        let db = devpage::read_u8_at(&hw.phys, dev.dp(), abi::BP_C2H_SHUTDOWN_DB).map_err(err)?;
        mic_core::card::send_host_intr(&hw.mmio, db as i8);
        Ok(())
    }

    /// Whether an OS is there to act on a request from inside the card.
    #[must_use]
    pub fn alive(&self) -> bool {
        matches!(self.phase, Phase::Booting(_) | Phase::Running | Phase::Hung) && self.ring.is_some()
    }

    /// Scribbles over part of the log buffer (fault injection).
    pub fn garbage_log<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>) {
        let base = LOG_BUF_VA - START_KERNEL_MAP;
        let len = u64::from(self.log_buf_len);
        let start = self.next_rand() % len;
        let n = (self.next_rand() % 512 + 16).min(len - start);
        let bytes: Vec<u8> = (0..n).map(|_| self.next_rand() as u8).collect();
        let _ = hw.phys.write(base + start, &bytes);
    }

    fn next_rand(&mut self) -> u64 {
        xorshift(&mut self.rng)
    }

    /// A hostile card's act on one of its virtio devices (fault injection).
    pub fn hostile<M: Mmio, P: Memory>(
        &mut self,
        hw: &CardHw<M, P>,
        f: &crate::faults::VirtioFault,
    ) -> Result<(), crate::faults::InjectError> {
        let (Some(v), Some(dev)) = (&mut self.virtio, &mut self.dev) else {
            return Err(crate::faults::InjectError::DriverNotUp);
        };
        let rng = &mut self.rng;
        v.hostile(hw, dev, f, &mut || xorshift(rng), Instant::now())
            .map_err(|why| crate::faults::InjectError::Virtio { card: self.id, why })?;
        self.settle(hw);
        Ok(())
    }
}

/// One step of the card's xorshift generator (garbage for fault injection).
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}
