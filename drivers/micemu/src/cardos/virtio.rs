//! The card's virtio bus: what `mic_virtio.c` and the virtio core do on the
//! card, over the driver core's transport ([`CardVdev`]).
//!
//! At driver init and on every config doorbell the device page is walked:
//! a new descriptor is probed (a card doorbell, ACKNOWLEDGE, DRIVER, the
//! features this driver takes, its buffers and used rings in the GDDR
//! arena, find_vqs, then — once the host took the used rings — the driver
//! starts and the device goes DRIVER_OK); a known one is checked for a
//! config change (the driver's hook, then `guest_ack`) and for removal (the
//! reset handshake if it was started, then `guest_ack` and `type = -1`); a
//! device whose slot no longer holds it is dropped. Every wait is a poll the
//! event loop schedules ([`Virtio::next_wake`]), bounded by the handshake's
//! budget; no call blocks. Work per doorbell is bounded ([`BUDGET`] ring
//! entries per queue); what is left is picked up by the next wake.
//!
//! The host is untrusted: a ring it breaks (a used entry for a head not in
//! flight, a length beyond the chain, an index jump) gets the device reset
//! and left unbound, logged; nothing it writes can make the card loop or
//! touch memory outside its own buffers.

mod hostile;

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

use mic_core::abi::virtio::{id, status};
use mic_core::abi::{BP_H2C_CONFIG_DB, CTRL_VDEV, DB_NONE, DESC_TYPE, VQ_ADDRESS};
use mic_core::card::CardDevice;
use mic_core::card::virtio::{CardVdev, ConfigRequest, VirtioError};
use mic_core::card::vring::{Buf, DriverQueue, UsedBuf};
use mic_core::devpage::{self, DescLoc};
use mic_core::handshake::{AckPoll, AckTiming, AckWait};
use mic_core::hw::{Memory, Mmio};

use super::CardHw;
use super::blk::{self, Blk};
use super::console::{self, Console};
use super::memmap::{Arena, PAGE, Region};
use super::net::{self, Net};
use super::tty::TtyEvent;

/// Ring entries a driver handles per queue per wake.
pub const BUDGET: usize = 64;

/// Why a driver could not take a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeError {
    /// The arena has no room for its buffers.
    NoMemory,
    /// Fewer virtqueues than the driver needs.
    Vqs { have: u8, need: u8 },
    /// The config space is unusable.
    Config(&'static str),
    /// The transport refused (ring checks, device page access).
    Virtio(VirtioError),
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::NoMemory => f.write_str("out of card memory for its buffers (-12)"),
            ProbeError::Vqs { have, need } => write!(f, "{have} virtqueues, the driver needs {need} (-22)"),
            ProbeError::Config(why) => write!(f, "{why} (-22)"),
            ProbeError::Virtio(e) => write!(f, "{e}"),
        }
    }
}

impl From<VirtioError> for ProbeError {
    fn from(e: VirtioError) -> Self {
        ProbeError::Virtio(e)
    }
}

/// What drivers hand back to the card OS besides their work: kernel log
/// lines, output of running commands, console input, and requests for the
/// card's status (HTTP).
#[derive(Debug, Default)]
pub struct Sink {
    /// `(level, text)`.
    pub klog: Vec<(u8, String)>,
    /// `(console, text, the command ended)`.
    pub output: Vec<(u32, String, bool)>,
    /// `(console, event)`.
    pub input: Vec<(u32, TtyEvent)>,
    /// Net devices (virtio index) with an HTTP client waiting for the status.
    pub http: Vec<u32>,
}

impl Sink {
    /// Nothing handed back.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.klog.is_empty() && self.output.is_empty() && self.input.is_empty() && self.http.is_empty()
    }
}

/// What a driver reaches while it runs.
#[derive(Debug)]
pub struct Io<'a, M: Mmio, P: Memory> {
    pub hw: &'a CardHw<M, P>,
    pub vdev: &'a mut CardVdev,
    pub sink: &'a mut Sink,
    pub now: Instant,
    /// The device's virtio index (`virtioN`).
    pub index: u32,
    /// Log prefix: `virtio_blk virtio2`.
    pub tag: String,
    /// Per queue, the avail index before this call's first add.
    kick_base: [Option<u16>; 4],
}

impl<'a, M: Mmio, P: Memory> Io<'a, M, P> {
    fn new(
        hw: &'a CardHw<M, P>,
        vdev: &'a mut CardVdev,
        index: u32,
        tag: String,
        sink: &'a mut Sink,
        now: Instant,
    ) -> Self {
        Self {
            hw,
            index,
            tag,
            vdev,
            sink,
            now,
            kick_base: [None; 4],
        }
    }

    /// Logs `text` under the device's name.
    pub fn log(&mut self, level: u8, text: &str) {
        self.sink.klog.push((level, format!("{}: {text}", self.tag)));
    }

    /// Queue `q`.
    pub fn queue(&mut self, q: u8) -> Result<&mut DriverQueue, VirtioError> {
        self.vdev.queue(q)
    }

