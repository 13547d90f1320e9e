//! The emulated fleet: per-card hardware, the host driver instance that the
//! kernel would run, the card OS, and the one event loop that drives time.
//!
//! Threads: FUSE workers call into [`Emulator`] for sysfs reads and writes;
//! the event loop thread owns all timing (reset, boot steps, the host
//! driver's reset polls) and every hardware interrupt. Each card is one
//! mutex; hardware side effects are queued as messages, never handled
//! re-entrantly, so no lock is ever taken twice. When nothing is scheduled
//! the loop blocks: an idle fleet costs no CPU.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use mic_core::abi::{BootMode, MicState, MicStatus};
use mic_core::host::{BootError, BootParams, HostDevice, ResetPoll, ResetSeq, ResetStart};
use mic_core::hw::Memory;
use mic_core::regs;

use crate::cardos::{self, CardHw, CardOs, Phase};
use crate::config::{Config, PciId, Timing};
use crate::control::{self, Fault};
use crate::firmware::FirmwareDir;
use crate::fs::{Backend, Errno, FileSpec, PollHub, Tree, WriteDone};
use crate::hw::{CardPhys, Gddr, HostRam, HwEvent, MmioView, RegFile, Side};
use crate::sysfs;
use mic_core::host::sysfs::kernel_vaddr_to_aperture;

/// Bus address of the host RAM the host driver allocates for each card's
/// device page (as if from the host's DMA allocator): card N gets its own
/// page in a region above 16 GiB, so the SMPT translation is exercised.
const HOST_RAM_BASE: u64 = 0x4_5a6f_0000;
const HOST_RAM_LEN: usize = 4096;

/// Bootstrap's boot address (SPAD2 bits 31:12) after reset: 64 MiB.
const BOOT_ADDR: u32 = 64 << 20;

/// Messages to the event loop.
#[derive(Debug)]
enum Msg {
    Hw(u32, HwEvent),
    At(Instant, u32, Timer),
    Stop,
}

/// Things that happen later. Each carries the hardware generation it was
/// scheduled in; a reset makes older timers void.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The card finished its reset and the bootstrap is ready.
    HwResetDone { epoch: u64 },
    /// The host driver's next look at SPAD2 while resetting.
    HostResetPoll { epoch: u64 },
    /// The card OS's next boot step.
    BootStep { epoch: u64 },
    /// The card OS finishes an orderly power-off.
    Poweroff { epoch: u64 },
}

/// A reset the host driver is running, and what waits for it.
#[derive(Debug)]
struct ResetProgress {
    seq: ResetSeq,
    started: Instant,
    /// A `boot` write that needed the reset first (the original resets a
    /// card whose bootstrap is not ready inside the boot request).
    boot: Option<WriteDone>,
}

/// The host-side sysfs attributes the driver only stores.
#[derive(Debug, Default)]
pub struct Attrs {
    pub cmdline: Option<String>,
    pub firmware: Option<String>,
    pub ramdisk: Option<String>,
    pub bootmode: Option<String>,
    pub log_buf_addr: u64,
    pub log_buf_len: u64,
}

/// Everything of one card behind its mutex.
#[derive(Debug)]
pub struct CardState {
    pub host: HostDevice,
    pub attrs: Attrs,
    os: CardOs,
    reset: Option<ResetProgress>,
    /// Hardware generation: bumped by every reset.
    epoch: u64,
    fail_next_reset: bool,
    /// When the state last changed (for tools showing time in state).
    pub since: Instant,
}

/// One emulated card: hardware plus the state machines.
#[derive(Debug)]
pub struct Card {
    pub id: u32,
    pub pci: PciId,
    pub regs: RegFile,
    pub gddr: Gddr,
    pub host_ram: HostRam,
    state: Mutex<CardState>,
}

impl Card {
    pub fn lock(&self) -> MutexGuard<'_, CardState> {
        // A panic while holding a card lock is a bug; keep serving the
        // other cards and this one's last consistent state.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The card's own view of its hardware, for the card OS.
    fn card_hw(&self, memory: u64) -> CardHw<MmioView<'_>, CardPhys<'_>> {
        CardHw {
            mmio: self.regs.view(Side::Card),
            phys: CardPhys {
                gddr: &self.gddr,
                host: &self.host_ram,
                regs: &self.regs,
            },
            memory,
        }
    }
}

