//! The queue against a ring of many chains that moves bytes and completes
//! chains exactly as the driver does (one chain held at a time, a batch's
//! stop rule), checked against [`request::serve`] one copy at a time.

use proptest::prelude::*;

use super::*;
use crate::devices::block::request::tests::{Fake, Img, Seg, hdr, r, run, w};
use mic_core::abi::virtio::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID,
    VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};

/// The driver's side of vring 0: chains in avail order, the one held
/// half-copied, the used entries in order, and the hand-offs.
struct Driver {
    chains: Vec<Fake>,
    /// The next chain to fetch (the driver's `last_avail`).
    next: usize,
    held: Option<usize>,
    /// Chains completed (`info.avail_idx`).
    completed: usize,
    /// (chain, used length), in completion order.
    used: Vec<(usize, u32)>,
    handoffs: u32,
    /// A hand-off (counted from 1) whose every copy the driver refuses.
    refuse: Option<u32>,
    /// Shapes the mapping shows instead of the chains' own (a card that
    /// rewrites chains after they were peeked).
    shown: Vec<Option<ChainShape>>,
}

impl Driver {
    fn new(chains: Vec<Vec<Seg>>) -> Self {
        let n = chains.len();
        Self {
            chains: chains.into_iter().map(Fake::new).collect(),
            next: 0,
            held: None,
            completed: 0,
            used: Vec::new(),
            handoffs: 0,
            refuse: None,
            shown: vec![None; n],
        }
    }

    fn one(&mut self, bufs: &mut [IoSliceMut<'_>], complete: bool) -> Result<u32, VdevError> {
        if self.refuse == Some(self.handoffs) {
            return Err(VdevError::Driver {
                card: 0,
                op: "COPY_DESC",
                errno: libc::EIO,
                meaning: "refused by the test",
            });
        }
        let i = match self.held {
            Some(i) => i,
            None if self.next < self.chains.len() => {
                self.next += 1;
                self.next - 1
            }
            None => return Ok(0),
        };
        let n = self.chains[i].copy(bufs, complete).unwrap();
        self.held = Some(i);
        if let Some(len) = self.chains[i].used {
            self.used.push((i, len));
            self.held = None;
            self.completed += 1;
        }
        Ok(n)
    }
}

impl Ring for Driver {
    type Error = VdevError;
    fn copy(&mut self, bufs: &mut [IoSliceMut<'_>], complete: bool) -> Result<u32, VdevError> {
        self.handoffs += 1;
        self.one(bufs, complete)
    }
}

impl Queue for Driver {
    fn peek(&self, skip: u16) -> Result<Option<ChainShape>, ChainError> {
        let i = self.completed + usize::from(skip);
        Ok(self
            .chains
            .get(i)
            .map(|c| self.shown[i].unwrap_or_else(|| c.shape())))
    }

