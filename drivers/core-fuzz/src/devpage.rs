//! Target `devpage`: the device-page walker over arbitrary pages, both over
//! a byte slice (`walk`) and over a [`Memory`] read live (`walk_mem`), with
//! the other side rewriting the page while the walk goes on; and debugfs
//! `dp`'s dump of the same pages (`write_dump`).
//!
//! Invariants: nothing panics; every descriptor yielded starts at or after
//! the bootparam, ends inside the page (and the slice), has `num_vq ≤ 4` and
//! vq sizes ≤ 128, and all its accessors find their bytes; an error is the
//! last item; a walk yields at most one item per 8 bytes of page; over a
//! memory holding the whole page, `walk_mem` yields what `walk` does; the
//! dump shows each device the walk yields, and is bounded.

use arbitrary::Arbitrary;
use mic_core::abi::{DESC_TAIL, MIC_DP_SIZE, MIC_MAX_VRING_ENTRIES, MIC_MAX_VRINGS, MicDeviceDesc};
use mic_core::devpage::{DescLoc, DevPageError, FIRST_DESC_OFFSET, walk, walk_mem, write_dump};
use mic_core::hw::Memory;

use crate::mem::Logged;

/// Most items a walk can yield: every block is longer than its header.
const MAX_ITEMS: usize = MIC_DP_SIZE / DESC_TAIL;

/// A whole input.
#[derive(Debug, Arbitrary)]
pub struct PageInput {
    /// The page (only the first 4096 bytes count; shorter is a page that
    /// ends early).
    pub page: Vec<u8>,
    /// Where the page sits in the memory `walk_mem` reads.
    pub base: u16,
    /// Bytes of that memory beyond `base` (the page, zero-filled, is cut
    /// short there when < 4096).
    pub mem_len: u16,
    /// Use a base near the top of the address space instead.
    pub high_base: bool,
    /// Writes by the other side, one after each item `walk_mem` yields:
    /// `(page offset, byte)`.
    pub live: Vec<(u16, u8)>,
}

fn check_loc(loc: &DescLoc, page: &[u8]) {
    let limit = page.len().min(MIC_DP_SIZE);
    assert!(loc.offset >= FIRST_DESC_OFFSET, "descriptor inside the bootparam");
    assert!(
        loc.offset < loc.end() && loc.end() <= limit,
        "block past the page"
    );
    assert!(loc.desc.num_vq <= MIC_MAX_VRINGS);
    assert!(loc.block(page).is_some() && loc.ctrl(page).is_some() && loc.config(page).is_some());
    assert!(loc.host_features(page).is_some() && loc.guest_features(page).is_some());
    for q in 0..loc.desc.num_vq {
        let vq = loc.vqconfig(page, q).expect("vqconfig inside the block");
        assert!(vq.num <= MIC_MAX_VRING_ENTRIES);
    }
    assert!(loc.vqconfig(page, loc.desc.num_vq).is_none());
}

fn check_items(items: &[Result<DescLoc, DevPageError>], page: &[u8]) {
    assert!(items.len() <= MAX_ITEMS, "walk yielded {} items", items.len());
    let mut last_end = FIRST_DESC_OFFSET;
    for (i, item) in items.iter().enumerate() {
        match item {
            Ok(loc) => {
                check_loc(loc, page);
                assert!(loc.offset >= last_end, "walk went backwards");
                last_end = loc.end();
            }
            Err(_) => assert_eq!(i + 1, items.len(), "an error ends the walk"),
        }
    }
}

/// debugfs `dp` over the same page: one `Device type` line per device the
/// walk yields, the error if it ended in one, and bounded output.
fn check_dump(page: &[u8], items: &[Result<DescLoc, DevPageError>]) {
    let mut dump = String::new();
    write_dump(page, &mut dump).expect("a String takes everything");
    let devices = dump.lines().filter(|l| l.starts_with("Device type ")).count();
    assert_eq!(devices, items.iter().filter(|i| i.is_ok()).count());
    let malformed = dump.lines().any(|l| l.starts_with("malformed descriptor: "));
    assert_eq!(malformed, items.last().is_some_and(Result::is_err));
    assert!(dump.len() <= 64 * MIC_DP_SIZE, "dump of {} bytes", dump.len());
}

