//! The device page: bootparam access and a bounds-checked descriptor walker.
//!
//! The page is shared with the other side, which may write anything into it.
//! The walker therefore validates every descriptor before yielding it (header
//! and tail inside the page, `num_vq ≤ 4`, aligned size ≤ 256, every vq
//! `num ≤ 128`); a malformed entry yields one error item and ends the walk.
//! Nothing here indexes out of bounds or panics, whatever the page holds.

use crate::abi::{
    BP_MAGIC, DESC_TAIL, DESC_TYPE_END, DESC_TYPE_REMOVED, MIC_DP_SIZE, MIC_MAGIC, MIC_MAX_DESC_BLK_SIZE,
    MIC_MAX_VRING_ENTRIES, MIC_MAX_VRINGS, MicBootparam, MicDeviceCtrl, MicDeviceDesc, MicVqconfig, VQ_NUM,
    aligned_desc_size, total_desc_size,
};
use crate::hw::{MemError, Memory, offset_addr};

/// Offset of the first descriptor: right after the 16-byte bootparam.
pub const FIRST_DESC_OFFSET: usize = MicBootparam::SIZE;

/// Why a descriptor was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DescErrorKind {
    /// The 8-byte header does not fit in the page.
    HeaderOutOfPage,
    /// `num_vq` exceeds [`MIC_MAX_VRINGS`].
    TooManyVqs(u8),
    /// The 8-aligned descriptor size exceeds [`MIC_MAX_DESC_BLK_SIZE`].
    BlockTooLarge(usize),
    /// Descriptor plus control block end past the page (`end` is exclusive).
    OutOfPage {
        /// Offset just past the `device_ctrl`.
        end: usize,
    },
    /// A vqconfig's `num` exceeds [`MIC_MAX_VRING_ENTRIES`].
    VringTooLarge {
        /// Which virtqueue.
        index: u8,
        /// The `num` found.
        num: u16,
    },
    /// The page could not be read.
    Mem(MemError),
}

/// A rejected descriptor at `offset` in the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevPageError {
    /// Offset of the descriptor in the device page.
    pub offset: usize,
    /// What is wrong with it.
    pub kind: DescErrorKind,
}