    fn copy_each(&mut self, bufs: &mut [IoSliceMut<'_>], update_used: &[bool]) -> Result<Batch, VdevError> {
        self.handoffs += 1;
        let mut b = Batch::default();
        for (i, (buf, &u)) in bufs.iter_mut().zip(update_used).enumerate() {
            match self.one(std::slice::from_mut(buf), u) {
                Ok(0) => break,
                Ok(n) => {
                    b.lens[i] = n;
                    b.chains = i + 1;
                }
                Err(e) => {
                    b.error = Some(e);
                    break;
                }
            }
        }
        Ok(b)
    }
}

fn server() -> Server {
    Server::new(IoBuf::from(vec![0; BUF_LEN]), IoBuf::from(vec![0; BUF_LEN]))
}

/// Serves every chain with one round; returns what `done` heard.
fn round(d: &mut Driver, disk: &Img, budget: usize) -> (Result<End, Abort<VdevError>>, Vec<Served>) {
    let mut heard = Vec::new();
    let e = server().round(d, disk, budget, &mut |s| heard.push(s));
    (e, heard)
}

/// A mix of good and bad requests, every one of the fast shape: what the
/// card sees (used lengths, statuses, data) and what the image holds are
/// exactly what serving them one copy at a time gives, in one hand-off
/// per request (and one to complete the last).
#[test]
fn a_mix_of_good_and_bad_requests_is_answered_as_one_at_a_time_would() {
    let chains: Vec<Vec<Seg>> = vec![
        vec![r(hdr(VIRTIO_BLK_T_IN, 2)), w(4096), w(1)],
        vec![r(hdr(VIRTIO_BLK_T_OUT, 15)), r(vec![3; 1024]), w(1)], // past the end
        vec![r(hdr(VIRTIO_BLK_T_OUT, 4)), r(vec![7; 1024]), w(1)],
        vec![r(hdr(42, 0)), w(1)], // unknown type
        vec![r(hdr(VIRTIO_BLK_T_GET_ID, 0)), w(20), w(1)],
        vec![r(hdr(VIRTIO_BLK_T_IN, 0)), r(vec![1; 512]), w(1)], // readable data
        vec![r(hdr(VIRTIO_BLK_T_IN, 4)), w(1024), w(1)],         // reads chain 2's write
        vec![r(hdr(VIRTIO_BLK_T_GET_ID, 0)), w(10), w(1)],       // too little room
        vec![r(hdr(VIRTIO_BLK_T_FLUSH, 0)), w(1)],
        vec![r(hdr(VIRTIO_BLK_T_OUT, 0)), r(vec![9; 100]), w(1)], // not in sectors
        vec![r(hdr(VIRTIO_BLK_T_OUT, 0)), w(512), w(1)],          // writable data
        vec![r(hdr(VIRTIO_BLK_T_IN, 1)), w(512), w(1)],
    ];
    let disk = Img::new(16);
    let mut d = Driver::new(chains.clone());
    let (end, heard) = round(&mut d, &disk, 64);
    assert!(matches!(end, Ok(End::Empty)), "{end:?}");
    // One at a time, on an image of its own.
    let alone = Img::new(16);
    let want: Vec<(Served, Fake)> = chains
        .into_iter()
        .map(|segs| {
            let mut f = Fake::new(segs);
            (run(&mut f, &alone), f)
        })
        .collect();
    assert_eq!(heard.len(), want.len(), "every request heard of once");
    for (i, ((s, f), got)) in want.iter().zip(&heard).enumerate() {
        assert_eq!(got, s, "chain {i}: the same outcome");
        assert_eq!(
            d.used[i],
            (i, f.shape().total() as u32),
            "chain {i}: completed in order, whole"
        );
        assert_eq!(
            d.chains[i].written(),
            f.written(),
            "chain {i}: the card sees the same bytes"
        );
    }
    let statuses: Vec<Option<u8>> = d.chains.iter().map(Fake::status).collect();
    let (ok, err, unsupp) = (
        Some(VIRTIO_BLK_S_OK),
        Some(VIRTIO_BLK_S_IOERR),
        Some(VIRTIO_BLK_S_UNSUPP),
    );
    assert_eq!(
        statuses,
        [ok, err, ok, unsupp, ok, err, ok, err, ok, err, err, ok],
        "the statuses themselves"
    );
    assert_eq!(
        &d.chains[6].written()[..1024],
        &[7; 1024],
        "a read sees the write before it"
    );
    assert_eq!(*disk.data.borrow(), *alone.data.borrow(), "the same image");
    assert_eq!(disk.flushes.get(), 1);
    assert_eq!(d.handoffs, 12 + 1, "one hand-off per request, one to end");
    assert!(d.held.is_none(), "nothing left held");
}

/// Chains that do not fit two copies are served one copy at a time, in
/// their place, after the answer before them is sent.
#[test]
fn odd_shapes_in_between_are_served_in_their_place() {
    let big = 2 * CHUNK_FOR_TEST + 512;
    let chains: Vec<Vec<Seg>> = vec![
        vec![r(hdr(VIRTIO_BLK_T_IN, 0)), w(512), w(1)],
        vec![r(hdr(VIRTIO_BLK_T_IN, 0)[..8].to_vec()), w(1)], // a short header
        vec![r(hdr(VIRTIO_BLK_T_OUT, 0)), r(vec![5; big]), w(1)], // more than a chunk
        vec![r(hdr(VIRTIO_BLK_T_IN, 0)), r(vec![0; 600])],    // no status byte
        vec![r(hdr(VIRTIO_BLK_T_IN, 1)), w(512), w(1)],
    ];
    let disk = Img::new(8192);
    let mut d = Driver::new(chains.clone());
    let (end, heard) = round(&mut d, &disk, 64);
    assert!(matches!(end, Ok(End::Empty)), "{end:?}");
    let alone = Img::new(8192);
    for (i, segs) in chains.into_iter().enumerate() {
        let mut f = Fake::new(segs);
        assert_eq!(heard[i], run(&mut f, &alone), "chain {i}");
        assert_eq!(d.used[i], (i, f.shape().total() as u32), "chain {i}");
        assert_eq!(d.chains[i].written(), f.written(), "chain {i}");
    }
    assert_eq!(*disk.data.borrow(), *alone.data.borrow());
    assert!(disk.data.borrow()[..big].iter().all(|&b| b == 5));
}

const CHUNK_FOR_TEST: usize = request::CHUNK;

#[test]
fn the_budget_ends_a_round_with_nothing_held() {
    let chains = (0..5)
        .map(|i| vec![r(hdr(VIRTIO_BLK_T_IN, i)), w(512), w(1)])
        .collect();
    let disk = Img::new(16);
    let mut d = Driver::new(chains);
    let mut s = server();
    let mut heard = 0;
    let e = s.round(&mut d, &disk, 3, &mut |_| heard += 1);
    assert!(matches!(e, Ok(End::Budget)), "{e:?}");
    assert_eq!((heard, d.used.len(), d.held), (3, 3, None));
    let e = s.round(&mut d, &disk, 3, &mut |_| heard += 1);
    assert!(matches!(e, Ok(End::Empty)), "{e:?}");
    assert_eq!((heard, d.used.len(), d.held), (5, 5, None));
}

/// A refused hand-off ends the round with the driver's error; what was
/// completed before it was heard of, nothing after it was.
#[test]
fn a_refusal_stops_the_round_and_nothing_is_heard_twice() {
    let chains = (0..4)
        .map(|i| vec![r(hdr(VIRTIO_BLK_T_OUT, i)), r(vec![1; 512]), w(1)])
        .collect();
    let disk = Img::new(16);
    let mut d = Driver::new(chains);
    d.refuse = Some(3);
    let (e, heard) = round(&mut d, &disk, 64);
    match e {
        Err(Abort::Ring(e)) => assert_eq!(e.errno(), Some(libc::EIO)),
        other => panic!("{other:?}"),
    }
    // Hand-off 1 fetched chain 0, 2 completed it and fetched chain 1, 3
    // was refused: chain 0 completed and heard of, chain 1 held.
    assert_eq!((heard.len(), d.used.len(), d.held), (1, 1, Some(1)));
}

/// A card that rewrites a chain after it was peeked: the answer's short
/// completing copy is noticed, and the chain fetched beside it is
/// completed with IOERR bytes, never the buffer's old contents.
#[test]
fn a_chain_rewritten_after_its_peek_stops_the_round() {
    let chains = vec![
        vec![r(hdr(VIRTIO_BLK_T_IN, 0)), w(512), w(1)],
        vec![r(hdr(VIRTIO_BLK_T_IN, 0)), w(512), w(1)],
    ];
    let disk = Img::new(16);
    let mut d = Driver::new(chains);
    // The mapping promised chain 0 twice the room it has.
    let mut lie = d.chains[0].shape();
    lie.writable = 1025;
    d.shown[0] = Some(lie);
    let (e, heard) = round(&mut d, &disk, 64);
    assert!(matches!(e, Err(Abort::Changed { completed: true })), "{e:?}");
    assert!(heard.is_empty(), "neither is counted as answered");
    assert_eq!(d.used, [(0, 529), (1, 32)], "both completed, nothing held");
    assert!(d.held.is_none());
    let w1 = d.chains[1].written();
    assert!(
        w1[..16].iter().all(|&b| b == VIRTIO_BLK_S_IOERR),
        "{:?}",
        &w1[..16]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever requests the card queues, the queue answers each as
    /// serving it alone would, completes each whole and in order, and
    /// leaves the same image.
    #[test]
    fn any_queue_is_served_as_one_at_a_time(
        reqs in proptest::collection::vec(
            (
                prop_oneof![Just(0u32), Just(1), Just(4), Just(8), Just(99)],
                0u64..40,
                0usize..3,
                0usize..3,
                any::<bool>(),
            ),
            1..12,
        ),
        budget in 1usize..16,
    ) {
        let chains: Vec<Vec<Seg>> = reqs
            .iter()
            .map(|&(ty, sector, rd, wr, status)| {
                let mut segs = vec![r(hdr(ty, sector))];
                segs.extend((0..rd).map(|k| r(vec![k as u8 + 1; 512])));
                segs.extend((0..wr).map(|_| w(512)));
                if status {
                    segs.push(w(1));
                }
                segs
            })
            .collect();
        let disk = Img::new(32);
        let mut d = Driver::new(chains.clone());
        let mut s = server();
        let mut heard = Vec::new();
        for _ in 0..chains.len() {
            match s.round(&mut d, &disk, budget, &mut |x| heard.push(x)) {
                Ok(End::Empty) => break,
                Ok(End::Budget) => {}
                other => panic!("{other:?}"),
            }
        }
        let alone = Img::new(32);
        prop_assert_eq!(heard.len(), chains.len());
        for (i, segs) in chains.into_iter().enumerate() {
            let mut f = Fake::new(segs);
            prop_assert_eq!(heard[i], run(&mut f, &alone));
            prop_assert_eq!(d.used[i], (i, f.shape().total() as u32));
            prop_assert_eq!(d.chains[i].written(), f.written());
        }
        prop_assert_eq!(&*disk.data.borrow(), &*alone.data.borrow());
    }
}
