//! virtio-blk on the card (`vda`): capacity from the device config, reads,
//! writes, flush and GET_ID through the one request queue, each request a
//! chain of the 16-byte header (device-readable), the data, and the status
//! byte (device-writable), all in the card's GDDR.
//!
//! The shell's `blk` commands run as jobs: a read, a write (then a flush
//! when the device has one), a streamed SHA-256 of the disk, a sequential
//! read benchmark. At most [`SLOTS`] requests are in flight; a job's
//! completions may come back in any order and are consumed in sector
//! order. Every status byte is checked: OK, IOERR, UNSUPP, and anything
//! else the host wrote (or failed to write) is an error of the request.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use mic_core::abi::virtio::{
    VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_SECTOR_SIZE,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VirtioBlkConfig,
    VirtioBlkOutHdr, blk_features, feature,
};
use mic_core::card::virtio::VirtioError;
use mic_core::card::vring::Buf;
use mic_core::hw::{Memory, Mmio};
use sha2::{Digest as _, Sha256};

use super::memmap::{Arena, Region};
use super::shell::{self, BlkOp, MAX_READ_SECTORS, Reply};
use super::virtio::{Io, ProbeError};

/// Requests in flight at most.
pub const SLOTS: usize = 8;
/// Data bytes per request at most.
pub const SLOT_DATA: u32 = 64 << 10;
/// What `blk bench` reads by default.
const BENCH_DEFAULT_MIB: u64 = 64;
/// Written into the status byte before a request goes out: a host that
/// completes without writing a status is caught.
const STATUS_UNSET: u8 = 0xff;

const SECTOR: u64 = VIRTIO_BLK_SECTOR_SIZE;

/// The features the card's driver takes when offered.
#[must_use]
pub fn wanted_features() -> u32 {
    feature(blk_features::SEG_MAX)
        | feature(blk_features::SIZE_MAX)
        | feature(blk_features::RO)
        | feature(blk_features::FLUSH)
}

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
    Flush,
    GetId,
}

impl Kind {
    fn ty(self) -> u32 {
        match self {
            Kind::Read => VIRTIO_BLK_T_IN,
            Kind::Write => VIRTIO_BLK_T_OUT,
            Kind::Flush => VIRTIO_BLK_T_FLUSH,
            Kind::GetId => VIRTIO_BLK_T_GET_ID,
        }
    }
}

/// Where one request slot's pieces are in card memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotAddrs {
    /// The 16-byte header.
    pub hdr: u64,
    /// The status byte.
    pub status: u64,
    /// The data buffer ([`SLOT_DATA`] bytes).
    pub data: u64,
}

/// The header and the chain of a request: header (readable), data (readable
/// for a write, writable for a read or GET_ID, absent for a flush), status
/// (writable).
#[must_use]
pub fn request(kind: Kind, sector: u64, at: SlotAddrs, data_len: u32) -> (VirtioBlkOutHdr, Vec<Buf>) {
    let hdr = VirtioBlkOutHdr {
        ty: kind.ty(),
        ioprio: 0,
        sector: if matches!(kind, Kind::Read | Kind::Write) {
            sector
        } else {
            0
        },
    };
    let mut chain = vec![Buf {
        addr: at.hdr,
        len: VirtioBlkOutHdr::SIZE as u32,
        write: false,
    }];
    let data_len = match kind {
        Kind::GetId => VIRTIO_BLK_ID_BYTES as u32,
        Kind::Flush => 0,
        Kind::Read | Kind::Write => data_len,
    };
    if data_len > 0 {
        chain.push(Buf {
            addr: at.data,
            len: data_len,
            write: kind != Kind::Write,
        });
    }
    chain.push(Buf {
        addr: at.status,
        len: 1,
        write: true,
    });
    (hdr, chain)
}

/// A request's outcome from its status byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    IoErr,
    Unsupported,
    /// The host wrote something else, or nothing.
    Bad(u8),
}