    /// Reaps one completed chain of queue `q`.
    pub fn pop_used(&mut self, q: u8) -> Result<Option<UsedBuf>, VirtioError> {
        let hw = self.hw;
        Ok(self.vdev.queue(q)?.pop_used(&hw.phys)?)
    }

    /// Whether queue `q` has completions not reaped.
    pub fn has_used(&mut self, q: u8) -> Result<bool, VirtioError> {
        let hw = self.hw;
        Ok(self.vdev.queue(q)?.has_used(&hw.phys)?)
    }

    /// Reaps at most `budget` completions of queue `q` through `f`;
    /// returns whether more are waiting (the rest of the work for a later
    /// wake).
    pub fn reap(
        &mut self,
        q: u8,
        budget: usize,
        mut f: impl FnMut(&mut Self, UsedBuf) -> Result<(), VirtioError>,
    ) -> Result<bool, VirtioError> {
        for _ in 0..budget {
            let Some(used) = self.pop_used(q)? else {
                return Ok(false);
            };
            f(self, used)?;
        }
        self.has_used(q)
    }

    /// Makes a chain available on queue `q`; the kick comes at the end of
    /// the driver's call ([`Io::kick`]).
    pub fn add(&mut self, q: u8, bufs: &[Buf], token: u32) -> Result<(), VirtioError> {
        let queue = self.vdev.queue(q)?;
        let old = queue.avail_idx();
        queue.add(&self.hw.phys, bufs, token)?;
        self.kick_base[usize::from(q)].get_or_insert(old);
        Ok(())
    }

    /// Rings the host once for everything added, if it wants to hear.
    pub fn kick(&mut self) -> Result<(), VirtioError> {
        let mut ring = false;
        for q in 0..4u8 {
            if let Some(old) = self.kick_base[usize::from(q)].take() {
                ring |= self.vdev.queue(q)?.kick_needed(&self.hw.phys, old)?;
            }
        }
        if ring {
            self.vdev.notify(&self.hw.mmio, &self.hw.phys);
        }
        Ok(())
    }
}

/// The drivers the card has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Console,
    Net,
    Blk,
}

impl Kind {
    fn of(ty: i8) -> Option<Self> {
        match ty {
            id::CONSOLE => Some(Kind::Console),
            id::NET => Some(Kind::Net),
            id::BLOCK => Some(Kind::Blk),
            _ => None,
        }
    }

    /// The Linux driver's name.
    #[must_use]
    pub fn driver(self) -> &'static str {
        match self {
            Kind::Console => "virtio_console",
            Kind::Net => "virtio_net",
            Kind::Blk => "virtio_blk",
        }
    }

    fn vqs(self) -> u8 {
        match self {
            Kind::Console | Kind::Net => 2,
            Kind::Blk => 1,
        }
    }

    fn wanted(self) -> u32 {
        match self {
            Kind::Console => console::wanted_features(),
            Kind::Net => net::wanted_features(),
            Kind::Blk => blk::wanted_features(),
        }
    }
}

/// A bound driver.
#[derive(Debug)]
pub enum Driver {
    Console(Box<Console>),
    Net(Box<Net>),
    Blk(Box<Blk>),
}

impl Driver {
    fn name(&self) -> &str {
        match self {
            Driver::Console(c) => c.name(),
            Driver::Net(n) => n.name(),
            Driver::Blk(b) => b.name(),
        }
    }

    fn start<M: Mmio, P: Memory>(&mut self, io: &mut Io<'_, M, P>) -> Result<(), VirtioError> {
        match self {
            Driver::Console(c) => c.start(io),
            Driver::Net(n) => n.start(io),
            Driver::Blk(b) => b.start(io),
        }
    }

    fn service<M: Mmio, P: Memory>(&mut self, io: &mut Io<'_, M, P>) -> Result<bool, VirtioError> {
        match self {
            Driver::Console(c) => c.service(io, BUDGET),
            Driver::Net(n) => n.service(io, BUDGET),
            Driver::Blk(b) => b.service(io, BUDGET),
        }
    }

    fn config_changed<M: Mmio, P: Memory>(&mut self, io: &mut Io<'_, M, P>) {
        match self {
            Driver::Console(c) => c.config_changed(io),
            Driver::Net(n) => n.config_changed(io),
            Driver::Blk(b) => b.config_changed(io),
        }
    }

    fn stop(&mut self, sink: &mut Sink) {
        match self {
            Driver::Console(_) => {}
            Driver::Net(n) => n.stop(&mut sink.output),
            Driver::Blk(b) => b.stop(&mut sink.output),
        }
    }
}

/// Which device of a kind an operation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which<'a> {
    /// The first live one.
    First,
    /// The one with this driver name (`eth0`, `vdb`).
    Named(&'a str),
    /// The one with this virtio index.
    Index(u32),
}

impl Which<'_> {
    fn is(self, index: u32, name: &str) -> bool {
        match self {
            Which::First => true,
            Which::Named(n) => n == name,
            Which::Index(i) => i == index,
        }
    }
}

