//! The request parser against a ring that moves bytes exactly as the
//! driver's COPY_DESC does, for every case of virtio-anchors.md (b) 35.

use std::cell::{Cell, RefCell};

use proptest::prelude::*;

use super::*;

/// A chain: segments in order (readable ones first), moved as the
/// driver's ring walker moves them.
#[derive(Debug, Clone)]
pub(crate) struct Fake {
    segs: Vec<(Vec<u8>, bool)>,
    pos: usize,
    off: usize,
    moved: u32,
    /// The used entry's length, once completed.
    pub(crate) used: Option<u32>,
    pub(crate) copies: u32,
}

impl Fake {
    pub(crate) fn new(segs: Vec<(Vec<u8>, bool)>) -> Self {
        Self {
            segs,
            pos: 0,
            off: 0,
            moved: 0,
            used: None,
            copies: 0,
        }
    }

    pub(crate) fn shape(&self) -> ChainShape {
        let sum = |w: bool| {
            self.segs
                .iter()
                .filter(|s| s.1 == w)
                .map(|s| s.0.len() as u32)
                .sum()
        };
        ChainShape {
            readable: sum(false),
            writable: sum(true),
            descriptors: self.segs.len() as u16,
        }
    }

    /// The writable bytes, as the card sees them after the request.
    pub(crate) fn written(&self) -> Vec<u8> {
        self.segs
            .iter()
            .filter(|s| s.1)
            .flat_map(|s| s.0.clone())
            .collect()
    }

    pub(crate) fn status(&self) -> Option<u8> {
        self.written().last().copied()
    }
}

impl Ring for Fake {
    type Error = ();