/// The emulated fleet.
#[derive(Debug)]
pub struct Emulator {
    pub config: Config,
    pub cards: Vec<Card>,
    pub firmware: FirmwareDir,
    hub: Arc<PollHub>,
    tx: Sender<Msg>,
}

/// Handle that stops the event loop when dropped.
#[derive(Debug)]
pub struct Running {
    pub emu: Arc<Emulator>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.emu.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Emulator {
    /// Builds the fleet (cards powered on, bootstrap ready, host driver
    /// probed) and starts its event loop.
    pub fn start(config: Config, firmware: FirmwareDir, hub: Arc<PollHub>) -> std::io::Result<Running> {
        let (tx, rx) = mpsc::channel();
        let mut cards = Vec::with_capacity(config.cards as usize);
        for id in 0..config.cards {
            let sink = tx.clone();
            let regs = RegFile::new(id, move |card, ev| {
                let _ = sink.send(Msg::Hw(card, ev));
            });
            let gddr = Gddr::new(id, config.memory)?;
            let host_ram = HostRam::new(HOST_RAM_BASE + u64::from(id) * 0x1000, HOST_RAM_LEN);
            // Power-on: the bootstrap has run and waits for a download.
            regs.set(regs::spad(regs::SPAD_DOWNLOAD_INFO), spad2_ready(id));
            regs.set(regs::POSTCODE, cardos::post_code_value(cardos::post::READY));
            let mut host = HostDevice::probe(&regs.view(Side::Host), &host_ram, host_ram.dma_base())
                .map_err(|e| std::io::Error::other(format!("mic{id}: probe failed: {e}")))?;
            host.set_reset_timing(reset_timing(config.timing));
            cards.push(Card {
                id,
                pci: config.pci_of(id),
                regs,
                gddr,
                host_ram,
                state: Mutex::new(CardState {
                    host,
                    attrs: Attrs::default(),
                    os: CardOs::new(id, config.log_buf_len),
                    reset: None,
                    epoch: 0,
                    fail_next_reset: false,
                    since: Instant::now(),
                }),
            });
        }
        let emu = Arc::new(Emulator {
            config,
            cards,
            firmware,
            hub,
            tx,
        });
        let looper = Arc::clone(&emu);
        let thread = thread::Builder::new()
            .name("micemu-events".into())
            .spawn(move || looper.event_loop(&rx))?;
        Ok(Running {
            emu,
            thread: Some(thread),
        })
    }

    fn card(&self, id: u32) -> Option<&Card> {
        self.cards.get(id as usize)
    }

    fn timing(&self) -> Timing {
        self.config.timing
    }

    fn schedule(&self, after: Duration, card: u32, t: Timer) {
        let _ = self.tx.send(Msg::At(Instant::now() + after, card, t));
    }

    /// sysfs_notify on `state`, and bookkeeping of the time in state.
    fn state_changed(&self, card: u32, st: &mut CardState) {
        st.since = Instant::now();
        self.hub.notify(card, Tree::Sysfs, "state");
    }

    fn event_loop(&self, rx: &Receiver<Msg>) {
        let mut timers: BinaryHeap<Reverse<(Instant, u32, Timer)>> = BinaryHeap::new();
        loop {
            let msg = match timers.peek() {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(Reverse((at, _, _))) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            };
            match msg {
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Msg::Hw(card, ev)) => self.on_hw(card, ev),
                Ok(Msg::At(at, card, t)) => timers.push(Reverse((at, card, t))),
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            while let Some(Reverse((at, card, t))) = timers.peek().copied() {
                if at > now {
                    break;
                }
                timers.pop();
                self.on_timer(card, t);
            }
        }
    }

    fn on_hw(&self, id: u32, ev: HwEvent) {
        let Some(card) = self.card(id) else { return };
        let mut st = card.lock();
        let hw = card.card_hw(self.config.memory);
        match ev {
            HwEvent::Reset => {
                st.epoch += 1;
                st.os.power_cycle();
                // The bootstrap initialises GDDR before it reports ready:
                // no log of the previous OS can be mistaken for the next's.
                if let Err(e) = card.gddr.scrub() {
                    log::warn!("mic{id}: scrubbing GDDR: {e}");
                }
                card.regs
                    .set(regs::POSTCODE, cardos::post_code_value(cardos::post::RESET));
                if st.fail_next_reset {
                    st.fail_next_reset = false;
                } else {
                    self.schedule(self.timing().reset, id, Timer::HwResetDone { epoch: st.epoch });
                }
            }
            HwEvent::Bootstrap => {
                if let Some(next) = st.os.bootstrap(&hw, self.timing().boot) {
                    self.schedule(next, id, Timer::BootStep { epoch: st.epoch });
                }
            }
            HwEvent::CardDoorbell(db) => {
                if st.os.doorbell(&hw, db) {
                    self.schedule(self.timing().boot / 10, id, Timer::Poweroff { epoch: st.epoch });
                }
            }
            HwEvent::HostDoorbell(_) => {
                // The host driver's interrupt handler: ack the causes, then
                // the shutdown doorbell's bottom half.
                let host_mmio = card.regs.view(Side::Host);
                let causes = mic_core::host::ack_interrupt(&host_mmio);
                if causes & (1 << st.host.c2h_shutdown_db()) != 0 {
                    // A status byte outside the enum is the card's garbage:
                    // ignored, as the original ignores unknown values.
                    if let Ok(Some(report)) = st.host.handle_shutdown_interrupt(&card.host_ram) {
                        self.hub.notify(id, Tree::Sysfs, "shutdown_status");
                        if report.transition.is_some() {
                            self.state_changed(id, &mut st);
                        }
                    }
                }
            }
        }
    }

    fn on_timer(&self, id: u32, t: Timer) {
        let Some(card) = self.card(id) else { return };
        let mut st = card.lock();
        let hw = card.card_hw(self.config.memory);
        match t {
            Timer::HwResetDone { epoch } if epoch == st.epoch => {
                card.regs
                    .set(regs::spad(regs::SPAD_DOWNLOAD_INFO), spad2_ready(id));
                card.regs
                    .set(regs::POSTCODE, cardos::post_code_value(cardos::post::READY));
            }
            Timer::BootStep { epoch } if epoch == st.epoch => {
                let next = st.os.step(&hw, self.timing().boot);
                if matches!(st.os.phase(), Phase::Booting(_)) {
                    self.schedule(next, id, Timer::BootStep { epoch });
                }
            }
            Timer::Poweroff { epoch } if epoch == st.epoch => st.os.finish_poweroff(&hw),
            Timer::HostResetPoll { .. } => self.poll_reset(card, &mut st),
            _ => {}
        }
    }

    /// One step of the host driver's reset sequence.
    fn poll_reset(&self, card: &Card, st: &mut CardState) {
        let Some(progress) = &mut st.reset else { return };
        let host_mmio = card.regs.view(Side::Host);
        let elapsed = progress.started.elapsed();
        match progress.seq.poll(&host_mmio, duration_ms(elapsed)) {
            ResetPoll::Wait { ms } => {
                self.schedule(
                    Duration::from_millis(ms),
                    card.id,
                    Timer::HostResetPoll { epoch: st.epoch },
                );
            }
            outcome @ (ResetPoll::Ready | ResetPoll::Failed) => {
                let ok = outcome == ResetPoll::Ready;
                let progress = st.reset.take();
                if st.host.finish_reset(ok).is_some() {
                    self.state_changed(card.id, st);
                }
                if let Some(done) = progress.and_then(|p| p.boot) {
                    if ok {
                        self.boot(card, st, done);
                    } else {
                        done.err(libc::EINVAL);
                    }
                }
            }
        }
    }

    /// Starts the host driver's reset sequence (the `reset` write, or a boot
    /// that found the bootstrap not ready).
    fn begin_reset(&self, card: &Card, st: &mut CardState, force: bool, boot: Option<WriteDone>) {
        let host_mmio = card.regs.view(Side::Host);
        match st.host.begin_reset(&host_mmio, &card.host_ram, force) {
            Ok(ResetStart::Started(seq)) => {
                st.reset = Some(ResetProgress {
                    seq,
                    started: Instant::now(),
                    boot,
                });
                self.schedule(
                    self.timing().reset_settle,
                    card.id,
                    Timer::HostResetPoll { epoch: st.epoch },
                );
            }
            Ok(ResetStart::AlreadyOffline | ResetStart::InProgress) => {
                if let Some(done) = boot {
                    done.err(libc::EINVAL);
                }
            }
            Err(e) => {
                if let Some(done) = boot {
                    done.err(e.errno());
                }
            }
        }
    }

    /// The `boot` state write: load and start, or reset first when the
    /// bootstrap is not ready (the reply then waits for the reset).
    fn boot(&self, card: &Card, st: &mut CardState, done: WriteDone) {
        match self.boot_now(card, st) {
            Ok(()) => done.ok(),
            Err(Some(e)) => done.err(e),
            Err(None) => self.begin_reset(card, st, true, Some(done)),
        }
    }

    /// Loads and starts the card. `Err(None)`: the bootstrap is not ready.
    fn boot_now(&self, card: &Card, st: &mut CardState) -> Result<(), Option<Errno>> {
        let mode = match st.attrs.bootmode.as_deref() {
            Some(m) => BootMode::from_sysfs(m).ok_or(Some(libc::EINVAL))?,
            None => return Err(Some(libc::EINVAL)),
        };
        let fw_name = st.attrs.firmware.clone().ok_or(Some(libc::EINVAL))?;
        let image = self.firmware.load(&fw_name).map_err(|e| Some(e.errno()))?;
        let ramdisk = match (&st.attrs.ramdisk, mode) {
            (Some(name), BootMode::Linux) => Some(self.firmware.load(name).map_err(|e| Some(e.errno()))?),
            _ => None,
        };
        let params = BootParams {
            mode,
            image: &image,
            ramdisk: ramdisk.as_deref(),
            cmdline: st.attrs.cmdline.as_deref(),
        };
        let host_mmio = card.regs.view(Side::Host);
        match st.host.start(&host_mmio, &card.gddr, &card.host_ram, &params) {
            Ok(_) => {
                self.state_changed(card.id, st);
                Ok(())
            }
            Err(BootError::FirmwareNotReady) => Err(None),
            Err(e) => Err(Some(e.errno())),
        }
    }

    /// `echo boot|reset|shutdown > state`.
    fn write_state(&self, card: &Card, word: &str, done: WriteDone) {
        let mut st = card.lock();
        match word {
            "boot" => {
                if st.host.state() != MicState::Offline || st.reset.is_some() {
                    return done.err(libc::EINVAL);
                }
                self.boot(card, &mut st, done);
            }
            "reset" => {
                // Returns at once; the reset runs in the background. A card
                // that is already offline is left alone.
                self.begin_reset(card, &mut st, false, None);
                done.ok();
            }
            "shutdown" => {
                let host_mmio = card.regs.view(Side::Host);
                match st.host.request_shutdown(&host_mmio, &card.host_ram) {
                    Ok(Some(_)) => {
                        self.state_changed(card.id, &mut st);
                        done.ok();
                    }
                    Ok(None) => done.ok(),
                    Err(e) => done.err(e.errno()),
                }
            }
            _ => done.err(libc::EINVAL),
        }
    }

    /// debugfs `soft_reset`: reading it force-resets the card.
    fn soft_reset(&self, card: &Card) {
        let mut st = card.lock();
        self.begin_reset(card, &mut st, true, None);
    }

    /// debugfs `log_buf`: the raw card log buffer, found through the
    /// addresses user space wrote into log_buf_addr/log_buf_len. The length
    /// lives in card memory and is card-controlled: it is bounded.
    fn read_log_buf(card: &Card) -> Vec<u8> {
        const MAX_LOG_BUF: u64 = 16 << 20;
        let st = card.lock();
        let (addr, len_addr) = (st.attrs.log_buf_addr, st.attrs.log_buf_len);
        if addr == 0 || len_addr == 0 || !matches!(st.host.state(), MicState::Online | MicState::ShuttingDown)
        {
            return Vec::new();
        }
        let (Some(off), Some(len_off)) = (kernel_vaddr_to_aperture(addr), kernel_vaddr_to_aperture(len_addr))
        else {
            return Vec::new();
        };
        let Ok(len) = card.gddr.read_u32(len_off) else {
            return Vec::new();
        };
        let len = u64::from(len).min(MAX_LOG_BUF);
        let mut buf = vec![0u8; len as usize];
        if card.gddr.read(off, &mut buf).is_err() {
            return Vec::new();
        }
        buf
    }

    /// Applies a fault from the control socket.
    pub fn inject(&self, id: u32, fault: &Fault) -> Result<(), String> {
        let card = self.card(id).ok_or_else(|| format!("no card mic{id}"))?;
        let mut st = card.lock();
        let hw = card.card_hw(self.config.memory);
        let need_os = |st: &CardState| {
            if st.os.alive() {
                Ok(())
            } else {
                Err(format!(
                    "mic{id}: no card OS is running (state {})",
                    st.host.state().as_str()
                ))
            }
        };
        match fault {
            Fault::FailReset => st.fail_next_reset = true,
            Fault::HangBoot => st.os.arm_hang(),
            Fault::Panic(msg) => {
                need_os(&st)?;
                st.os.panic(&hw, msg);
            }
            Fault::Halt | Fault::Poweroff | Fault::Reboot => {
                need_os(&st)?;
                let how = match fault {
                    Fault::Halt => MicStatus::Halted,
                    Fault::Poweroff => MicStatus::PowerOff,
                    _ => MicStatus::Restart,
                };
                st.os.shut_down(&hw, how);
            }
            Fault::GarbageLog => {
                need_os(&st)?;
                st.os.garbage_log(&hw);
            }
            Fault::Log { level, text } => {
                need_os(&st)?;
                st.os.printk(&hw, *level, text);
            }
            Fault::BadStatus(v) => {
                need_os(&st)?;
                st.os.report_raw_status(&hw, *v)?;
            }
        }
        Ok(())
    }
}

impl control::Handler for Emulator {
    fn inject(&self, card: &str, fault: Fault) -> Result<(), String> {
        let id = card
            .strip_prefix("mic")
            .unwrap_or(card)
            .parse::<u32>()
            .map_err(|_| format!("{card:?} is not a card name (mic0, mic1, ...)"))?;
        Emulator::inject(self, id, &fault)
    }
}

impl Backend for Emulator {
    fn card_count(&self) -> u32 {
        self.config.cards
    }

