//! The emulated fleet and the host driver operations the kernel would run
//! for it: boot, reset, shutdown, the debugfs actions.
//!
//! Threads: FUSE workers call into [`Emulator`] for sysfs reads and writes;
//! the event loop thread ([`crate::events`]) owns all timing and every
//! hardware interrupt. Each card is one mutex ([`Card::lock`]); an idle
//! fleet costs no CPU.

use std::sync::Arc;
use std::sync::mpsc::{self, Sender};
use std::thread;
use std::time::Instant;

use mic_core::abi::{BootMode, MicState};
use mic_core::host::sysfs::{StateRequest, kernel_vaddr_to_aperture};
use mic_core::host::{BootError, BootParams, HostDevice, ResetStart};
use mic_core::hw::Memory;
use mic_core::{post, regs};

use crate::card::{Card, CardState, ResetProgress};
use crate::cardos::CardOs;
use crate::config::{Config, Timing};
use crate::events::{Msg, Timer};
use crate::firmware::FirmwareDir;
use crate::fs::{Errno, PollHub, Tree, WriteDone};
use crate::hw::{Gddr, HostRam, RegFile, Side};

/// Bus address of the host RAM the host driver allocates for each card's
/// device page (as if from the host's DMA allocator): card N gets its own
/// page in a region above 16 GiB, so the SMPT translation is exercised.
const HOST_RAM_BASE: u64 = 0x4_5a6f_0000;
/// Host RAM per card: the device page, then room for the virtio rings of
/// every device a device page can hold.
pub(crate) const HOST_RAM_LEN: u64 = 4 << 20;

/// Bootstrap's boot address (SPAD2 bits 31:12) after reset: 64 MiB.
const BOOT_ADDR: u32 = crate::cardos::memmap::BOOT_ADDR as u32;

/// The card log length is card-controlled; the host reads at most this.
const MAX_LOG_BUF: u64 = 16 << 20;

/// The emulated fleet.
#[derive(Debug)]
pub struct Emulator {
    pub config: Config,
    pub cards: Vec<Card>,
    pub firmware: FirmwareDir,
    pub(crate) hub: Arc<PollHub>,
    pub(crate) tx: Sender<Msg>,
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
        config.validate().map_err(std::io::Error::other)?;
        let (tx, rx) = mpsc::channel();
        let mut cards = Vec::with_capacity(config.cards as usize);
        for id in 0..config.cards {
            let sink = tx.clone();
            let regs = RegFile::new(id, move |card, ev| crate::events::raise(&sink, card, ev));
            let gddr = Gddr::new(id, config.memory)?;
            let host_ram = HostRam::new(id, HOST_RAM_BASE + u64::from(id) * HOST_RAM_LEN, HOST_RAM_LEN)?;
            // Power-on: the bootstrap has run and waits for a download.
            regs.set(regs::spad(regs::SPAD_DOWNLOAD_INFO), spad2_ready(id));
            regs.set(regs::POSTCODE, post::register_value(post::READY));
            let mut host = HostDevice::probe(&regs.view(Side::Host), &host_ram, host_ram.dma_base())
                .map_err(|e| std::io::Error::other(format!("mic{id}: probe failed: {e}")))?;
            host.set_reset_timing(config.timing.reset_timing());
            let st = CardState::new(
                host,
                CardOs::new(id, config.log_buf_len, config.timing.ack()),
                HOST_RAM_LEN,
            );
            cards.push(Card::new(id, config.pci_of(id), regs, gddr, host_ram, st));
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

    pub(crate) fn card(&self, id: u32) -> Option<&Card> {
        self.cards.get(id as usize)
    }

    /// Card `id`'s hardware as the card sees it (its registers, and its
    /// physical space: GDDR and host RAM through the SMPT), for tests and
    /// benchmarks that play the card's driver themselves.
    #[must_use]
    pub fn card_hw(
        &self,
        id: u32,
    ) -> Option<crate::cardos::CardHw<crate::hw::MmioView<'_>, crate::hw::CardPhys<'_>>> {
        self.card(id).map(|c| c.card_hw(self.config.memory))
    }

    pub(crate) fn timing(&self) -> Timing {
        self.config.timing
    }

    /// sysfs_notify on `state`, and bookkeeping of the time in state.
    pub(crate) fn state_changed(&self, card: u32, st: &mut CardState) {
        st.since = Instant::now();
        self.hub.notify(card, Tree::Sysfs, "state");
    }

    /// Starts the host driver's reset sequence (the `reset` write, or a boot
    /// that found the bootstrap not ready).
    fn begin_reset(&self, card: &Card, st: &mut CardState, force: bool, boot: Option<WriteDone>) {
        match st.host.begin_reset(&card.host_mmio(), &card.host_ram, force) {
            Ok(ResetStart::Started(seq)) => {
                // mic_stop: every virtio device is reset with the card.
                crate::dev::reset_all(card, &st.vdevs);
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
    pub(crate) fn boot(&self, card: &Card, st: &mut CardState, done: WriteDone) {
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
        match st
            .host
            .start(&card.host_mmio(), &card.gddr, &card.host_ram, &params)
        {
            Ok(_) => {
                self.state_changed(card.id, st);
                Ok(())
            }
            Err(BootError::FirmwareNotReady) => Err(None),
            Err(e) => Err(Some(e.errno())),
        }
    }

    /// `echo boot|reset|shutdown > state`.
    pub(crate) fn write_state(&self, card: &Card, req: StateRequest, done: WriteDone) {
        let mut st = card.lock();
        match req {
            StateRequest::Boot => {
                if st.host.state() != MicState::Offline || st.reset.is_some() {
                    return done.err(libc::EINVAL);
                }
                self.boot(card, &mut st, done);
            }
            StateRequest::Reset => {
                // Returns at once; the reset runs in the background. A card
                // that is already offline is left alone.
                self.begin_reset(card, &mut st, false, None);
                done.ok();
            }
            StateRequest::Shutdown => match st.host.request_shutdown(&card.host_mmio(), &card.host_ram) {
                Ok(Some(_)) => {
                    self.state_changed(card.id, &mut st);
                    done.ok();
                }
                Ok(None) => done.ok(),
                Err(e) => done.err(e.errno()),
            },
        }
    }

    /// debugfs `soft_reset`: reading it force-resets the card.
    pub(crate) fn soft_reset(&self, card: &Card) {
        let mut st = card.lock();
        self.begin_reset(card, &mut st, true, None);
    }

    /// debugfs `log_buf`: the raw card log buffer, found through the
    /// addresses user space wrote into log_buf_addr/log_buf_len. The length
    /// lives in card memory and is card-controlled: it is bounded.
    pub(crate) fn read_log_buf(card: &Card) -> Vec<u8> {
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
}

/// SPAD2 as the bootstrap writes it when ready: boot address, APIC ID, ready.
pub(crate) fn spad2_ready(card: u32) -> u32 {
    regs::spad2_encode(true, (card % 64) * 4, BOOT_ADDR)
}