    fn copy(&mut self, bufs: &mut [IoSliceMut<'_>], complete: bool) -> Result<u32, ()> {
        assert!(self.used.is_none(), "a copy after the chain was completed");
        self.copies += 1;
        let mut n = 0u32;
        for b in bufs.iter_mut() {
            let mut at = 0;
            while at < b.len() && self.pos < self.segs.len() {
                let (seg, write) = &mut self.segs[self.pos];
                let k = (seg.len() - self.off).min(b.len() - at);
                if *write {
                    seg[self.off..self.off + k].copy_from_slice(&b[at..at + k]);
                } else {
                    b[at..at + k].copy_from_slice(&seg[self.off..self.off + k]);
                }
                at += k;
                self.off += k;
                n += k as u32;
                if self.off == seg.len() {
                    self.pos += 1;
                    self.off = 0;
                }
            }
        }
        self.moved += n;
        if complete && n > 0 {
            self.used = Some(self.moved);
        }
        Ok(n)
    }
}

pub(crate) struct Img {
    pub(crate) data: RefCell<Vec<u8>>,
    pub(crate) ro: bool,
    pub(crate) fail: bool,
    pub(crate) flushes: Cell<u32>,
}

impl Img {
    pub(crate) fn new(sectors: usize) -> Self {
        Self {
            data: RefCell::new((0..sectors * 512).map(|i| (i % 251) as u8).collect()),
            ro: false,
            fail: false,
            flushes: Cell::new(0),
        }
    }
}

impl Disk for Img {
    fn size(&self) -> u64 {
        self.data.borrow().len() as u64
    }
    fn read_only(&self) -> bool {
        self.ro
    }
    fn serial(&self) -> [u8; 20] {
        *b"serial-0123456789abc"
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        if self.fail {
            return Err(std::io::Error::other("injected"));
        }
        let d = self.data.borrow();
        buf.copy_from_slice(&d[off as usize..off as usize + buf.len()]);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
        if self.fail {
            return Err(std::io::Error::other("injected"));
        }
        self.data.borrow_mut()[off as usize..off as usize + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        self.flushes.set(self.flushes.get() + 1);
        if self.fail {
            return Err(std::io::Error::other("injected"));
        }
        Ok(())
    }
}

pub(crate) type Seg = (Vec<u8>, bool);

pub(crate) fn hdr(ty: u32, sector: u64) -> Vec<u8> {
    VirtioBlkOutHdr {
        ty,
        ioprio: 0,
        sector,
    }
    .to_bytes()
    .to_vec()
}

pub(crate) fn r(b: Vec<u8>) -> (Vec<u8>, bool) {
    (b, false)
}

pub(crate) fn w(n: usize) -> (Vec<u8>, bool) {
    (vec![0xAA; n], true)
}

pub(crate) fn run(f: &mut Fake, disk: &Img) -> Served {
    let mut buf = vec![0u8; BUF_LEN];
    let shape = f.shape();
    let s = serve(f, shape, disk, &mut buf).unwrap();
    assert_eq!(
        f.used,
        Some(f.shape().total() as u32),
        "the whole chain is consumed and completed"
    );
    s
}

#[test]
fn a_read_fills_the_data_then_the_status() {
    let disk = Img::new(16);
    let mut f = Fake::new(vec![r(hdr(VIRTIO_BLK_T_IN, 2)), w(4096), w(1)]);
    let s = run(&mut f, &disk);
    assert_eq!(
        (s.kind, s.status, s.bytes),
        (Kind::Read, Some(VIRTIO_BLK_S_OK), 4096)
    );
    assert_eq!(&f.written()[..4096], &disk.data.borrow()[1024..1024 + 4096]);
    assert_eq!(f.copies, 2, "the header, then data and status in one copy");
}

#[test]
fn a_write_lands_in_the_image() {
    let disk = Img::new(16);
    let mut f = Fake::new(vec![r(hdr(VIRTIO_BLK_T_OUT, 1)), r(vec![7; 1024]), w(1)]);
    let s = run(&mut f, &disk);
    assert_eq!(
        (s.kind, s.status, s.bytes),
        (Kind::Write, Some(VIRTIO_BLK_S_OK), 1024)
    );
    assert!(disk.data.borrow()[512..1536].iter().all(|&b| b == 7));
    assert_eq!(disk.data.borrow()[1536], (1536 % 251) as u8);
}

#[test]
fn framing_is_not_assumed() {
    // The header split over two descriptors, the data over three, the
    // status in the same descriptor as the end of the data.
    let disk = Img::new(16);
    let h = hdr(VIRTIO_BLK_T_IN, 0);
    let mut f = Fake::new(vec![
        r(h[..5].to_vec()),
        r(h[5..].to_vec()),
        w(100),
        w(412),
        w(513),
    ]);
    let s = run(&mut f, &disk);
    assert_eq!(s.status, Some(VIRTIO_BLK_S_OK));
    assert_eq!(&f.written()[..1024], &disk.data.borrow()[..1024]);
}

#[test]
fn bad_requests_get_ioerr_or_unsupp() {
    let ro = Img {
        ro: true,
        ..Img::new(16)
    };
    let cases: Vec<(&str, Vec<Seg>, &Img, u8)> = vec![
        (
            "short header",
            vec![r(vec![0; 12]), w(1)],
            &ro,
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "header in a writable buffer",
            vec![w(16), w(1)],
            &ro,
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "data not in sectors",
            vec![r(hdr(VIRTIO_BLK_T_IN, 0)), w(100), w(1)],
            &ro,
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "beyond the end",
            vec![r(hdr(VIRTIO_BLK_T_IN, 15)), w(1024), w(1)],
            &ro,
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "sector × 512 overflows",
            vec![r(hdr(VIRTIO_BLK_T_IN, u64::MAX / 256)), w(512), w(1)],
            &ro,
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "offset + length overflows",
            vec![r(hdr(VIRTIO_BLK_T_IN, u64::MAX / 512)), w(1024), w(1)],
            &ro,
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "a read with readable data",
            vec![r(hdr(VIRTIO_BLK_T_IN, 0)), r(vec![1; 512]), w(1)],
            &ro,
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "a write with writable data",
            vec![r(hdr(VIRTIO_BLK_T_OUT, 0)), w(512), w(1)],
            &ro,
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "a write to a read-only image",
            vec![r(hdr(VIRTIO_BLK_T_OUT, 0)), r(vec![9; 512]), w(1)],
            &ro,
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "GET_ID with a short buffer",
            vec![r(hdr(VIRTIO_BLK_T_GET_ID, 0)), w(10), w(1)],
            &ro,
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "unknown type",
            vec![r(hdr(42, 0)), w(1)],
            &ro,
            VIRTIO_BLK_S_UNSUPP,
        ),
        (
            "unknown type with data",
            vec![r(hdr(0x8000_0000, 0)), r(vec![1; 512]), w(512), w(1)],
            &ro,
            VIRTIO_BLK_S_UNSUPP,
        ),
    ];
    for (what, segs, disk, want) in cases {
        let before = disk.data.borrow().clone();
        let mut f = Fake::new(segs);
        let s = run(&mut f, disk);
        assert_eq!(s.status, Some(want), "{what}");
        assert_eq!(f.status(), Some(want), "{what}: the card sees it");
        assert!(s.why.is_some(), "{what}");
        assert_eq!(*disk.data.borrow(), before, "{what}: the image is untouched");
        let w = f.written();
        assert!(
            w[..w.len() - 1].iter().all(|&b| b == 0),
            "{what}: writable data zeroed, never host bytes"
        );
    }
}

#[test]
fn no_room_for_a_status_is_consumed_and_completed() {
    let disk = Img::new(4);
    let mut f = Fake::new(vec![r(hdr(VIRTIO_BLK_T_IN, 0)), r(vec![0; 600])]);
    let s = run(&mut f, &disk);
    assert_eq!((s.kind, s.status), (Kind::Malformed, None));
}

#[test]
fn get_id_flush_and_io_errors() {
    let disk = Img::new(4);
    let mut f = Fake::new(vec![r(hdr(VIRTIO_BLK_T_GET_ID, 0)), w(20), w(1)]);
    assert_eq!(run(&mut f, &disk).status, Some(VIRTIO_BLK_S_OK));
    assert_eq!(&f.written()[..20], b"serial-0123456789abc");
    let mut f = Fake::new(vec![r(hdr(VIRTIO_BLK_T_GET_ID, 0)), w(30), w(1)]);
    assert_eq!(run(&mut f, &disk).status, Some(VIRTIO_BLK_S_OK));
    assert_eq!(&f.written()[20..30], &[0; 10]);
    let mut f = Fake::new(vec![r(hdr(VIRTIO_BLK_T_FLUSH, 0)), w(1)]);
    let s = run(&mut f, &disk);
    assert_eq!((s.kind, s.status), (Kind::Flush, Some(VIRTIO_BLK_S_OK)));
    assert_eq!(disk.flushes.get(), 1);
    let broken = Img {
        fail: true,
        ..Img::new(4)
    };
    for segs in [
        vec![r(hdr(VIRTIO_BLK_T_FLUSH, 0)), w(1)],
        vec![r(hdr(VIRTIO_BLK_T_IN, 0)), w(512), w(1)],
        vec![r(hdr(VIRTIO_BLK_T_OUT, 0)), r(vec![1; 512]), w(1)],
    ] {
        let mut f = Fake::new(segs);
        assert_eq!(run(&mut f, &broken).status, Some(VIRTIO_BLK_S_IOERR));
        let w = f.written();
        assert!(w[..w.len() - 1].iter().all(|&b| b == 0));
    }
}

#[test]
fn requests_larger_than_a_chunk_are_served_in_pieces() {
    let disk = Img::new(8192);
    let data: Vec<u8> = (0..3 * CHUNK + 512).map(|i| (i * 7 % 256) as u8).collect();
    let mut f = Fake::new(vec![r(hdr(VIRTIO_BLK_T_OUT, 3)), r(data.clone()), w(1)]);
    assert_eq!(run(&mut f, &disk).status, Some(VIRTIO_BLK_S_OK));
    assert_eq!(&disk.data.borrow()[1536..1536 + data.len()], &data[..]);
    let mut f = Fake::new(vec![r(hdr(VIRTIO_BLK_T_IN, 3)), w(data.len()), w(1)]);
    assert_eq!(run(&mut f, &disk).status, Some(VIRTIO_BLK_S_OK));
    assert_eq!(&f.written()[..data.len()], &data[..]);
    assert_eq!(
        f.copies, 5,
        "a header, then four pieces, the last with the status"
    );
}

#[test]
fn a_chain_rewritten_in_flight_is_aborted_and_completed() {
    let disk = Img::new(16);
    // The shape promised 1024 bytes of data; the chain has 512.
    let mut f = Fake::new(vec![r(hdr(VIRTIO_BLK_T_IN, 0)), w(512), w(1)]);
    let mut shape = f.shape();
    shape.writable = 1025;
    let mut buf = vec![0u8; BUF_LEN];
    match serve(&mut f, shape, &disk, &mut buf) {
        Err(Abort::Changed { completed }) => assert!(completed),
        other => panic!("{other:?}"),
    }
    assert!(f.used.is_some());
    // The shape promised less than the chain has: the request is served
    // as promised (512 bytes written, not 1024), the rest of the chain is
    // the card's problem, and nothing beyond the promise is touched.
    let mut f = Fake::new(vec![r(hdr(VIRTIO_BLK_T_OUT, 0)), r(vec![1; 1024]), w(1)]);
    let mut shape = f.shape();
    shape.readable = 16 + 512;
    let before = disk.data.borrow().clone();
    let r = serve(&mut f, shape, &disk, &mut buf);
    assert!(
        matches!(r, Ok(_) | Err(Abort::Changed { completed: true })),
        "{r:?}"
    );
    assert!(f.used.is_some(), "completed");
    assert!(disk.data.borrow()[..512].iter().all(|&b| b == 1));
    assert_eq!(
        disk.data.borrow()[512..],
        before[512..],
        "nothing past the promised range"
    );
}

#[test]
fn bounds() {
    assert!(in_bounds(0, 512, 512));
    assert!(!in_bounds(1, 512, 512));
    assert!(!in_bounds(0, 511, 512));
    assert!(in_bounds(1, 0, 512));
    assert!(!in_bounds(u64::MAX, 0, 512));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever chain the card builds, the request is consumed and
    /// completed, the status is one the card knows, OK only for a
    /// well-formed request inside the image, and nothing outside the
    /// image's bytes is touched.
    #[test]
    fn any_chain_is_answered(
        ty in prop_oneof![Just(0u32), Just(1), Just(4), Just(8), any::<u32>()],
        sector in prop_oneof![0u64..40, any::<u64>()],
        hdr_split in 1usize..16,
        readable in proptest::collection::vec(1usize..1500, 0..4),
        writable in proptest::collection::vec(1usize..1500, 0..4),
        short_hdr in any::<bool>(),
    ) {
        let disk = Img::new(32);
        let h = hdr(ty, sector);
        let mut segs = Vec::new();
        if short_hdr {
            segs.push(r(h[..hdr_split].to_vec()));
        } else {
            segs.push(r(h[..hdr_split].to_vec()));
            segs.push(r(h[hdr_split..].to_vec()));
        }
        for n in &readable {
            segs.push(r(vec![0x5A; *n]));
        }
        for n in &writable {
            segs.push(w(*n));
        }
        let mut f = Fake::new(segs);
        let s = run(&mut f, &disk);
        if writable.is_empty() {
            prop_assert_eq!(s.status, None);
        } else {
            let st = f.status().unwrap();
            prop_assert_eq!(Some(st), s.status);
            prop_assert!([VIRTIO_BLK_S_OK, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP].contains(&st));
            if st == VIRTIO_BLK_S_OK {
                // The header is the first 16 readable bytes, however split.
                prop_assert!(f.shape().readable >= 16);
                prop_assert!(matches!(s.kind, Kind::Read | Kind::Write | Kind::Flush | Kind::GetId));
            }
        }
        prop_assert_eq!(disk.data.borrow().len(), 32 * 512);
    }
}