/// What a reset leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// The host asked for removal (or the card shuts down).
    Remove,
    /// Unbound (by request, or because the host broke a ring).
    Unbind,
    /// Probed again (a bind of a device that failed, a hostile re-probe).
    Bind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No driver bound.
    Idle,
    /// find_vqs done; waiting for the host to take the used rings.
    Activating {
        wait: AckWait,
        since: Instant,
        next: Instant,
    },
    /// DRIVER_OK.
    Live,
    /// The reset handshake.
    Resetting {
        wait: AckWait,
        since: Instant,
        next: Instant,
        then: Then,
    },
}

/// One device the card found.
#[derive(Debug)]
struct Device {
    /// `virtioN`.
    index: u32,
    kind: Option<Kind>,
    vdev: CardVdev,
    state: State,
    driver: Option<Driver>,
    /// The driver's name index (hvcN, ethN, vdX).
    name_index: Option<u32>,
    mem: Vec<Region>,
    /// Work left over from the last wake.
    more: bool,
    /// What fault injection made of the card's driver for this device.
    hostile: Hostile,
}

/// A card driver turned hostile for one device (fault injection,
/// [`hostile`]).
#[derive(Debug, Clone, Copy, Default)]
struct Hostile {
    /// The next probe puts vq 0's used ring outside card memory.
    used_outside: bool,
    /// Config changes and removal are never acknowledged.
    no_config_ack: bool,
}

impl Device {
    fn tag(&self) -> String {
        let drv = self.kind.map_or("virtio", Kind::driver);
        match (&self.driver, self.kind) {
            (Some(d), Some(Kind::Net)) => format!("{drv} virtio{} {}", self.index, d.name()),
            _ => format!("{drv} virtio{}", self.index),
        }
    }
}

/// Lowest-free number allocators, as the kernel's ida: virtioN, hvcN,
/// ethN, vdX.
#[derive(Debug, Default)]
struct Ids {
    used: [BTreeSet<u32>; 4],
}

impl Ids {
    fn take(&mut self, class: usize) -> u32 {
        let set = &mut self.used[class];
        let n = (0..u32::MAX).find(|n| !set.contains(n)).unwrap_or(u32::MAX);
        set.insert(n);
        n
    }

    fn give(&mut self, class: usize, n: u32) {
        self.used[class].remove(&n);
    }
}

const VIRTIO_IDS: usize = 0;

fn name_class(kind: Kind) -> usize {
    match kind {
        Kind::Console => 1,
        Kind::Net => 2,
        Kind::Blk => 3,
    }
}

/// `vda`, ..., `vdz`, `vdaa`, ... (virtio_blk's disk names).
#[must_use]
pub fn disk_name(index: u32) -> String {
    let mut n = u64::from(index) + 1;
    let mut s = Vec::new();
    while n > 0 {
        n -= 1;
        s.push(b'a' + (n % 26) as u8);
        n /= 26;
    }
    s.reverse();
    format!("vd{}", String::from_utf8_lossy(&s))
}

/// The card's virtio devices and their drivers.
#[derive(Debug)]
pub struct Virtio {
    card: u32,
    timing: AckTiming,
    /// eth0's address from the command line.
    ifcfg: Option<(std::net::Ipv4Addr, u8)>,
    devices: Vec<Device>,
    arena: Arena,
    ids: Ids,
    /// Shutting down: no new devices, every device being removed.
    closing: bool,
    /// Bytes kept from reuse because the host never confirmed a reset.
    quarantined: u64,
    pub sink: Sink,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Virtio {
    #[must_use]
    pub fn new(card: u32, timing: AckTiming, ifcfg: Option<(std::net::Ipv4Addr, u8)>) -> Self {
        Self {
            card,
            timing,
            ifcfg,
            devices: Vec::new(),
            arena: Arena::card(),
            ids: Ids::default(),
            closing: false,
            quarantined: 0,
            sink: Sink::default(),
        }
    }

    /// Whether every live console's output reached the host.
    #[must_use]
    pub fn consoles_idle(&self) -> bool {
        self.devices.iter().all(|d| match (&d.driver, d.state) {
            (Some(Driver::Console(c)), State::Live) => c.idle(),
            _ => true,
        })
    }

    /// Whether any device is left (shutdown waits for none).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Bytes of the arena in use (for meminfo).
    #[must_use]
    pub fn arena_used(&self) -> u64 {
        super::memmap::ARENA_LEN - self.arena.free_bytes()
    }

    /// Walks the device page: probes new devices, serves config changes
    /// and removals, drops devices that are gone.
    pub fn scan<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>, card: &mut CardDevice, now: Instant) {
        let dp = card.dp();
        let mut found = Vec::new();
        for item in devpage::walk_mem(&hw.phys, dp) {
            match item {
                Ok(loc) => found.push(loc),
                Err(e) => {
                    self.sink.klog.push((3, format!("mic_card: device page: {e}")));
                    break;
                }
            }
        }
        // Devices whose slot no longer holds them (the host gave up waiting
        // for a removal, or re-filled the slot): their rings are gone, so
        // nothing is written back; only the doorbell returns.
        let mut i = 0;
        while i < self.devices.len() {
            if Self::still_there(hw, &self.devices[i]) {
                i += 1;
                continue;
            }
            let mut d = self.devices.remove(i);
            let tag = d.tag();
            self.sink
                .klog
                .push((4, format!("{tag}: gone from the device page")));
            self.release(&mut d, true);
            card.doorbells_mut().free_db(d.vdev.h2c_db());
            self.ids.give(VIRTIO_IDS, d.index);
        }
        for loc in found {
            let addr = dp + loc.offset as u64;
            if !self.closing && !self.devices.iter().any(|d| d.vdev.addr() == addr) {
                self.probe(hw, card, &loc, now);
            }
        }
        let mut k = 0;
        while k < self.devices.len() {
            let before = self.devices.len();
            self.config_request(hw, card, k, now);
            if self.devices.len() == before {
                k += 1;
            }
        }
    }

