//! The harness itself: a well-behaved card runs clean, and the checks bite.

use super::*;

fn desc_in(addr: u16, len: u32, flags: u16, next: u16) -> DescIn {
    DescIn {
        addr: Addr::Card(addr),
        len: Len::Raw(len),
        flags: Flags::Raw(flags),
        next,
    }
}

fn desc_op(index: u8, addr: u16, len: u32, flags: u16, next: u16) -> Op {
    Op::Desc {
        ring: 0,
        index,
        desc: desc_in(addr, len, flags, next),
    }
}

fn copy(cap: u16, update_used: bool) -> Op {
    Op::Copy {
        ring: 0,
        cap,
        update_used,
        fault_at: None,
    }
}

fn input(ops: Vec<Op>) -> VopInput {
    VopInput {
        rings: vec![RingInit {
            log2: 3,
            desc: vec![],
            avail: vec![],
        }],
        features: 1 << 28,
        card: vec![],
        ops,
    }
}

fn activate() -> Op {
    Op::Activate {
        used: [Addr::Card(0x2000); 4],
        features: 1 << 28,
    }
}

#[test]
fn a_well_behaved_card_completes_chains() {
    let ops = vec![
        activate(),
        desc_op(0, 0x100, 64, VRING_DESC_F_NEXT, 1),
        desc_op(1, 0x200, 32, VRING_DESC_F_WRITE, 0),
        Op::Offer { ring: 0, head: 0 },
        copy(40, false),
        copy(100, true),
        Op::Offer { ring: 0, head: 0 },
        copy(96, true),
    ];
    let inp = input(ops);
    let mut rig = Rig::new(&inp).unwrap();
    for op in &inp.ops {
        rig.run(op);
    }
    let r = rig.v.rings().next().unwrap();
    assert_eq!((r.last_avail(), r.last_used(), r.stats().completed), (2, 2, 2));
    assert_eq!(r.stats().to_user, 128);
    assert_eq!(rig.card.raw.read_u16(0x2002).unwrap(), 2);
}

#[test]
fn hostile_chains_break_the_ring_and_a_reset_heals_it() {
    let ops = vec![
        activate(),
        desc_op(0, 0x100, 64, VRING_DESC_F_NEXT, 0),
        Op::Offer { ring: 0, head: 0 },
        copy(4096, true),
        copy(4096, true),
        Op::CardReset,
        desc_op(0, 0x100, 64, 0, 0),
        Op::AvailIdx { ring: 0, idx: 0 },
        Op::Offer { ring: 0, head: 0 },
        activate(),
        copy(4096, true),
    ];
    let inp = input(ops);
    let mut rig = Rig::new(&inp).unwrap();
    for op in &inp.ops[..5] {
        rig.run(op);
    }
    assert_eq!(rig.v.rings().next().unwrap().broken(), Some(RingError::Loop));
    for op in &inp.ops[5..] {
        rig.run(op);
    }
    let r = rig.v.rings().next().unwrap();
    assert!(r.broken().is_none());
    assert_eq!(r.stats().completed, 1);
}

#[test]
#[should_panic(expected = "walker handed out")]
fn an_access_outside_card_memory_is_caught() {
    let card = Logged::new(CARD_LEN);
    let mut user = User {
        cap: 64,
        fault_at: None,
        card: &card,
        calls: Vec::new(),
    };
    let _ = user.card_to_user(0, CARD_LEN as u64 - 8, 16);
}

#[test]
#[should_panic(expected = "direction differs")]
fn a_call_against_the_chain_is_caught() {
    let inp = input(vec![]);
    let mut rig = Rig::new(&inp).unwrap();
    let seg = Seg {
        addr: 0x100,
        len: 64,
        write: false,
    };
    rig.take_fetched(
        0,
        Some(&Fetch::Chain {
            head: 0,
            segs: vec![seg],
        }),
    );
    let call = Call {
        off: 0,
        seg: Seg { write: true, ..seg },
    };
    rig.check_calls(0, &[call]);
}

#[test]
#[should_panic(expected = "outside")]
fn a_write_outside_the_allowed_ranges_is_caught() {
    let inp = input(vec![]);
    let rig = Rig::new(&inp).unwrap();
    let r = rig.rings[0];
    rig.host.write_u16(r.avail + 2, 7).unwrap();
    rig.host.check_writes(&rig.host_allowed(), "host memory");
}

#[test]
fn chain_ops_link_wrap_and_offer() {
    let buf = |addr, len, write| (Addr::Card(addr), Len::Small(len), write);
    let ops = vec![
        activate(),
        Op::Chain {
            ring: 0,
            first: 7,
            bufs: vec![buf(0x100, 10, false), buf(0x200, 20, true)],
        },
        copy(100, true),
        Op::Chain {
            ring: 0,
            first: 2,
            bufs: vec![buf(0x100, 10, true), buf(0x200, 20, false)],
        },
        copy(100, true),
    ];
    let inp = input(ops);
    let mut rig = Rig::new(&inp).unwrap();
    for op in &inp.ops {
        rig.run(op);
    }
    let r = rig.v.rings().next().unwrap();
    assert_eq!(r.stats().completed, 1);
    assert_eq!(rig.card.raw.read_u32(0x2004).unwrap(), 7, "head 7, linked to 0");
    assert_eq!(r.broken(), Some(RingError::ReadAfterWrite));
}

#[test]
fn indirect_ops_write_the_table_and_offer_it() {
    let ops = vec![
        activate(),
        Op::Indirect {
            ring: 0,
            index: 3,
            table: 0x1000,
            entries: vec![
                desc_in(0x100, 10, VRING_DESC_F_NEXT, 1),
                desc_in(0x200, 20, VRING_DESC_F_WRITE, 0),
            ],
        },
        copy(100, true),
        Op::Indirect {
            ring: 0,
            index: 3,
            table: 0x1000,
            entries: vec![desc_in(0x1000, 16, VRING_DESC_F_INDIRECT, 0)],
        },
        copy(100, true),
    ];
    let inp = input(ops);
    let mut rig = Rig::new(&inp).unwrap();
    for op in &inp.ops {
        rig.run(op);
    }
    let r = rig.v.rings().next().unwrap();
    assert_eq!(
        (r.stats().completed, r.stats().to_user, r.stats().to_card),
        (1, 10, 20)
    );
    assert_eq!(r.broken(), Some(RingError::NestedIndirect));
}

#[test]
#[should_panic(expected = "read of 2 bytes")]
fn a_read_outside_the_rings_is_caught() {
    let inp = input(vec![]);
    let rig = Rig::new(&inp).unwrap();
    let r = rig.rings[0];
    let _ = rig.host.read_u16(r.info);
    rig.host.check_reads(&rig.host_readable(), "host memory");
}