/// Runs the fuzzer's bytes (decoded as a [`PageInput`]).
pub fn fuzz(data: &[u8]) {
    crate::run_bytes(data, run);
}

/// Runs one input.
pub fn run(input: &PageInput) {
    let page = &input.page[..input.page.len().min(2 * MIC_DP_SIZE)];
    let skipping: Vec<_> = walk(page).collect();
    let all: Vec<_> = walk(page).with_removed().collect();
    check_items(&skipping, page);
    check_items(&all, page);
    // Skipping removed slots only drops items.
    assert!(skipping.len() <= all.len());
    assert!(skipping.iter().all(|s| all.contains(s)));
    check_dump(page, &skipping);

    let base = if input.high_base {
        u64::MAX - u64::from(input.base)
    } else {
        u64::from(input.base)
    };
    let mem = Logged::new(usize::from(input.base) + usize::from(input.mem_len));
    // The page as memory holds it: the input, zero-filled to a page.
    let mut full = page[..page.len().min(MIC_DP_SIZE)].to_vec();
    full.resize(MIC_DP_SIZE, 0);
    let whole = usize::from(input.mem_len) >= MIC_DP_SIZE && !input.high_base;
    if !input.high_base {
        mem.raw
            .fill(base, &full[..usize::from(input.mem_len).min(MIC_DP_SIZE)]);
    }
    // The walker reads only the page, after the bootparam.
    let readable: Vec<(u64, u64)> = base
        .checked_add(MIC_DP_SIZE as u64)
        .map(|end| (base + FIRST_DESC_OFFSET as u64, end))
        .into_iter()
        .collect();
    let from_mem: Vec<_> = walk_mem(&mem, base).with_removed().collect();
    assert!(from_mem.len() <= MAX_ITEMS);
    mem.check_reads(&readable, "page memory");
    if whole {
        let from_slice: Vec<_> = walk(&full).with_removed().collect();
        assert_eq!(
            from_mem, from_slice,
            "walk_mem differs from walk over the same page"
        );
    }
    // Over a memory shorter than the page, the walker still reads only
    // inside it: each header it yields is there, as it read it.
    for (i, item) in from_mem.iter().enumerate() {
        match item {
            Ok(loc) => {
                assert!(loc.offset >= FIRST_DESC_OFFSET && loc.end() <= MIC_DP_SIZE);
                let mut hdr = [0u8; MicDeviceDesc::SIZE];
                mem.raw
                    .read(base + loc.offset as u64, &mut hdr)
                    .expect("a yielded header lies inside the memory");
                assert_eq!(MicDeviceDesc::from_bytes(&hdr), loc.desc);
            }
            Err(_) => assert_eq!(i + 1, from_mem.len()),
        }
    }

    // The other side rewrites the page as the walk goes on: each item is
    // still valid for the page as it was when the walker read it.
    if !whole || input.live.is_empty() {
        return;
    }
    let mut count = 0;
    let mut live = input.live.iter().cycle();
    for item in walk_mem(&mem, base).with_removed() {
        count += 1;
        assert!(count <= MAX_ITEMS, "live walk does not end");
        if let Ok(loc) = item {
            let mut hdr = [0u8; MicDeviceDesc::SIZE];
            mem.raw
                .read(base + loc.offset as u64, &mut hdr)
                .expect("header inside");
            assert_eq!(MicDeviceDesc::from_bytes(&hdr), loc.desc);
            let mut block = vec![0u8; loc.end()];
            mem.raw
                .read(base + loc.offset as u64, &mut block[loc.offset..])
                .expect("block inside");
            check_loc(&loc, &block);
        }
        let &(off, byte) = live.next().expect("cycle of a non-empty list");
        let off = u64::from(off) % MIC_DP_SIZE as u64;
        if base + off < mem.size() {
            mem.raw.fill(base + off, &[byte]);
        }
    }
    mem.check_reads(&readable, "page memory");
}