    /// Whether the slot still holds the device the card probed: same type,
    /// and the card's own pointer in `vdev` (a slot the host re-filled has
    /// a zeroed control block).
    fn still_there<M: Mmio, P: Memory>(hw: &CardHw<M, P>, d: &Device) -> bool {
        let addr = d.vdev.addr();
        let ty = hw.phys.read_u8(addr + DESC_TYPE as u64).map(|t| t as i8);
        let mine = hw
            .phys
            .read_u64(addr + (d.vdev.desc().ctrl_offset() + CTRL_VDEV) as u64);
        ty == Ok(d.vdev.device_type()) && mine == Ok(addr)
    }

    fn probe<M: Mmio, P: Memory>(
        &mut self,
        hw: &CardHw<M, P>,
        card: &mut CardDevice,
        loc: &DescLoc,
        now: Instant,
    ) {
        let vdev = match CardVdev::probe(&hw.phys, card.dp(), loc, card.doorbells_mut()) {
            Ok(v) => v,
            Err(e) => {
                self.sink.klog.push((
                    3,
                    format!("mic_card: device at page offset {:#x}: {e}", loc.offset),
                ));
                return;
            }
        };
        let index = self.ids.take(VIRTIO_IDS);
        let kind = Kind::of(vdev.device_type());
        let mut d = Device {
            index,
            kind,
            vdev,
            state: State::Idle,
            driver: None,
            name_index: None,
            mem: Vec::new(),
            more: false,
            hostile: Hostile::default(),
        };
        let _ = d.vdev.set_status(&hw.mmio, &hw.phys, status::ACKNOWLEDGE);
        match kind {
            Some(_) => self.bind(hw, &mut d, now),
            None => self.sink.klog.push((
                6,
                format!(
                    "virtio virtio{index}: no driver for device type {}",
                    d.vdev.device_type()
                ),
            )),
        }
        self.devices.push(d);
    }