impl core::fmt::Display for DevPageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "bad device descriptor at {:#x}: ", self.offset)?;
        match self.kind {
            DescErrorKind::HeaderOutOfPage => write!(f, "header past the page end"),
            DescErrorKind::TooManyVqs(n) => write!(f, "num_vq {n} > {MIC_MAX_VRINGS}"),
            DescErrorKind::BlockTooLarge(n) => {
                write!(f, "descriptor size {n} > {MIC_MAX_DESC_BLK_SIZE}")
            }
            DescErrorKind::OutOfPage { end } => write!(f, "block ends at {end:#x}, past the page"),
            DescErrorKind::VringTooLarge { index, num } => {
                write!(f, "vq {index} num {num} > {MIC_MAX_VRING_ENTRIES}")
            }
            DescErrorKind::Mem(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for DevPageError {}

/// A validated descriptor: its offset in the page and its header. All offsets
/// returned by the methods are relative to the start of the page and lie
/// inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescLoc {
    /// Offset of the descriptor header in the device page.
    pub offset: usize,
    /// The header as read during the walk.
    pub desc: MicDeviceDesc,
}

impl DescLoc {
    /// Whether this is a removed (type -1) slot.
    #[must_use]
    pub fn is_removed(&self) -> bool {
        self.desc.ty == DESC_TYPE_REMOVED
    }

    /// Bytes of descriptor + control block.
    #[must_use]
    pub fn total_size(&self) -> usize {
        total_desc_size(&self.desc)
    }

    /// Offset just past the control block (≤ [`MIC_DP_SIZE`]).
    #[must_use]
    pub fn end(&self) -> usize {
        self.offset + self.total_size()
    }

    /// Page offset of vqconfig `i` (`i < num_vq`).
    #[must_use]
    pub fn vq_offset(&self, i: u8) -> Option<usize> {
        (i < self.desc.num_vq).then(|| self.offset + self.desc.vq_offset(i as usize))
    }

    /// Page offset of the host feature bytes.
    #[must_use]
    pub fn features_offset(&self) -> usize {
        self.offset + self.desc.features_offset()
    }

    /// Page offset of the guest-acked feature bytes.
    #[must_use]
    pub fn guest_features_offset(&self) -> usize {
        self.offset + self.desc.guest_features_offset()
    }

    /// Page offset of the config space.
    #[must_use]
    pub fn config_offset(&self) -> usize {
        self.offset + self.desc.config_offset()
    }

    /// Page offset of the `device_ctrl`.
    #[must_use]
    pub fn ctrl_offset(&self) -> usize {
        self.offset + self.desc.ctrl_offset()
    }

    /// The whole block (descriptor, tail, padding, ctrl) within `page`.
    #[must_use]
    pub fn block<'a>(&self, page: &'a [u8]) -> Option<&'a [u8]> {
        page.get(self.offset..self.end())
    }

    /// Vqconfig `i` read from `page`.
    #[must_use]
    pub fn vqconfig(&self, page: &[u8], i: u8) -> Option<MicVqconfig> {
        let off = self.vq_offset(i)?;
        page.get(off..off + MicVqconfig::SIZE)
            .and_then(|b| b.try_into().ok())
            .map(MicVqconfig::from_bytes)
    }

    /// Host feature bytes within `page`.
    #[must_use]
    pub fn host_features<'a>(&self, page: &'a [u8]) -> Option<&'a [u8]> {
        let off = self.features_offset();
        page.get(off..off + self.desc.feature_len as usize)
    }

    /// Guest-acked feature bytes within `page`.
    #[must_use]
    pub fn guest_features<'a>(&self, page: &'a [u8]) -> Option<&'a [u8]> {
        let off = self.guest_features_offset();
        page.get(off..off + self.desc.feature_len as usize)
    }

    /// Config space within `page`.
    #[must_use]
    pub fn config<'a>(&self, page: &'a [u8]) -> Option<&'a [u8]> {
        let off = self.config_offset();
        page.get(off..off + self.desc.config_len as usize)
    }

    /// The `device_ctrl` read from `page`.
    #[must_use]
    pub fn ctrl(&self, page: &[u8]) -> Option<MicDeviceCtrl> {
        let off = self.ctrl_offset();
        page.get(off..off + MicDeviceCtrl::SIZE)
            .and_then(|b| b.try_into().ok())
            .map(MicDeviceCtrl::from_bytes)
    }
}

/// Where the walker reads page bytes from.
trait Source {
    /// Bytes of the page that may be read (≤ [`MIC_DP_SIZE`]).
    fn limit(&self) -> usize;
    fn read(&self, off: usize, buf: &mut [u8]) -> Result<(), MemError>;
}

struct SliceSource<'a>(&'a [u8]);

impl Source for SliceSource<'_> {
    fn limit(&self) -> usize {
        self.0.len().min(MIC_DP_SIZE)
    }
    fn read(&self, off: usize, buf: &mut [u8]) -> Result<(), MemError> {
        let src = off
            .checked_add(buf.len())
            .and_then(|end| self.0.get(off..end))
            .ok_or(MemError::OutOfBounds {
                addr: off as u64,
                len: buf.len() as u64,
            })?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

struct MemSource<'m, M: Memory> {
    mem: &'m M,
    base: u64,
}

impl<M: Memory> Source for MemSource<'_, M> {
    fn limit(&self) -> usize {
        MIC_DP_SIZE
    }
    fn read(&self, off: usize, buf: &mut [u8]) -> Result<(), MemError> {
        self.mem.read(offset_addr(self.base, off as u64)?, buf)
    }
}

/// Walk position shared by both iterators.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    off: usize,
    done: bool,
    include_removed: bool,
}

impl Cursor {
    const fn new() -> Self {
        Self {
            off: FIRST_DESC_OFFSET,
            done: false,
            include_removed: false,
        }
    }

    fn next(&mut self, src: &impl Source) -> Option<Result<DescLoc, DevPageError>> {
        while !self.done {
            let offset = self.off;
            match read_desc(src, offset) {
                Ok(None) => self.done = true,
                Err(kind) => {
                    self.done = true;
                    return Some(Err(DevPageError { offset, kind }));
                }
                Ok(Some(loc)) => {
                    self.off = loc.end();
                    if !loc.is_removed() || self.include_removed {
                        return Some(Ok(loc));
                    }
                }
            }
        }
        None
    }
}