impl Status {
    #[must_use]
    pub fn from_byte(b: u8) -> Self {
        match b {
            VIRTIO_BLK_S_OK => Status::Ok,
            VIRTIO_BLK_S_IOERR => Status::IoErr,
            VIRTIO_BLK_S_UNSUPP => Status::Unsupported,
            b => Status::Bad(b),
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Ok => f.write_str("ok"),
            Status::IoErr => f.write_str("I/O error"),
            Status::Unsupported => f.write_str("not supported by the host"),
            Status::Bad(STATUS_UNSET) => f.write_str("no status from the host"),
            Status::Bad(b) => write!(f, "bad status {b:#04x} from the host"),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    busy: bool,
    kind: Option<Kind>,
    sector: u64,
    len: u32,
    /// The job generation the request belongs to (0: the driver's own).
    job: u64,
}

/// Counters for `blk info` and the status page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlkStats {
    pub reads: u64,
    pub writes: u64,
    pub flushes: u64,
    pub errors: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

#[derive(Debug)]
enum Work {
    Read,
    Write {
        sector: u64,
        data: Vec<u8>,
        stage: WriteStage,
    },
    Sha256 {
        hasher: Box<Sha256>,
        whole: bool,
    },
    Bench,
    /// `blk fill`: writes issued from `next`, `written` sectors completed,
    /// then a flush.
    Fill {
        seed: u64,
        written: u64,
        flushing: bool,
    },
}

/// The multiplier of [`fill_word`].
const FILL_K: u64 = 0x9e37_79b9_7f4a_7c15;

/// The 8 bytes `blk fill SEED` writes at byte offset `off` (a multiply
/// per word: the card's cost stays out of the throughput it measures).
#[must_use]
pub fn fill_word(seed: u64, off: u64) -> [u8; 8] {
    ((off / 8) ^ seed).wrapping_mul(FILL_K).to_le_bytes()
}

/// `len` bytes of `blk fill SEED`'s pattern from byte `off` (a multiple
/// of 8): [`fill_word`] after word, made as sums so that they vectorise
/// (this runs on the emulator's thread between two of the host's copies).
/// The low ten bits of a word's index and the rest are disjoint, so
/// `(i ^ seed) * K` is `((i ^ seed) & !1023) * K + ((i ^ seed) & 1023) * K`:
/// one multiply per 1024 words, and a table of the second terms.
#[must_use]
pub fn fill_pattern(seed: u64, off: u64, len: usize) -> Vec<u8> {
    const LOW: u64 = 1023;
    let mut low = [0u64; LOW as usize + 1];
    for (b, t) in (0u64..).zip(low.iter_mut()) {
        *t = (b ^ (seed & LOW)).wrapping_mul(FILL_K);
    }
    let mut v = vec![0u8; len];
    let mut i = off / 8;
    let mut rest = &mut v[..];
    while rest.len() >= 8 {
        let lo = (i & LOW) as usize;
        let n = (low.len() - lo).min(rest.len() / 8);
        let high = ((i & !LOW) ^ (seed & !LOW)).wrapping_mul(FILL_K);
        let (run, tail) = rest.split_at_mut(n * 8);
        for (w, t) in run.chunks_exact_mut(8).zip(&low[lo..lo + n]) {
            w.copy_from_slice(&high.wrapping_add(*t).to_le_bytes());
        }
        i += n as u64;
        rest = tail;
    }
    let n = rest.len();
    rest.copy_from_slice(&fill_word(seed, i * 8)[..n]);
    v
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteStage {
    /// Not issued yet.
    Pending,
    Writing,
    Flushing,
}

/// A shell command running on the disk.
#[derive(Debug)]
struct Job {
    console: u32,
    generation: u64,
    work: Work,
    /// Streamed reads: next sector to ask for, the end, next to consume.
    next: u64,
    end: u64,
    consumed: u64,
    /// Completed chunks waiting for their turn: sector → slot.
    ready: BTreeMap<u64, usize>,
    started: Instant,
    requests: u64,
}

/// The driver of one virtio-blk device.
#[derive(Debug)]
pub struct Blk {
    name: String,
    capacity: u64,
    features: u32,
    seg_max: u32,
    chunk: u32,
    serial: Option<Vec<u8>>,
    meta: Region,
    data: Region,
    slots: [Slot; SLOTS],
    job: Option<Job>,
    gens: u64,
    stats: BlkStats,
}

impl Blk {
    /// Allocates the request slots; `name` is `vda`, `vdb`, ...
    pub fn new<M: Mmio, P: Memory>(
        io: &mut Io<'_, M, P>,
        arena: &mut Arena,
        name: String,
    ) -> Result<(Self, Vec<Region>), ProbeError> {
        let cfg = read_config(io)?;
        let features = io.vdev.features();
        let has = |bit| features & feature(bit) != 0;
        let mut chunk = SLOT_DATA;
        if has(blk_features::SIZE_MAX) && cfg.size_max >= SECTOR as u32 {
            chunk = chunk.min(cfg.size_max / SECTOR as u32 * SECTOR as u32);
        }
        let meta = arena.alloc(SLOTS as u64 * 32).ok_or(ProbeError::NoMemory)?;
        let Some(data) = arena.alloc(SLOTS as u64 * u64::from(SLOT_DATA)) else {
            arena.free(meta);
            return Err(ProbeError::NoMemory);
        };
        let blk = Self {
            name,
            capacity: cfg.capacity,
            features,
            seg_max: if has(blk_features::SEG_MAX) {
                cfg.seg_max
            } else {
                0
            },
            chunk,
            serial: None,
            meta,
            data,
            slots: [Slot::default(); SLOTS],
            job: None,
            gens: 0,
            stats: BlkStats::default(),
        };
        Ok((blk, vec![meta, data]))
    }

    /// The disk's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Capacity in sectors.
    #[must_use]
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The serial from GET_ID, if the host gave one.
    #[must_use]
    pub fn serial(&self) -> Option<String> {
        self.serial.as_deref().map(shell::serial_str)
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> BlkStats {
        self.stats
    }

    fn read_only(&self) -> bool {
        self.features & feature(blk_features::RO) != 0
    }

    fn has_flush(&self) -> bool {
        self.features & feature(blk_features::FLUSH) != 0
    }

    fn addrs(&self, slot: usize) -> SlotAddrs {
        let meta = self.meta.at(slot as u64 * 32);
        SlotAddrs {
            hdr: meta,
            status: meta + 16,
            data: self.data.at(slot as u64 * u64::from(SLOT_DATA)),
        }
    }

    /// The line Linux prints for the disk's size.
    fn size_line(&self, new: bool) -> String {
        let bytes = self.capacity.saturating_mul(SECTOR);
        format!(
            "[{}] {}{} 512-byte logical blocks ({}/{})",
            self.name,
            if new { "new size: " } else { "" },
            self.capacity,
            shell::size_str(bytes, false),
            shell::size_str(bytes, true)
        )
    }

    /// The device is live: announce the disk and ask for its serial.
    pub fn start<M: Mmio, P: Memory>(&mut self, io: &mut Io<'_, M, P>) -> Result<(), VirtioError> {
        let line = self.size_line(false);
        io.log(5, &line);
        io.sink
            .klog
            .push((6, format!(" {}: unknown partition table", self.name)));
        if self.read_only() {
            io.log(5, &format!("[{}] write protect is on", self.name));
        }
        self.submit(io, 0, Kind::GetId, 0, 0, 0)
    }

    /// The host changed the config: a new capacity is announced.
    pub fn config_changed<M: Mmio, P: Memory>(&mut self, io: &mut Io<'_, M, P>) {
        match read_config(io) {
            Ok(cfg) if cfg.capacity != self.capacity => {
                self.capacity = cfg.capacity;
                let line = self.size_line(true);
                io.log(5, &line);
            }
            Ok(_) => {}
            Err(e) => io.log(3, &format!("reading the config: {e}")),
        }
    }

    fn submit<M: Mmio, P: Memory>(
        &mut self,
        io: &mut Io<'_, M, P>,
        slot: usize,
        kind: Kind,
        sector: u64,
        len: u32,
        job: u64,
    ) -> Result<(), VirtioError> {
        let at = self.addrs(slot);
        let (hdr, chain) = request(kind, sector, at, len);
        let mem = &io.hw.phys;
        mem.write(at.hdr, &hdr.to_bytes())?;
        mem.write_u8(at.status, STATUS_UNSET)?;
        mem.write_barrier();
        io.add(0, &chain, slot as u32)?;
        self.slots[slot] = Slot {
            busy: true,
            kind: Some(kind),
            sector,
            len,
            job,
        };
        Ok(())
    }

    fn free_slot(&self) -> Option<usize> {
        self.slots.iter().position(|s| !s.busy)
    }

    /// Starts a shell command on this disk for `console`: the command's
    /// own outcome inside, a broken ring outside.
    pub fn command<M: Mmio, P: Memory>(
        &mut self,
        io: &mut Io<'_, M, P>,
        console: u32,
        op: BlkOp,
    ) -> Result<Result<Reply, String>, VirtioError> {
        match self.prepare(op, io.now) {
            Ok(Some(job)) => {
                self.job = Some(Job { console, ..job });
                self.pump(io)?;
                Ok(Ok(Reply::Running(String::new())))
            }
            Ok(None) => Ok(Ok(Reply::Done(self.info()))),
            Err(e) => Ok(Err(e)),
        }
    }

    /// The job for `op`, or `None` for `info`, or why not.
    fn prepare(&mut self, op: BlkOp, now: Instant) -> Result<Option<Job>, String> {
        if self.job.is_some() && op != BlkOp::Info {
            return Err(format!("{}: busy with another command", self.name));
        }
        let end_of = |sector: u64, n: u64| sector.checked_add(n).filter(|&e| e <= self.capacity);
        let (work, next, end) = match op {
            BlkOp::Info => return Ok(None),
            BlkOp::Read { sector, count } => {
                debug_assert!(count <= MAX_READ_SECTORS);
                let end = end_of(sector, u64::from(count)).ok_or_else(|| self.beyond())?;
                (Work::Read, sector, end)
            }
            BlkOp::Write { sector, data } => {
                if self.read_only() {
                    return Err(format!("{} is read-only", self.name));
                }
                let n = (data.len() as u64).div_ceil(SECTOR).max(1);
                let end = end_of(sector, n).ok_or_else(|| self.beyond())?;
                (
                    Work::Write {
                        sector,
                        data,
                        stage: WriteStage::Pending,
                    },
                    sector,
                    end,
                )
            }
            BlkOp::Sha256 { sectors } => {
                let n = sectors.unwrap_or(self.capacity);
                end_of(0, n).ok_or_else(|| self.beyond())?;
                (
                    Work::Sha256 {
                        hasher: Box::default(),
                        whole: n == self.capacity,
                    },
                    0,
                    n,
                )
            }
            BlkOp::Bench { mib } => {
                let want = mib
                    .unwrap_or(BENCH_DEFAULT_MIB)
                    .saturating_mul((1 << 20) / SECTOR);
                (Work::Bench, 0, want.min(self.capacity))
            }
            BlkOp::Fill { seed, sectors } => {
                if self.read_only() {
                    return Err(format!("{} is read-only", self.name));
                }
                let n = sectors.unwrap_or(self.capacity);
                end_of(0, n).filter(|&e| e > 0).ok_or_else(|| self.beyond())?;
                (
                    Work::Fill {
                        seed,
                        written: 0,
                        flushing: false,
                    },
                    0,
                    n,
                )
            }
        };
        self.gens += 1;
        Ok(Some(Job {
            console: 0,
            generation: self.gens,
            work,
            next,
            end,
            consumed: next,
            ready: BTreeMap::new(),
            started: now,
            requests: 0,
        }))
    }

    fn beyond(&self) -> String {
        format!("beyond the end of {} ({} sectors)", self.name, self.capacity)
    }

    fn info(&self) -> String {
        let bytes = self.capacity.saturating_mul(SECTOR);
        let mut s = format!(
            "{}: {} sectors of 512 bytes ({}/{})\n",
            self.name,
            self.capacity,
            shell::size_str(bytes, false),
            shell::size_str(bytes, true)
        );
        let serial = self.serial().unwrap_or_else(|| "(none)".to_owned());
        let _ = writeln!(s, "serial: {serial}");
        let _ = writeln!(
            s,
            "features: {:#010x}{}{}{}, seg_max {}, request size {} KiB",
            self.features,
            if self.read_only() { " ro" } else { " rw" },
            if self.has_flush() { " flush" } else { "" },
            if self.seg_max > 0 { " seg_max" } else { "" },
            self.seg_max,
            self.chunk >> 10
        );
        let st = self.stats;
        let _ = writeln!(
            s,
            "requests: {} reads ({} bytes), {} writes ({} bytes), {} flushes, {} errors",
            st.reads, st.bytes_read, st.writes, st.bytes_written, st.flushes, st.errors
        );
        s
    }

    /// Issues what the running job can issue (a job with nothing to read
    /// ends here).
    fn pump<M: Mmio, P: Memory>(&mut self, io: &mut Io<'_, M, P>) -> Result<(), VirtioError> {
        let Some(job) = &mut self.job else { return Ok(()) };
        let mut issue: Vec<(Kind, u64, u32, Option<Vec<u8>>)> = Vec::new();
        match &mut job.work {
            Work::Write { data, stage, .. } => match stage {
                WriteStage::Pending => {
                    let len = ((job.end - job.next) * SECTOR) as u32;
                    let mut buf = data.clone();
                    buf.resize(len as usize, 0);
                    issue.push((Kind::Write, job.next, len, Some(buf)));
                    *stage = WriteStage::Writing;
                }
                WriteStage::Writing | WriteStage::Flushing => {}
            },
            Work::Fill { seed, flushing, .. } => {
                let chunk = u64::from(self.chunk) / SECTOR;
                let busy = self.slots.iter().filter(|s| s.busy).count();
                for _ in busy..SLOTS {
                    if *flushing || job.next >= job.end {
                        break;
                    }
                    let n = chunk.min(job.end - job.next);
                    let len = (n * SECTOR) as usize;
                    let data = fill_pattern(*seed, job.next * SECTOR, len);
                    issue.push((Kind::Write, job.next, len as u32, Some(data)));
                    job.next += n;
                }
            }
            Work::Read | Work::Sha256 { .. } | Work::Bench => {
                if job.next >= job.end && job.consumed >= job.end {
                    self.finish(io);
                    return Ok(());
                }
                let chunk = u64::from(self.chunk) / SECTOR;
                let busy = self.slots.iter().filter(|s| s.busy).count();
                for _ in busy..SLOTS {
                    if job.next >= job.end {
                        break;
                    }
                    let n = chunk.min(job.end - job.next);
                    issue.push((Kind::Read, job.next, (n * SECTOR) as u32, None));
                    job.next += n;
                }
            }
        }
        let generation = job.generation;
        for (kind, sector, len, data) in issue {
            let Some(slot) = self.free_slot() else { break };
            if let Some(d) = data {
                io.hw.phys.write(self.addrs(slot).data, &d)?;
            }
            self.submit(io, slot, kind, sector, len, generation)?;
            if let Some(job) = &mut self.job {
                job.requests += 1;
            }
        }
        Ok(())
    }

    /// Reaps completions (at most `budget`); returns whether more are waiting.
    pub fn service<M: Mmio, P: Memory>(
        &mut self,
        io: &mut Io<'_, M, P>,
        budget: usize,
    ) -> Result<bool, VirtioError> {
        let more = io.reap(0, budget, |io, used| {
            let slot = used.token as usize;
            // pop_used only returns tokens this driver added.
            let Some(s) = self.slots.get(slot).copied().filter(|s| s.busy) else {
                return Ok(());
            };
            self.slots[slot].busy = false;
            let status = Status::from_byte(io.hw.phys.read_u8(self.addrs(slot).status)?);
            self.complete(io, slot, s, status)
        })?;
        self.pump(io)?;
        Ok(more)
    }

    fn complete<M: Mmio, P: Memory>(
        &mut self,
        io: &mut Io<'_, M, P>,
        slot: usize,
        s: Slot,
        status: Status,
    ) -> Result<(), VirtioError> {
        let kind = s.kind.unwrap_or(Kind::Read);
        if status == Status::Ok {
            match kind {
                Kind::Read => {
                    self.stats.reads += 1;
                    self.stats.bytes_read += u64::from(s.len);
                }
                Kind::Write => {
                    self.stats.writes += 1;
                    self.stats.bytes_written += u64::from(s.len);
                }
                Kind::Flush => self.stats.flushes += 1,
                Kind::GetId => {}
            }
        } else if kind != Kind::GetId {
            self.stats.errors += 1;
        }
        if kind == Kind::GetId {
            if status == Status::Ok {
                let mut id = vec![0u8; VIRTIO_BLK_ID_BYTES];
                io.hw.phys.read(self.addrs(slot).data, &mut id)?;
                self.serial = Some(id);
            }
            return Ok(());
        }
        let flush = self.has_flush();
        let Some(job) = self.job.as_mut().filter(|j| j.generation == s.job) else {
            // A cancelled job's request.
            return Ok(());
        };
        if status != Status::Ok {
            let what = match kind {
                Kind::Read => "read",
                Kind::Write => "write",
                _ => "flush",
            };
            let msg = format!("blk: {}: {what} of sector {}: {status}\n", self.name, s.sector);
            io.log(
                3,
                &format!("[{}] {what} of sector {}: {status}", self.name, s.sector),
            );
            let console = job.console;
            self.job = None;
            io.sink.output.push((console, msg, true));
            return Ok(());
        }
        match (kind, &mut job.work) {
            (
                Kind::Write,
                Work::Fill {
                    written, flushing, ..
                },
            ) => {
                *written += u64::from(s.len) / SECTOR;
                if *written >= job.end {
                    if flush {
                        *flushing = true;
                        let generation = job.generation;
                        if let Some(slot) = self.free_slot() {
                            self.submit(io, slot, Kind::Flush, 0, 0, generation)?;
                        }
                    } else {
                        self.finish(io);
                    }
                }
            }
            (Kind::Write, Work::Write { stage, .. }) if flush => {
                *stage = WriteStage::Flushing;
                let generation = job.generation;
                if let Some(slot) = self.free_slot() {
                    self.submit(io, slot, Kind::Flush, 0, 0, generation)?;
                }
            }
            (Kind::Write | Kind::Flush, _) => self.finish(io),
            _ => {
                job.ready.insert(s.sector, slot);
                self.consume(io)?;
            }
        }
        Ok(())
    }

    /// Consumes completed reads in sector order.
    fn consume<M: Mmio, P: Memory>(&mut self, io: &mut Io<'_, M, P>) -> Result<(), VirtioError> {
        let mut buf = Vec::new();
        loop {
            let Some(job) = &mut self.job else { return Ok(()) };
            let Some(slot) = job.ready.remove(&job.consumed) else {
                break;
            };
            let n = (u64::from(self.chunk) / SECTOR).min(job.end - job.consumed);
            let len = (n * SECTOR) as usize;
            let at = job.consumed;
            job.consumed += n;
            match &mut job.work {
                Work::Read => {
                    buf.resize(len, 0);
                    io.hw
                        .phys
                        .read(self.data.at(slot as u64 * u64::from(SLOT_DATA)), &mut buf)?;
                    let text = shell::hexdump(at * SECTOR, &buf);
                    io.sink.output.push((job.console, text, false));
                }
                Work::Sha256 { hasher, .. } => {
                    buf.resize(len, 0);
                    io.hw
                        .phys
                        .read(self.data.at(slot as u64 * u64::from(SLOT_DATA)), &mut buf)?;
                    hasher.update(&buf);
                }
                Work::Bench | Work::Write { .. } | Work::Fill { .. } => {}
            }
        }
        let done = self.job.as_ref().is_some_and(|j| j.consumed >= j.end);
        if done {
            self.finish(io);
        }
        Ok(())
    }

    // The throughput figure is floating point, for display only.
    #[allow(clippy::cast_precision_loss)]
    fn finish<M: Mmio, P: Memory>(&mut self, io: &mut Io<'_, M, P>) {
        let Some(job) = self.job.take() else { return };
        let elapsed = io.now.saturating_duration_since(job.started);
        let text = match job.work {
            Work::Read => String::new(),
            Work::Write { sector, data, .. } => format!(
                "wrote {} bytes ({} sectors) to {} at sector {sector}{}\n",
                data.len(),
                job.end - sector,
                self.name,
                if self.has_flush() { ", flushed" } else { "" }
            ),
            Work::Sha256 { hasher, whole } => {
                let hex: String = hasher.finalize().iter().fold(String::new(), |mut s, b| {
                    let _ = write!(s, "{b:02x}");
                    s
                });
                if whole {
                    format!("{hex}  /dev/{}\n", self.name)
                } else {
                    format!("{hex}  /dev/{} (first {} sectors)\n", self.name, job.end)
                }
            }
            Work::Bench | Work::Fill { .. } => {
                let bytes = job.end * SECTOR;
                let secs = elapsed.as_secs_f64().max(1e-9);
                let fill = matches!(job.work, Work::Fill { .. });
                format!(
                    "{}: {} {} in {:.1} ms: {:.1} MiB/s, {} requests of up to {} KiB, {SLOTS} in flight{}\n",
                    self.name,
                    if fill { "wrote" } else { "read" },
                    shell::size_str(bytes, true),
                    secs * 1e3,
                    bytes as f64 / secs / f64::from(1 << 20),
                    job.requests,
                    self.chunk >> 10,
                    if fill && self.has_flush() { ", flushed" } else { "" }
                )
            }
        };
        io.sink.output.push((job.console, text, true));
    }

    /// ctrl-C on `console`: its job is dropped (requests in flight complete
    /// into nothing).
    pub fn cancel(&mut self, console: u32) -> bool {
        if self.job.as_ref().is_some_and(|j| j.console == console) {
            self.job = None;
            return true;
        }
        false
    }

    /// The device goes away: a running job ends with a message.
    pub fn stop(&mut self, output: &mut Vec<(u32, String, bool)>) {
        if let Some(job) = self.job.take() {
            output.push((job.console, format!("blk: {}: device removed\n", self.name), true));
        }
    }
}

fn read_config<M: Mmio, P: Memory>(io: &Io<'_, M, P>) -> Result<VirtioBlkConfig, ProbeError> {
    let mut raw = [0u8; VirtioBlkConfig::SIZE];
    let n = usize::from(io.vdev.desc().config_len).min(raw.len());
    if n < 8 {
        return Err(ProbeError::Config("config space too small for a capacity"));
    }
    io.vdev
        .read_config(&io.hw.phys, 0, &mut raw[..n])
        .map_err(|_| ProbeError::Config("config space unreadable"))?;
    Ok(VirtioBlkConfig::from_bytes(&raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: SlotAddrs = SlotAddrs {
        hdr: 0x100,
        status: 0x110,
        data: 0x1000,
    };

    #[test]
    fn requests_are_header_data_status() {
        let (hdr, chain) = request(Kind::Read, 7, AT, 1024);
        assert_eq!((hdr.ty, hdr.sector), (VIRTIO_BLK_T_IN, 7));
        assert_eq!(
            chain,
            [
                Buf {
                    addr: 0x100,
                    len: 16,
                    write: false
                },
                Buf {
                    addr: 0x1000,
                    len: 1024,
                    write: true
                },
                Buf {
                    addr: 0x110,
                    len: 1,
                    write: true
                },
            ]
        );
        let (hdr, chain) = request(Kind::Write, 9, AT, 512);
        assert_eq!((hdr.ty, hdr.sector), (VIRTIO_BLK_T_OUT, 9));
        assert!(!chain[1].write && chain[2].write);
        let (hdr, chain) = request(Kind::Flush, 9, AT, 512);
        assert_eq!((hdr.ty, hdr.sector), (VIRTIO_BLK_T_FLUSH, 0));
        assert_eq!(chain.len(), 2);
        let (hdr, chain) = request(Kind::GetId, 0, AT, 0);
        assert_eq!(hdr.ty, VIRTIO_BLK_T_GET_ID);
        assert_eq!(
            chain[1],
            Buf {
                addr: 0x1000,
                len: 20,
                write: true
            }
        );
        assert_eq!(&hdr.to_bytes()[..4], &8u32.to_le_bytes());
    }

    #[test]
    fn the_fill_pattern_is_its_words_in_order() {
        let cases = [
            (0u64, 0usize),
            (0, 21),
            (4096, 64 << 10),
            (8, 7),
            (8 * 1000, 8 * 30 + 3),
        ];
        for seed in [3, u64::MAX, 0x1234_5678_9abc_def0] {
            for (off, len) in cases {
                let words: Vec<u8> = (0..len.div_ceil(8) as u64)
                    .flat_map(|i| fill_word(seed, off + 8 * i))
                    .take(len)
                    .collect();
                assert!(
                    fill_pattern(seed, off, len) == words,
                    "seed {seed}, at {off}, {len} bytes"
                );
            }
        }
    }

    #[test]
    fn status_bytes() {
        assert_eq!(Status::from_byte(0), Status::Ok);
        assert_eq!(Status::from_byte(1), Status::IoErr);
        assert_eq!(Status::from_byte(2), Status::Unsupported);
        assert_eq!(Status::from_byte(7).to_string(), "bad status 0x07 from the host");
        assert_eq!(
            Status::from_byte(STATUS_UNSET).to_string(),
            "no status from the host"
        );
    }
}