    /// Binds the device's driver: features, buffers, find_vqs.
    fn bind<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>, d: &mut Device, now: Instant) {
        let Some(kind) = d.kind else { return };
        let _ = d
            .vdev
            .set_status(&hw.mmio, &hw.phys, status::ACKNOWLEDGE | status::DRIVER);
        match self.try_bind(hw, d, kind, now) {
            Ok(()) => {}
            Err(e) => {
                let tag = d.tag();
                self.sink.klog.push((3, format!("{tag}: probe failed: {e}")));
                self.release(d, true);
                let _ = d.vdev.set_status(
                    &hw.mmio,
                    &hw.phys,
                    status::ACKNOWLEDGE | status::DRIVER | status::FAILED,
                );
            }
        }
    }

    fn try_bind<M: Mmio, P: Memory>(
        &mut self,
        hw: &CardHw<M, P>,
        d: &mut Device,
        kind: Kind,
        now: Instant,
    ) -> Result<(), ProbeError> {
        let have = d.vdev.desc().num_vq;
        if have < kind.vqs() {
            return Err(ProbeError::Vqs {
                have,
                need: kind.vqs(),
            });
        }
        d.vdev
            .finalize_features(&hw.phys, kind.wanted())
            .map_err(|e| ProbeError::Virtio(e.into()))?;
        let mut used = Vec::new();
        for _ in 0..kind.vqs() {
            let r = self.arena.alloc(PAGE).ok_or(ProbeError::NoMemory)?;
            d.mem.push(r);
            used.push(r.addr);
        }
        let class = name_class(kind);
        let n = self.ids.take(class);
        d.name_index = Some(n);
        let tag = d.tag();
        let mut io = Io::new(hw, &mut d.vdev, d.index, tag, &mut self.sink, now);
        let (driver, mem) = match kind {
            Kind::Console => {
                let (c, m) = Console::new(&mut self.arena, format!("hvc{n}"))?;
                (Driver::Console(Box::new(c)), m)
            }
            Kind::Net => {
                let ifcfg = if n == 0 { self.ifcfg } else { None };
                let (net, m) = Net::new(&mut io, &mut self.arena, format!("eth{n}"), self.card, n, ifcfg)?;
                (Driver::Net(Box::new(net)), m)
            }
            Kind::Blk => {
                let (b, m) = Blk::new(&mut io, &mut self.arena, disk_name(n))?;
                (Driver::Blk(Box::new(b)), m)
            }
        };
        d.mem.extend(mem);
        d.driver = Some(driver);
        // Unused vqs beyond what the driver needs still get a used ring:
        // find_vqs re-homes every vq the host declared.
        while used.len() < usize::from(have) {
            let r = self.arena.alloc(PAGE).ok_or(ProbeError::NoMemory)?;
            d.mem.push(r);
            used.push(r.addr);
        }
        if std::mem::take(&mut d.hostile.used_outside) {
            // Over vq 0's own descriptor table, in host memory through the
            // SMPT window: outside card memory, and host memory besides.
            let at = d.vdev.addr() + (d.vdev.desc().vq_offset(0) + VQ_ADDRESS) as u64;
            let ring = hw.phys.read_u64(at).map_err(|e| ProbeError::Virtio(e.into()))?;
            used[0] = ring;
            let tag = d.tag();
            self.sink.klog.push((
                4,
                format!(
                    "{tag}: injected: vq 0's used ring at {ring:#x}, its descriptor table in host memory"
                ),
            ));
        }
        let wait = d.vdev.find_vqs(&hw.mmio, &hw.phys, &used, self.timing)?;
        d.state = State::Activating {
            wait,
            since: now,
            next: now + Duration::from_millis(self.timing.period_ms),
        };
        Ok(())
    }

    /// Frees what a device holds (memory unless the host may still use it,
    /// its name) and ends its driver.
    fn release(&mut self, d: &mut Device, memory_safe: bool) {
        if let Some(mut drv) = d.driver.take() {
            drv.stop(&mut self.sink);
        }
        if let (Some(n), Some(kind)) = (d.name_index.take(), d.kind) {
            self.ids.give(name_class(kind), n);
        }
        for r in d.mem.drain(..) {
            if memory_safe {
                self.arena.free(r);
            } else {
                self.quarantined += r.len;
            }
        }
    }

    fn config_request<M: Mmio, P: Memory>(
        &mut self,
        hw: &CardHw<M, P>,
        card: &mut CardDevice,
        k: usize,
        now: Instant,
    ) {
        let Some(d) = self.devices.get_mut(k) else { return };
        if d.hostile.no_config_ack {
            return;
        }
        match d.vdev.config_request(&hw.phys) {
            // Each change once: the host clears guest_ack before it asks
            // again (two changes in a row are two changes).
            Ok(Some(ConfigRequest::Changed)) if d.vdev.config_acked(&hw.phys) == Ok(false) => {
                let tag = d.tag();
                if let (Some(drv), State::Live) = (&mut d.driver, d.state) {
                    let mut io = Io::new(hw, &mut d.vdev, d.index, tag, &mut self.sink, now);
                    drv.config_changed(&mut io);
                    let _ = io.kick();
                }
                let _ = d.vdev.ack_config(&hw.phys);
            }
            Ok(Some(ConfigRequest::Remove)) => {
                let already = matches!(
                    d.state,
                    State::Resetting {
                        then: Then::Remove,
                        ..
                    }
                );
                if !already {
                    self.request_reset(hw, card, k, Then::Remove, now);
                }
            }
            Ok(None | Some(ConfigRequest::Changed)) | Err(_) => {}
        }
    }

    /// Resets device `k` (if it was started) and then removes or unbinds it.
    fn request_reset<M: Mmio, P: Memory>(
        &mut self,
        hw: &CardHw<M, P>,
        card: &mut CardDevice,
        k: usize,
        then: Then,
        now: Instant,
    ) {
        let Some(d) = self.devices.get_mut(k) else { return };
        // A device whose start failed was seen by the host too (it may
        // hold its rings broken): it is reset as a started one is.
        let failed = d.vdev.status(&hw.phys).is_ok_and(|s| s & status::FAILED != 0);
        match d.state {
            State::Idle if !failed => self.finish_reset(hw, card, k, then, true, now),
            State::Live | State::Activating { .. } | State::Idle => {
                match d.vdev.begin_reset(&hw.mmio, &hw.phys, self.timing) {
                    Ok(wait) => {
                        d.state = State::Resetting {
                            wait,
                            since: now,
                            next: now + Duration::from_millis(self.timing.period_ms),
                            then,
                        };
                    }
                    Err(e) => {
                        let tag = d.tag();
                        self.sink.klog.push((3, format!("{tag}: reset: {e}")));
                        self.finish_reset(hw, card, k, then, false, now);
                    }
                }
            }
            State::Resetting {
                wait, since, next, ..
            } => {
                if then == Then::Remove {
                    d.state = State::Resetting {
                        wait,
                        since,
                        next,
                        then,
                    };
                }
            }
        }
    }

    fn finish_reset<M: Mmio, P: Memory>(
        &mut self,
        hw: &CardHw<M, P>,
        card: &mut CardDevice,
        k: usize,
        then: Then,
        acked: bool,
        now: Instant,
    ) {
        let mut d = self.devices.remove(k);
        let was_bound = d.driver.is_some();
        let _ = d.vdev.finish_reset(&hw.phys);
        let tag = d.tag();
        if !acked {
            self.sink.klog.push((
                3,
                format!("{tag}: the host did not acknowledge the reset; its buffers stay reserved"),
            ));
        }
        self.release(&mut d, acked);
        match then {
            Then::Remove => {
                if was_bound {
                    self.sink.klog.push((6, format!("{tag}: removed")));
                }
                let idx = d.index;
                if let Err(e) = d.vdev.remove(&hw.mmio, &hw.phys, card.doorbells_mut()) {
                    self.sink.klog.push((3, format!("{tag}: removal: {e}")));
                }
                self.ids.give(VIRTIO_IDS, idx);
            }
            Then::Unbind => {
                d.state = State::Idle;
                if was_bound {
                    self.sink.klog.push((6, format!("{tag}: unbound")));
                }
                self.devices.insert(k, d);
            }
            Then::Bind => {
                d.state = State::Idle;
                if !self.closing {
                    self.bind(hw, &mut d, now);
                }
                self.devices.insert(k, d);
            }
        }
    }

    /// Polls the handshakes that are due.
    fn poll_waits<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>, card: &mut CardDevice, now: Instant) {
        let mut k = 0;
        while k < self.devices.len() {
            let d = &mut self.devices[k];
            match d.state {
                State::Activating { wait, since, next } if next <= now => {
                    match wait.poll(&hw.phys, ms(now - since)) {
                        AckPoll::Wait { ms } => {
                            d.state = State::Activating {
                                wait,
                                since,
                                next: now + Duration::from_millis(ms.max(1)),
                            };
                        }
                        AckPoll::Acked => self.activate(hw, card, k, now),
                        AckPoll::TimedOut => {
                            let tag = d.tag();
                            self.sink
                                .klog
                                .push((3, format!("{tag}: the host did not take the used rings (-19)")));
                            d.vdev.del_vqs();
                            d.state = State::Idle;
                            let mut d = self.devices.remove(k);
                            self.release(&mut d, false);
                            let _ = d.vdev.set_status(
                                &hw.mmio,
                                &hw.phys,
                                status::ACKNOWLEDGE | status::DRIVER | status::FAILED,
                            );
                            self.devices.insert(k, d);
                        }
                    }
                }
                State::Resetting {
                    wait,
                    since,
                    next,
                    then,
                } if next <= now => match wait.poll(&hw.phys, ms(now - since)) {
                    AckPoll::Wait { ms } => {
                        d.state = State::Resetting {
                            wait,
                            since,
                            next: now + Duration::from_millis(ms.max(1)),
                            then,
                        };
                    }
                    outcome => {
                        let before = self.devices.len();
                        self.finish_reset(hw, card, k, then, outcome == AckPoll::Acked, now);
                        if self.devices.len() < before {
                            continue;
                        }
                    }
                },
                _ => {}
            }
            k += 1;
        }
    }

    /// The host took the used rings: start the driver, DRIVER_OK.
    fn activate<M: Mmio, P: Memory>(
        &mut self,
        hw: &CardHw<M, P>,
        card: &mut CardDevice,
        k: usize,
        now: Instant,
    ) {
        let d = &mut self.devices[k];
        let tag = d.tag();
        let Some(drv) = &mut d.driver else { return };
        let mut io = Io::new(hw, &mut d.vdev, d.index, tag, &mut self.sink, now);
        let res = drv.start(&mut io).and_then(|()| io.kick());
        match res {
            Ok(()) => {
                d.state = State::Live;
                let _ = d.vdev.set_status(
                    &hw.mmio,
                    &hw.phys,
                    status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK,
                );
            }
            Err(e) => {
                // Started far enough to need the reset handshake.
                d.state = State::Live;
                self.broken(hw, card, k, &e, now);
            }
        }
    }

    /// The host broke a ring: reset the device and leave it unbound.
    fn broken<M: Mmio, P: Memory>(
        &mut self,
        hw: &CardHw<M, P>,
        card: &mut CardDevice,
        k: usize,
        e: &VirtioError,
        now: Instant,
    ) {
        let tag = self.devices[k].tag();
        self.sink.klog.push((
            3,
            format!("{tag}: the host broke the ring ({e}); resetting the device"),
        ));
        self.request_reset(hw, card, k, Then::Unbind, now);
    }

    fn service_one<M: Mmio, P: Memory>(
        &mut self,
        hw: &CardHw<M, P>,
        card: &mut CardDevice,
        k: usize,
        now: Instant,
    ) {
        let d = &mut self.devices[k];
        if d.state != State::Live {
            d.more = false;
            return;
        }
        let tag = d.tag();
        let Some(drv) = &mut d.driver else { return };
        let mut io = Io::new(hw, &mut d.vdev, d.index, tag, &mut self.sink, now);
        let res = drv.service(&mut io).and_then(|more| io.kick().map(|()| more));
        match res {
            Ok(more) => d.more = more,
            Err(e) => {
                d.more = false;
                self.broken(hw, card, k, &e, now);
            }
        }
    }

    /// A host→card doorbell: the config doorbell scans, a device's serves it.
    pub fn doorbell<M: Mmio, P: Memory>(
        &mut self,
        hw: &CardHw<M, P>,
        card: &mut CardDevice,
        db: u8,
        now: Instant,
    ) {
        if db == card.config_db() && !self.closing {
            self.scan(hw, card, now);
        }
        for k in 0..self.devices.len() {
            if self.devices.get(k).is_some_and(|d| d.vdev.h2c_db() == db) {
                self.service_one(hw, card, k, now);
            }
        }
        self.poll_waits(hw, card, now);
    }

    /// The virtio timer: due handshake polls and left-over work.
    pub fn timer<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>, card: &mut CardDevice, now: Instant) {
        self.poll_waits(hw, card, now);
        for k in 0..self.devices.len() {
            if self.devices.get(k).is_some_and(|d| d.more) {
                self.service_one(hw, card, k, now);
            }
        }
    }

    /// When the virtio timer should fire next.
    #[must_use]
    pub fn next_wake(&self, now: Instant) -> Option<Duration> {
        let mut best: Option<Instant> = None;
        for d in &self.devices {
            let at = match d.state {
                _ if d.more => Some(now),
                State::Activating { next, .. } | State::Resetting { next, .. } => Some(next),
                _ => None,
            };
            if let Some(at) = at {
                best = Some(best.map_or(at, |b| b.min(at)));
            }
        }
        best.map(|b| b.saturating_duration_since(now))
    }

    /// Orderly shutdown: no more config doorbells, every device removed.
    pub fn shutdown<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>, card: &mut CardDevice, now: Instant) {
        self.closing = true;
        let _ = devpage::write_u8_at(&hw.phys, card.dp(), BP_H2C_CONFIG_DB, DB_NONE as u8);
        let mut k = self.devices.len();
        while k > 0 {
            k -= 1;
            self.request_reset(hw, card, k, Then::Remove, now);
        }
    }

    /// Binds or unbinds `device` (`virtioN`) to/from `driver`.
    pub fn driver_bind<M: Mmio, P: Memory>(
        &mut self,
        hw: &CardHw<M, P>,
        card: &mut CardDevice,
        driver: &str,
        device: &str,
        bind: bool,
        now: Instant,
    ) -> Result<(), String> {
        const NODEV: &str = "No such device";
        let index: u32 = device
            .strip_prefix("virtio")
            .and_then(|n| n.parse().ok())
            .ok_or(NODEV)?;
        let k = self
            .devices
            .iter()
            .position(|d| d.index == index && d.kind.map(Kind::driver) == Some(driver))
            .ok_or(NODEV)?;
        let d = &mut self.devices[k];
        match (bind, d.state) {
            (false, State::Live | State::Activating { .. }) => {
                self.request_reset(hw, card, k, Then::Unbind, now);
                Ok(())
            }
            (true, State::Idle) if !self.closing => {
                // A device that failed its start is reset before it is
                // probed again (the host may hold it broken until then).
                self.request_reset(hw, card, k, Then::Bind, now);
                Ok(())
            }
            (true, _) => Err("Device or resource busy".to_owned()),
            (false, _) => Err(NODEV.to_owned()),
        }
    }

    /// The console driver of virtio device `index`, if live.
    pub fn console_mut(&mut self, index: u32) -> Option<&mut Console> {
        self.devices
            .iter_mut()
            .find_map(|d| match (&mut d.driver, d.index == index, d.state) {
                (Some(Driver::Console(c)), true, State::Live) => Some(&mut **c),
                _ => None,
            })
    }

    /// Live consoles' virtio indices.
    #[must_use]
    pub fn consoles(&self) -> Vec<u32> {
        self.devices
            .iter()
            .filter(|d| d.state == State::Live && matches!(d.driver, Some(Driver::Console(_))))
            .map(|d| d.index)
            .collect()
    }

    /// Runs `run` on the first live device whose driver `pick` chooses;
    /// a ring the host broke resets the device. `None` when no device was
    /// chosen (or `run` found it was not the driver it wanted).
    fn with_live<M: Mmio, P: Memory, R>(
        &mut self,
        hw: &CardHw<M, P>,
        card: &mut CardDevice,
        now: Instant,
        pick: impl Fn(u32, &Driver) -> bool,
        run: impl FnOnce(&mut Driver, &mut Io<'_, M, P>) -> Result<Option<R>, VirtioError>,
    ) -> Option<R> {
        let pos = self.devices.iter().position(|d| {
            d.state == State::Live && d.driver.as_ref().is_some_and(|drv| pick(d.index, drv))
        })?;
        let dev = &mut self.devices[pos];
        let tag = dev.tag();
        let drv = dev.driver.as_mut()?;
        let mut io = Io::new(hw, &mut dev.vdev, dev.index, tag, &mut self.sink, now);
        match run(drv, &mut io).and_then(|r| io.kick().map(|()| r)) {
            Ok(r) => r,
            Err(e) => {
                self.broken(hw, card, pos, &e, now);
                None
            }
        }
    }

    /// Flushes a console's output to its TX ring.
    pub fn flush_console<M: Mmio, P: Memory>(
        &mut self,
        hw: &CardHw<M, P>,
        card: &mut CardDevice,
        index: u32,
        now: Instant,
    ) {
        self.with_live(
            hw,
            card,
            now,
            |i, d| i == index && matches!(d, Driver::Console(_)),
            |d, io| match d {
                Driver::Console(c) => c.flush(io).map(Some),
                _ => Ok(None),
            },
        );
    }

    /// Runs `run` on the live net device `which`.
    pub fn with_net<M: Mmio, P: Memory, R>(
        &mut self,
        hw: &CardHw<M, P>,
        card: &mut CardDevice,
        which: Which<'_>,
        now: Instant,
        run: impl FnOnce(&mut Net, &mut Io<'_, M, P>) -> Result<R, VirtioError>,
    ) -> Option<R> {
        self.with_live(
            hw,
            card,
            now,
            |i, d| matches!(d, Driver::Net(n) if which.is(i, n.name())),
            |d, io| match d {
                Driver::Net(n) => run(n, io).map(Some),
                _ => Ok(None),
            },
        )
    }

    /// Runs `run` on the live disk `which`.
    pub fn with_blk<M: Mmio, P: Memory, R>(
        &mut self,
        hw: &CardHw<M, P>,
        card: &mut CardDevice,
        which: Which<'_>,
        now: Instant,
        run: impl FnOnce(&mut Blk, &mut Io<'_, M, P>) -> Result<R, VirtioError>,
    ) -> Option<R> {
        self.with_live(
            hw,
            card,
            now,
            |i, d| matches!(d, Driver::Blk(b) if which.is(i, b.name())),
            |d, io| match d {
                Driver::Blk(b) => run(b, io).map(Some),
                _ => Ok(None),
            },
        )
    }

    /// When net device `index` wants its stack polled.
    pub fn net_next_poll(&mut self, index: u32, now: Instant) -> Option<Duration> {
        self.devices
            .iter_mut()
            .find_map(|d| match (&mut d.driver, d.index == index, d.state) {
                (Some(Driver::Net(n)), true, State::Live) => n.next_poll(now),
                _ => None,
            })
    }

    /// Every live net device's virtio index.
    #[must_use]
    pub fn nets(&self) -> Vec<u32> {
        self.devices
            .iter()
            .filter(|d| d.state == State::Live && matches!(d.driver, Some(Driver::Net(_))))
            .map(|d| d.index)
            .collect()
    }

    /// The live net devices.
    pub fn net_list(&self) -> impl Iterator<Item = &Net> {
        self.devices.iter().filter_map(|d| match (&d.driver, d.state) {
            (Some(Driver::Net(n)), State::Live) => Some(&**n),
            _ => None,
        })
    }

    /// The live disks.
    pub fn blk_list(&self) -> impl Iterator<Item = &Blk> {
        self.devices.iter().filter_map(|d| match (&d.driver, d.state) {
            (Some(Driver::Blk(b)), State::Live) => Some(&**b),
            _ => None,
        })
    }

    /// Cancels the commands `console` runs on any device; returns what they
    /// print as they stop.
    pub fn cancel_jobs(&mut self, console: u32) -> String {
        let mut out = String::new();
        for d in &mut self.devices {
            match &mut d.driver {
                Some(Driver::Net(n)) => out.push_str(&n.cancel(console)),
                Some(Driver::Blk(b)) => {
                    b.cancel(console);
                }
                _ => {}
            }
        }
        out
    }

    /// The devices as the status page lists them: `(virtioN, type, driver
    /// name or "", status byte)`.
    pub fn list<M: Mmio, P: Memory>(&self, hw: &CardHw<M, P>) -> Vec<(u32, &'static str, String, u8)> {
        self.devices
            .iter()
            .map(|d| {
                (
                    d.index,
                    id::name(d.vdev.device_type()),
                    d.driver.as_ref().map(|x| x.name().to_owned()).unwrap_or_default(),
                    d.vdev.status(&hw.phys).unwrap_or(0),
                )
            })
            .collect()
    }

    /// Bytes kept from reuse after unacknowledged resets.
    #[must_use]
    pub fn quarantined(&self) -> u64 {
        self.quarantined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_names_as_virtio_blk_makes_them() {
        assert_eq!(disk_name(0), "vda");
        assert_eq!(disk_name(25), "vdz");
        assert_eq!(disk_name(26), "vdaa");
        assert_eq!(disk_name(27), "vdab");
        assert_eq!(disk_name(701), "vdzz");
        assert_eq!(disk_name(702), "vdaaa");
    }

    #[test]
    fn ids_take_the_lowest_free_number() {
        let mut ids = Ids::default();
        assert_eq!((ids.take(0), ids.take(0), ids.take(0)), (0, 1, 2));
        ids.give(0, 1);
        assert_eq!(ids.take(0), 1);
        assert_eq!(ids.take(1), 0);
    }
}