/// Reads and validates the descriptor at `offset`; `Ok(None)` ends the list.
fn read_desc(src: &impl Source, offset: usize) -> Result<Option<DescLoc>, DescErrorKind> {
    let limit = src.limit();
    if offset >= limit {
        return Ok(None);
    }
    if offset + DESC_TAIL > limit {
        return Err(DescErrorKind::HeaderOutOfPage);
    }
    let mut hdr = [0u8; MicDeviceDesc::SIZE];
    src.read(offset, &mut hdr).map_err(DescErrorKind::Mem)?;
    let desc = MicDeviceDesc::from_bytes(&hdr);
    if desc.ty == DESC_TYPE_END {
        return Ok(None);
    }
    if desc.num_vq > MIC_MAX_VRINGS {
        return Err(DescErrorKind::TooManyVqs(desc.num_vq));
    }
    let size = aligned_desc_size(&desc);
    if size > MIC_MAX_DESC_BLK_SIZE {
        return Err(DescErrorKind::BlockTooLarge(size));
    }
    let loc = DescLoc { offset, desc };
    let end = loc.end();
    if end > limit {
        return Err(DescErrorKind::OutOfPage { end });
    }
    for index in 0..desc.num_vq {
        let mut num = [0u8; 2];
        let off = offset + desc.vq_offset(index as usize) + VQ_NUM;
        src.read(off, &mut num).map_err(DescErrorKind::Mem)?;
        let num = u16::from_le_bytes(num);
        if num > MIC_MAX_VRING_ENTRIES {
            return Err(DescErrorKind::VringTooLarge { index, num });
        }
    }
    Ok(Some(loc))
}

/// Iterator over the descriptors of a device page held in a byte slice.
/// Only the first [`MIC_DP_SIZE`] bytes are considered; a shorter slice is
/// treated as a page that ends early.
#[derive(Debug, Clone)]
pub struct DevPageIter<'a> {
    page: &'a [u8],
    cur: Cursor,
}

impl DevPageIter<'_> {
    /// Also yield removed (type -1) slots instead of skipping them.
    #[must_use]
    pub fn with_removed(mut self) -> Self {
        self.cur.include_removed = true;
        self
    }
}

impl Iterator for DevPageIter<'_> {
    type Item = Result<DescLoc, DevPageError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.cur.next(&SliceSource(self.page))
    }
}

/// Walks the device page in `page`: start at offset 16, step by the total
/// descriptor size, stop at type 0 or the page end, skip type -1.
#[must_use]
pub fn walk(page: &[u8]) -> DevPageIter<'_> {
    DevPageIter {
        page,
        cur: Cursor::new(),
    }
}

/// Iterator over the descriptors of a device page at `base` in a [`Memory`].
/// Reads the page live (headers and vq sizes only), so it sees the other
/// side's latest writes.
#[derive(Debug)]
pub struct DevPageMemIter<'m, M: Memory> {
    mem: &'m M,
    base: u64,
    cur: Cursor,
}

impl<M: Memory> DevPageMemIter<'_, M> {
    /// Also yield removed (type -1) slots instead of skipping them.
    #[must_use]
    pub fn with_removed(mut self) -> Self {
        self.cur.include_removed = true;
        self
    }
}

impl<M: Memory> Iterator for DevPageMemIter<'_, M> {
    type Item = Result<DescLoc, DevPageError>;
    fn next(&mut self) -> Option<Self::Item> {
        let src = MemSource {
            mem: self.mem,
            base: self.base,
        };
        self.cur.next(&src)
    }
}

/// Like [`walk`], over the page at `base` in `mem`.
#[must_use]
pub fn walk_mem<M: Memory>(mem: &M, base: u64) -> DevPageMemIter<'_, M> {
    DevPageMemIter {
        mem,
        base,
        cur: Cursor::new(),
    }
}

// ---------------------------------------------------------------------------
// bootparam access
// ---------------------------------------------------------------------------

/// Writes the host's initial bootparam at `dp_base`: magic, the host's
/// `c2h_shutdown_db`, both h2c doorbells -1, status and `shutdown_card` 0.
pub fn init_bootparam(dp: &impl Memory, dp_base: u64, c2h_shutdown_db: i8) -> Result<(), MemError> {
    let bp = MicBootparam::host_initial(c2h_shutdown_db);
    dp.write(dp_base, &bp.to_bytes())
}

