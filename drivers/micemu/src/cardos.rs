//! The card OS model: what runs on the card after the bootstrap hands over.
//!
//! It boots only from what the host driver put in GDDR (the image at the
//! boot address, the command line after it, the ramdisk where boot_params
//! points), and checks all of it as a suspicious kernel would. It runs the
//! card half of the driver core (device-page discovery, doorbells, shutdown
//! and panic reporting) and writes its kernel log as 3.10 printk records into
//! `__log_buf` in card memory, step by step as a real boot does.

use std::time::{Duration, Instant};

use mic_core::card::CardDevice;
use mic_core::hw::{Memory, Mmio};
use mic_core::printk::LogRing;
use mic_core::regs;
use mic_core::{abi, bzimage, devpage, post};

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
    /// The OS has halted, powered off, rebooted or panicked and reported it.
    Down,
}

/// Number of boot steps; step k runs at k/(STEPS-1) of the boot duration.
pub const BOOT_STEPS: u32 = 8;

/// The line that says the card OS is up (the last boot record): what the
/// tools look for.
pub const BOOT_COMPLETE: &str = mic_core::card::OS_UP_MARKER;

/// Hardware the card OS runs on.
#[derive(Debug)]
pub struct CardHw<M: Mmio, P: Memory> {
    pub mmio: M,
    /// The card's physical address space (GDDR + SMPT window).
    pub phys: P,
    /// GDDR size in bytes.
    pub memory: u64,
}

/// What the boot learned from the host.
#[derive(Debug, Clone, Default)]
struct BootInfo {
    cmdline: String,
    image_size: u64,
    ramdisk: Option<(u64, u64)>,
    version: String,
}

/// The card's OS.
#[derive(Debug)]
pub struct CardOs {
    id: u32,
    log_buf_len: u32,
    phase: Phase,
    started: Instant,
    ring: Option<LogRing>,
    dev: Option<CardDevice>,
    info: BootInfo,
    hang_next_boot: bool,
    rng: u64,
}

impl CardOs {
    #[must_use]
    pub fn new(id: u32, log_buf_len: u32) -> Self {
        Self {
            id,
            log_buf_len,
            phase: Phase::Off,
            started: Instant::now(),
            ring: None,
            dev: None,
            info: BootInfo::default(),
            hang_next_boot: false,
            rng: 0x9E37_79B9_7F4A_7C15 ^ u64::from(id),
        }
    }

    #[must_use]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The hardware was reset: whatever ran is gone.
    pub fn power_cycle(&mut self) {
        self.phase = Phase::Off;
        self.ring = None;
        self.dev = None;
        self.info = BootInfo::default();
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
        let Ok(info) = load(hw) else {
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
}

/// Checks the image, command line and ramdisk the host placed in GDDR.
fn load<M: Mmio, P: Memory>(hw: &CardHw<M, P>) -> Result<BootInfo, &'static str> {
    let boot_addr = regs::spad2_boot_addr(hw.mmio.read32(regs::spad(regs::SPAD_DOWNLOAD_INFO)));
    let image_size = u64::from(hw.mmio.read32(regs::spad(regs::SPAD_IMAGE_SIZE)));
    if image_size < 0x1000 || !mic_core::hw::in_bounds(boot_addr, image_size, hw.memory) {
        return Err("image size out of range");
    }
    let header = bzimage::read_header(&hw.phys, boot_addr).map_err(|_| "not a bzImage")?;
    let version = (header.kernel_version != 0)
        .then(|| {
            let at = boot_addr + bzimage::KERNEL_VERSION_BASE as u64 + u64::from(header.kernel_version);
            read_cstr(&hw.phys, at, 256)
        })
        .flatten()
        .unwrap_or_else(|| "unknown".to_owned());
    let cmdline = read_cstr(&hw.phys, boot_addr + image_size, 2048).unwrap_or_default();
    let ramdisk = (header.ramdisk_size != 0)
        .then_some((u64::from(header.ramdisk_image), u64::from(header.ramdisk_size)));
    Ok(BootInfo {
        cmdline: cmdline.trim().to_owned(),
        image_size,
        ramdisk,
        version,
    })
}

impl CardOs {
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
                let line = match ifcfg_address(&self.info.cmdline) {
                    Some(a) => format!("mic{}: link up, static address {a}", self.id),
                    None => format!("mic{}: link up, no static address on the command line", self.id),
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
            Ok(dev) => {
                let l = format!("mic_card: device page at {:#x}, bootparam magic ok", dev.dp());
                self.printk(hw, 6, &l);
                self.dev = Some(dev);
            }
            Err(e) => {
                let l = format!("mic_card: cannot start: {e:?}");
                self.printk(hw, 3, &l);
            }
        }
    }

    /// A host→card doorbell rang. Returns true when it was the shutdown
    /// request, after which the caller schedules [`CardOs::finish_poweroff`].
    pub fn doorbell<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>, db: u8) -> bool {
        let Some(dev) = &self.dev else { return false };
        if !matches!(self.phase, Phase::Running | Phase::Booting(_)) {
            return false;
        }
        if dev.shutdown_db() == db && dev.shutdown_requested(&hw.phys).unwrap_or(false) {
            self.printk(hw, 5, "mic_card: shutdown requested by host");
            self.printk(
                hw,
                6,
                "systemd-shutdown: Sending SIGTERM to remaining processes...",
            );
            return true;
        }
        false
    }

    /// The orderly power-off the host asked for completes.
    pub fn finish_poweroff<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>) {
        self.shut_down(hw, mic_core::abi::MicStatus::PowerOff);
    }

    /// The OS halts, powers off or restarts by itself and tells the host.
    pub fn shut_down<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>, how: mic_core::abi::MicStatus) {
        use mic_core::abi::MicStatus;
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

    /// The card kernel panics and tells the host (if its driver is up).
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
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

fn read_cstr(mem: &impl Memory, addr: u64, max: usize) -> Option<String> {
    let mut buf = vec![0u8; max];
    // Shrink the read until it fits (the string may sit near the end).
    let mut len = max;
    while len > 0 && mem.read(addr, &mut buf[..len]).is_err() {
        len /= 2;
    }
    let buf = &buf[..len];
    let end = buf.iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// The card address from `ifcfg=static;address,A;netmask,...` on a command
/// line: the same rule (the core's) as the host's `ipaddr` attribute.
#[must_use]
pub fn ifcfg_address(cmdline: &str) -> Option<std::net::Ipv4Addr> {
    mic_core::host::sysfs::ipaddr_from_cmdline(cmdline)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifcfg_address_is_parsed_from_the_mpssd_cmdline() {
        let c = "clocksource=tsc highres=off nohz=off cpufreq_on;corec6_off;pc3_off;pc6_off \
                 ifcfg=static;address,172.31.1.1;netmask,255.255.255.0";
        assert_eq!(ifcfg_address(c), Some("172.31.1.1".parse().unwrap()));
        assert_eq!(ifcfg_address("ifcfg=dhcp"), None);
        assert_eq!(ifcfg_address("ifcfg=static;address,999.1.1.1"), None);
        assert_eq!(ifcfg_address(""), None);
    }
}