    fn files(&self, tree: Tree) -> &'static [FileSpec] {
        match tree {
            Tree::Sysfs => sysfs::SYSFS_FILES,
            Tree::Debugfs => sysfs::DEBUGFS_FILES,
        }
    }

    fn read(&self, id: u32, tree: Tree, name: &str) -> Result<Vec<u8>, Errno> {
        let card = self.card(id).ok_or(libc::ENODEV)?;
        match (tree, name) {
            (Tree::Debugfs, "log_buf") => Ok(Self::read_log_buf(card)),
            (Tree::Debugfs, "soft_reset") => {
                self.soft_reset(card);
                Ok(Vec::new())
            }
            _ => sysfs::show(card, &card.lock(), tree, name),
        }
    }

    fn write(&self, id: u32, tree: Tree, name: &str, data: &[u8], done: WriteDone) {
        let Some(card) = self.card(id) else {
            return done.err(libc::ENODEV);
        };
        if tree == Tree::Sysfs && name == "state" {
            let Ok(text) = std::str::from_utf8(data) else {
                return done.err(libc::EINVAL);
            };
            return self.write_state(card, text.strip_suffix('\n').unwrap_or(text), done);
        }
        let mut st = card.lock();
        match sysfs::store(&mut st.attrs, tree, name, data) {
            Ok(()) => done.ok(),
            Err(e) => done.err(e),
        }
    }
}

/// SPAD2 as the bootstrap writes it when ready: boot address, APIC ID, ready.
fn spad2_ready(card: u32) -> u32 {
    regs::spad2_encode(true, (card % 64) * 4, BOOT_ADDR)
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn reset_timing(t: Timing) -> mic_core::host::ResetTiming {
    mic_core::host::ResetTiming {
        settle_ms: duration_ms(t.reset_settle),
        period_ms: duration_ms(t.reset_poll),
        budget_ms: duration_ms(t.reset_budget),
    }
}