/// Reads the whole bootparam at `dp_base`.
pub fn read_bootparam(dp: &impl Memory, dp_base: u64) -> Result<MicBootparam, MemError> {
    let mut b = [0u8; MicBootparam::SIZE];
    dp.read(dp_base, &mut b)?;
    Ok(MicBootparam::from_bytes(&b))
}

/// Reads the bootparam magic at `dp_base` and checks it.
pub fn magic_ok(dp: &impl Memory, dp_base: u64) -> Result<bool, MemError> {
    Ok(dp.read_u32(offset_addr(dp_base, BP_MAGIC as u64)?)? == MIC_MAGIC)
}

/// Reads the byte at `dp_base + field` (a `BP_*`/`CTRL_*` page offset).
pub fn read_u8_at(dp: &impl Memory, dp_base: u64, field: usize) -> Result<u8, MemError> {
    dp.read_u8(offset_addr(dp_base, field as u64)?)
}

/// Writes the byte at `dp_base + field` (a `BP_*`/`CTRL_*` page offset).
pub fn write_u8_at(dp: &impl Memory, dp_base: u64, field: usize, v: u8) -> Result<(), MemError> {
    dp.write_u8(offset_addr(dp_base, field as u64)?, v)
}

/// debugfs `dp`: the bootparam, then every descriptor with its vqconfigs,
/// feature words, config bytes and control block, as the original dumped
/// the page. Works on a copy of the page (`page`), whatever it holds.
pub fn write_dump(page: &[u8], out: &mut impl core::fmt::Write) -> core::fmt::Result {
    let Some(bp) = MicBootparam::from_slice(page) else {
        return Ok(());
    };
    writeln!(out, "Bootparam: magic {:#x}", bp.magic)?;
    writeln!(out, "Bootparam: h2c_shutdown_db {}", bp.h2c_shutdown_db)?;
    writeln!(out, "Bootparam: h2c_config_db {}", bp.h2c_config_db)?;
    writeln!(out, "Bootparam: c2h_shutdown_db {}", bp.c2h_shutdown_db)?;
    writeln!(out, "Bootparam: shutdown_status {}", bp.shutdown_status)?;
    writeln!(out, "Bootparam: shutdown_card {}", bp.shutdown_card)?;
    for item in walk(page) {
        let d = match item {
            Ok(d) => d,
            Err(e) => {
                writeln!(out, "malformed descriptor: {e}")?;
                continue;
            }
        };
        writeln!(
            out,
            "Device type {} num_vq {} feature_len {} config_len {} status {:#x} at offset {:#x}",
            d.desc.ty, d.desc.num_vq, d.desc.feature_len, d.desc.config_len, d.desc.status, d.offset
        )?;
        for i in 0..d.desc.num_vq {
            if let Some(vq) = d.vqconfig(page, i) {
                writeln!(
                    out,
                    "  vqconfig[{i}]: address {:#x} used_address {:#x} num {}",
                    vq.address, vq.used_address, vq.num
                )?;
            }
        }
        let hex = |out: &mut dyn core::fmt::Write, what: &str, b: Option<&[u8]>| -> core::fmt::Result {
            write!(out, "  {what}:")?;
            for byte in b.unwrap_or(&[]) {
                write!(out, " {byte:02x}")?;
            }
            writeln!(out)
        };
        hex(out, "host features", d.host_features(page))?;
        hex(out, "guest features", d.guest_features(page))?;
        hex(out, "config", d.config(page))?;
        if let Some(c) = d.ctrl(page) {
            writeln!(
                out,
                "  ctrl: config_change {} vdev_reset {} guest_ack {} host_ack {} used_address_updated {} c2h_vdev_db {} h2c_vdev_db {}",
                c.config_change,
                c.vdev_reset,
                c.guest_ack,
                c.host_ack,
                c.used_address_updated,
                c.c2h_vdev_db,
                c.h2c_vdev_db
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{BP_H2C_CONFIG_DB, BP_SHUTDOWN_CARD, CTRL_C2H_VDEV_DB, MicVqconfig, desc_size};
    use crate::fake::FakeMem;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// Appends a descriptor block (with ctrl) at `off`; returns the next offset.
    fn put_desc(page: &mut [u8], off: usize, d: MicDeviceDesc, nums: &[u16]) -> usize {
        page[off..off + 8].copy_from_slice(&d.to_bytes());
        for (i, &num) in nums.iter().enumerate() {
            let vq = MicVqconfig {
                address: 0x80_0000_0000 + 0x2000 * i as u64,
                used_address: 0,
                num,
            };
            let o = off + d.vq_offset(i);
            page[o..o + 24].copy_from_slice(&vq.to_bytes());
        }
        let c = off + d.ctrl_offset();
        page[c..c + 16].copy_from_slice(&MicDeviceCtrl::host_initial().to_bytes());
        off + total_desc_size(&d)
    }

    fn dev(ty: i8, num_vq: u8, feature_len: u8, config_len: u8) -> MicDeviceDesc {
        MicDeviceDesc {
            ty,
            num_vq,
            feature_len,
            config_len,
            status: 0,
        }
    }

    fn collect(page: &[u8]) -> Vec<Result<DescLoc, DevPageError>> {
        walk(page).collect()
    }

    #[test]
    fn empty_page() {
        let page = [0u8; MIC_DP_SIZE];
        assert!(collect(&page).is_empty());
        assert!(collect(&[]).is_empty());
    }

    #[test]
    fn walks_skips_removed_and_stops_at_end() {
        let mut page = [0u8; MIC_DP_SIZE];
        let console = dev(3, 2, 4, 8);
        let o1 = put_desc(&mut page, 16, console, &[128, 128]);
        assert_eq!(o1, 16 + 88);
        let o2 = put_desc(&mut page, o1, dev(-1, 2, 4, 12), &[128, 128]);
        let o3 = put_desc(&mut page, o2, dev(2, 1, 4, 60), &[128]);
        // After the list end, garbage must not be looked at.
        page[o3 + 8] = 0xFF;
        let items = collect(&page);
        assert_eq!(items.len(), 2);
        let first = items[0].unwrap();
        assert_eq!(first.offset, 16);
        assert_eq!(first.desc, console);
        assert_eq!(first.end(), o1);
        assert_eq!(first.vq_offset(1), Some(16 + 32));
        assert_eq!(first.vq_offset(2), None);
        assert_eq!(first.vqconfig(&page, 1).unwrap().num, 128);
        assert_eq!(first.vqconfig(&page, 2), None);
        assert_eq!(first.host_features(&page).unwrap().len(), 4);
        assert_eq!(first.guest_features(&page).unwrap().len(), 4);
        assert_eq!(first.config(&page).unwrap().len(), 8);
        assert_eq!(first.ctrl(&page).unwrap().c2h_vdev_db, -1);
        assert_eq!(first.block(&page).unwrap().len(), 88);
        assert_eq!(first.ctrl_offset() + CTRL_C2H_VDEV_DB, 16 + 72 + 13);
        let second = items[1].unwrap();
        assert_eq!(second.offset, o2);
        assert_eq!(second.desc.ty, 2);

        let all: Vec<_> = walk(&page).with_removed().map(Result::unwrap).collect();
        assert_eq!(all.len(), 3);
        assert!(all[1].is_removed());
    }

    #[test]
    fn stops_at_page_end() {
        let mut page = [0u8; MIC_DP_SIZE];
        // Fill the page with 24-byte (no vq, no features, no config) devices.
        let mut off = 16;
        let mut n = 0;
        while off + 24 <= MIC_DP_SIZE {
            off = put_desc(&mut page, off, dev(5, 0, 0, 0), &[]);
            n += 1;
        }
        assert_eq!(off, MIC_DP_SIZE);
        assert_eq!(collect(&page).len(), n);
    }

    fn first_err(page: &[u8]) -> DevPageError {
        let items = collect(page);
        let last = items.last().unwrap();
        // An error is always the last item.
        last.unwrap_err()
    }

    #[test]
    fn rejects_malformed() {
        let mut page = [0u8; MIC_DP_SIZE];
        page[16..24].copy_from_slice(&dev(1, 5, 0, 0).to_bytes());
        assert_eq!(
            first_err(&page),
            DevPageError {
                offset: 16,
                kind: DescErrorKind::TooManyVqs(5)
            }
        );

        let mut page = [0u8; MIC_DP_SIZE];
        let big = dev(1, 4, 40, 80);
        assert!(aligned_desc_size(&big) > 256);
        page[16..24].copy_from_slice(&big.to_bytes());
        assert_eq!(
            first_err(&page).kind,
            DescErrorKind::BlockTooLarge(aligned_desc_size(&big))
        );

        // Valid fillers followed by a device whose ctrl crosses the page end.
        let d = dev(1, 0, 0, 240);
        let at = 16 + 24 * 161;
        let mut page2 = [0u8; MIC_DP_SIZE];
        page2[at..at + 8].copy_from_slice(&d.to_bytes());
        // Walk from `at` by placing a chain of filler devices before it.
        let mut off = 16;
        while off < at {
            off = put_desc(&mut page2, off, dev(4, 0, 0, 0), &[]);
        }
        assert_eq!(off, at);
        page2[at..at + 8].copy_from_slice(&d.to_bytes());
        let items = collect(&page2);
        assert_eq!(items.len(), (at - 16) / 24 + 1);
        assert_eq!(
            items.last().unwrap().unwrap_err(),
            DevPageError {
                offset: at,
                kind: DescErrorKind::OutOfPage {
                    end: at + total_desc_size(&d)
                }
            }
        );

        let mut page = [0u8; MIC_DP_SIZE];
        put_desc(&mut page, 16, dev(1, 2, 4, 12), &[128, 129]);
        assert_eq!(
            first_err(&page).kind,
            DescErrorKind::VringTooLarge { index: 1, num: 129 }
        );

        // A removed slot with bad sizes still ends the walk with an error.
        let mut page = [0u8; MIC_DP_SIZE];
        page[16..24].copy_from_slice(&dev(-1, 9, 0, 0).to_bytes());
        assert_eq!(first_err(&page).kind, DescErrorKind::TooManyVqs(9));

        // Short slice: header does not fit.
        let mut short = [0u8; 20];
        short[16] = 1;
        assert_eq!(first_err(&short).kind, DescErrorKind::HeaderOutOfPage);
    }

    #[test]
    fn mem_walker_matches_and_checks_bounds() {
        let mut page = [0u8; MIC_DP_SIZE];
        let o = put_desc(&mut page, 16, dev(3, 2, 4, 8), &[128, 128]);
        put_desc(&mut page, o, dev(1, 2, 4, 12), &[128, 64]);
        let mem = FakeMem::with_base(0x80_0000_0000, MIC_DP_SIZE);
        mem.fill(0x80_0000_0000, &page);
        let a: Vec<_> = walk(&page).collect();
        let b: Vec<_> = walk_mem(&mem, 0x80_0000_0000).collect();
        assert_eq!(a, b);
        assert_eq!(a.len(), 2);

        // Page partly outside the memory: the walk ends with a Mem error.
        let small = FakeMem::new(64);
        small.fill(0, &page[..64]);
        let items: Vec<_> = walk_mem(&small, 0).collect();
        assert!(matches!(
            items.last().unwrap(),
            Err(DevPageError {
                kind: DescErrorKind::Mem(_),
                ..
            })
        ));
        // Overflowing base.
        let items: Vec<_> = walk_mem(&small, u64::MAX - 4).collect();
        assert_eq!(items.len(), 1);
        assert!(items[0].is_err());
        let items: Vec<_> = walk_mem(&mem, 0).with_removed().collect();
        assert!(items[0].is_err());
    }

    #[test]
    fn bootparam_helpers() {
        let mem = FakeMem::new(MIC_DP_SIZE);
        mem.fill(0, &[0xAA; 16]);
        init_bootparam(&mem, 0, 0).unwrap();
        assert_eq!(
            mem.bytes(0, 16),
            [0x00, 0xEE, 0xFF, 0xC0, 0, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert!(magic_ok(&mem, 0).unwrap());
        let bp = read_bootparam(&mem, 0).unwrap();
        assert_eq!(bp, MicBootparam::host_initial(0));
        write_u8_at(&mem, 0, BP_SHUTDOWN_CARD, 1).unwrap();
        assert_eq!(read_u8_at(&mem, 0, BP_SHUTDOWN_CARD).unwrap(), 1);
        assert_eq!(read_u8_at(&mem, 0, BP_H2C_CONFIG_DB).unwrap(), 0xFF);
        mem.fill(0, &[0; 4]);
        assert!(!magic_ok(&mem, 0).unwrap());
        assert!(init_bootparam(&mem, MIC_DP_SIZE as u64 - 8, 0).is_err());
        assert!(read_u8_at(&mem, u64::MAX, 1).is_err());
        assert!(magic_ok(&mem, u64::MAX).is_err());
        assert!(read_bootparam(&mem, 4090).is_err());
        let _ = desc_size;
    }

    #[test]
    fn dump_shows_every_part_and_survives_garbage() {
        use std::string::String;
        let mut page = [0u8; MIC_DP_SIZE];
        page[..16].copy_from_slice(&MicBootparam::host_initial(0).to_bytes());
        let o = put_desc(&mut page, 16, dev(3, 2, 4, 12), &[128, 128]);
        page[o..o + 8].copy_from_slice(&dev(1, 9, 0, 0).to_bytes());
        let mut s = String::new();
        write_dump(&page, &mut s).unwrap();
        assert!(s.starts_with("Bootparam: magic 0xc0ffee00\n"), "{s}");
        assert!(s.contains("Device type 3 num_vq 2 feature_len 4 config_len 12 status 0x0 at offset 0x10"));
        assert!(
            s.contains("  vqconfig[1]: address 0x8000002000 used_address 0x0 num 128"),
            "{s}"
        );
        assert!(s.contains("  host features: 00 00 00 00\n"));
        assert!(s.contains("  ctrl: config_change 0 vdev_reset 0 guest_ack 0 host_ack 0 used_address_updated 0 c2h_vdev_db -1 h2c_vdev_db -1"));
        assert!(
            s.contains("malformed descriptor: bad device descriptor at 0x70: num_vq 9 > 4"),
            "{s}"
        );
        let mut t = String::new();
        write_dump(&page[..8], &mut t).unwrap();
        assert!(t.is_empty());
    }

    fn check_page(page: &[u8]) {
        let items: Vec<_> = walk(page).with_removed().collect();
        for (i, item) in items.iter().enumerate() {
            match item {
                Ok(loc) => {
                    assert!(loc.offset >= FIRST_DESC_OFFSET);
                    assert!(loc.end() <= MIC_DP_SIZE);
                    assert!(loc.block(page).is_some());
                    assert!(loc.ctrl(page).is_some());
                    assert!(loc.config(page).is_some());
                    assert!(loc.desc.num_vq <= MIC_MAX_VRINGS);
                    for q in 0..loc.desc.num_vq {
                        assert!(loc.vqconfig(page, q).unwrap().num <= MIC_MAX_VRING_ENTRIES);
                    }
                }
                Err(_) => assert_eq!(i, items.len() - 1, "error must end the walk"),
            }
        }
        let mem = FakeMem::new(MIC_DP_SIZE);
        mem.fill(0, page);
        let from_mem: Vec<_> = walk_mem(&mem, 0).with_removed().collect();
        assert_eq!(items, from_mem);
    }

    fn plausible_page() -> impl Strategy<Value = Vec<u8>> {
        let desc = (
            prop_oneof![Just(-1i8), Just(0), 1i8..6, any::<i8>()],
            0u8..6,
            0u8..10,
            0u8..60,
            prop::collection::vec(prop_oneof![Just(128u16), any::<u16>()], 4),
        );
        (prop::collection::vec(desc, 0..40), any::<u8>()).prop_map(|(descs, fill)| {
            let mut page = std::vec![fill; MIC_DP_SIZE];
            let mut off = 16;
            for (ty, nvq, fl, cl, nums) in descs {
                let d = dev(ty, nvq, fl, cl);
                if off + 8 > MIC_DP_SIZE {
                    break;
                }
                page[off..off + 8].copy_from_slice(&d.to_bytes());
                for (i, num) in nums.iter().take(nvq as usize).enumerate() {
                    let o = off + d.vq_offset(i) + VQ_NUM;
                    if o + 2 <= MIC_DP_SIZE {
                        page[o..o + 2].copy_from_slice(&num.to_le_bytes());
                    }
                }
                off += total_desc_size(&d);
            }
            page
        })
    }

    proptest! {
        #[test]
        fn arbitrary_pages_never_escape(page in prop::collection::vec(any::<u8>(), MIC_DP_SIZE)) {
            check_page(&page);
        }

        #[test]
        fn plausible_pages_never_escape(page in plausible_page()) {
            check_page(&page);
        }

        #[test]
        fn short_slices_never_escape(page in prop::collection::vec(any::<u8>(), 0..200)) {
            for loc in walk(&page).with_removed().flatten() {
                prop_assert!(loc.end() <= page.len());
            }
        }
    }
}
