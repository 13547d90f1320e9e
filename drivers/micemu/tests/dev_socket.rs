//! `DIR/dev/micN` through libmic's client, as mpssd uses it: open, add a
//! device, map it read-only, wait for the card's doorbells, copy chains
//! both ways — with this test playing the card's virtio driver (the
//! driver core's card side on the emulated card's own hardware view).
#![allow(clippy::many_single_char_names)]

use std::io::IoSliceMut;
use std::time::{Duration, Instant};

use libmic::MicRoot;
use libmic::vdev::{BATCH_MAX, DeviceBlock, Transport, VirtioFile, Wake};
use mic_core::abi::MIC_MAGIC;
use mic_core::abi::virtio::{id, status};
use mic_core::card::CardDevice;
use mic_core::card::virtio::CardVdev;
use mic_core::card::vring::{Buf, UsedBuf};
use mic_core::devpage::walk_mem;
use mic_core::handshake::{AckPoll, AckTiming};
use mic_core::hw::Memory;
use micemu::{Config, Instance, Timing};

fn fleet(cards: u32) -> (tempfile::TempDir, Instance) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        cards,
        memory: 1 << 30,
        timing: Timing::FAST,
        ..Config::default()
    };
    let inst = Instance::start(dir.path(), config).unwrap();
    (dir, inst)
}

fn console() -> DeviceBlock {
    DeviceBlock {
        ty: id::CONSOLE,
        vrings: vec![128, 128],
        host_features: 0,
        config: vec![0; 12],
    }
}

/// Re-reads until `f` holds or a deadline passes.
fn until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

const TIMING: AckTiming = AckTiming {
    period_ms: 1,
    budget_ms: 5_000,
};

/// The test as the card's virtio driver: find the device, negotiate,
/// re-home the used rings, go DRIVER_OK.
fn card_up(inst: &Instance, card: u32) -> CardVdev {
    let emu = inst.emulator();
    let hw = emu.card_hw(card).unwrap();
    let dev = CardDevice::init(&hw.mmio, &hw.phys).unwrap();
    let loc = walk_mem(&hw.phys, dev.dp()).next().unwrap().unwrap();
    let mut dbs = mic_core::card::CardDoorbells::new();
    let mut v = CardVdev::probe(&hw.phys, dev.dp(), &loc, &mut dbs).unwrap();
    v.set_status(&hw.mmio, &hw.phys, status::ACKNOWLEDGE | status::DRIVER)
        .unwrap();
    v.finalize_features(&hw.phys, 0).unwrap();
    let wait = v
        .find_vqs(&hw.mmio, &hw.phys, &[0x2000_0000, 0x2000_1000], TIMING)
        .unwrap();
    let start = Instant::now();
    until("the host to take the used rings", || {
        wait.poll(&hw.phys, start.elapsed().as_millis() as u64) == AckPoll::Acked
    });
    v.set_status(
        &hw.mmio,
        &hw.phys,
        status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK,
    )
    .unwrap();
    v
}

#[test]
fn a_client_adds_maps_and_moves_bytes_both_ways() {
    let (dir, inst) = fleet(2);
    let root = MicRoot::new(dir.path());
    let mut f = VirtioFile::open(&root, 0).unwrap();
    assert_eq!(f.transport(), Transport::SocketDirect, "root reaches our memory");
    f.add_device(&console()).unwrap();
    let e = f.add_device(&console()).unwrap_err();
    assert_eq!(e.errno(), Some(libc::EBUSY), "{e}");
    let map = f.map().unwrap();
    assert_eq!(map.vrings(), 2);
    assert_eq!(map.info_magic(0), Some(MIC_MAGIC + 3));
    assert_eq!(map.info_magic(1), Some(MIC_MAGIC + 4));
    let page = map.page();
    assert_eq!(u32::from_le_bytes(page[..4].try_into().unwrap()), MIC_MAGIC);
    // Not started by the card yet.
    let mut buf = [0u8; 64];
    let e = f
        .copy_desc(1, &mut [IoSliceMut::new(&mut buf)], true)
        .unwrap_err();
    assert_eq!(e.errno(), Some(libc::ENODEV), "{e}");
    assert_eq!(f.wait(Some(Duration::from_millis(20))).unwrap(), Wake::TimedOut);

    let mut v = card_up(&inst, 0);
    // The card's doorbells (status, used rings) woke us.
    assert_eq!(f.wait(Some(Duration::from_secs(5))).unwrap(), Wake::Doorbell);
    until("DRIVER_OK in the mapping", || {
        map.device_status(id::CONSOLE) & status::DRIVER_OK != 0
    });

    // Card → host: TX chain split over two buffers, read into two iovecs.
    let emu = inst.emulator();
    let hw = emu.card_hw(0).unwrap();
    hw.phys.write(0x2010_0000, b"uname -a\n").unwrap();
    hw.phys.write(0x2010_1000, b"more").unwrap();
    let q = v.queue(1).unwrap();
    q.add(
        &hw.phys,
        &[
            Buf {
                addr: 0x2010_0000,
                len: 9,
                write: false,
            },
            Buf {
                addr: 0x2010_1000,
                len: 4,
                write: false,
            },
        ],
        1,
    )
    .unwrap();
    v.notify(&hw.mmio, &hw.phys);
    until("a pending TX chain", || map.pending(1));
    let (mut a, mut b) = ([0u8; 5], [0u8; 16]);
    let n = f
        .copy_desc(1, &mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)], true)
        .unwrap();
    assert_eq!(n, 13);
    assert_eq!(&a, b"uname");
    assert_eq!(&b[..8], b" -a\nmore");
    assert!(!map.pending(1));
    assert_eq!(
        v.queue(1).unwrap().pop_used(&hw.phys).unwrap(),
        Some(UsedBuf { token: 1, len: 13 })
    );

    // Host → card: an RX buffer filled from our data.
    v.queue(0)
        .unwrap()
        .add(
            &hw.phys,
            &[Buf {
                addr: 0x2020_0000,
                len: 256,
                write: true,
            }],
            2,
        )
        .unwrap();
    let mut answer = *b"Linux mic0 3.10.0-micemu\r\n";
    let n = f.copy_desc(0, &mut [IoSliceMut::new(&mut answer)], true).unwrap();
    assert_eq!(n, 26);
    let got = v.queue(0).unwrap().pop_used(&hw.phys).unwrap().unwrap();
    assert_eq!(got, UsedBuf { token: 2, len: 26 });
    let mut seen = [0u8; 26];
    hw.phys.read(0x2020_0000, &mut seen).unwrap();
    assert_eq!(&seen, b"Linux mic0 3.10.0-micemu\r\n");
    // Nothing more available: 0 bytes.
    assert_eq!(f.copy_desc(0, &mut [IoSliceMut::new(&mut buf)], true).unwrap(), 0);

    // The other card is untouched and works on its own.
    let mut g = VirtioFile::open(&root, 1).unwrap();
    g.add_device(&console()).unwrap();
    drop(g);
    drop(f);
    drop(inst);
}

#[test]
fn inline_mode_carries_the_bytes_in_the_messages() {
    let (dir, inst) = fleet(1);
    let root = MicRoot::new(dir.path());
    let mut f = VirtioFile::open_inline(&root, 0).unwrap();
    assert_eq!(f.transport(), Transport::SocketInline);
    f.add_device(&console()).unwrap();
    let mut v = card_up(&inst, 0);
    let emu = inst.emulator();
    let hw = emu.card_hw(0).unwrap();
    hw.phys.write(0x2010_0000, b"abcdefgh").unwrap();
    v.queue(1)
        .unwrap()
        .add(
            &hw.phys,
            &[
                Buf {
                    addr: 0x2010_0000,
                    len: 8,
                    write: false,
                },
                Buf {
                    addr: 0x2030_0000,
                    len: 8,
                    write: true,
                },
            ],
            9,
        )
        .unwrap();
    let (mut a, mut b) = ([0u8; 3], *b".....XYZ123");
    let n = f
        .copy_desc(1, &mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)], true)
        .unwrap();
    assert_eq!(n, 14);
    assert_eq!(&a, b"abc");
    assert_eq!(&b[..5], b"defgh");
    let mut w = [0u8; 6];
    hw.phys.read(0x2030_0000, &mut w).unwrap();
    assert_eq!(&w, b"XYZ123");
    let big = vec![0u8; 200 << 10];
    let mut big = big;
    let e = f
        .copy_desc(1, &mut [IoSliceMut::new(&mut big)], true)
        .unwrap_err();
    assert!(e.to_string().contains("exceed"), "{e}");
    drop(inst);
}

#[test]
fn closing_removes_the_device_and_a_card_removal_ends_it() {
    let (dir, inst) = fleet(1);
    let root = MicRoot::new(dir.path());
    let dp = dir.path().join("sys/kernel/debug/mic_host/mic0/dp");
    let mut f = VirtioFile::open(&root, 0).unwrap();
    f.add_device(&console()).unwrap();
    assert!(std::fs::read_to_string(&dp).unwrap().contains("Device type 3"));
    drop(f);
    // The socket closed: the emulator removed the device (bounded wait
    // for a card that does not answer).
    until("the removal", || {
        !std::fs::read_to_string(&dp).unwrap().contains("Device type 3")
    });
    // The slot is reused by the next open.
    let mut f = VirtioFile::open(&root, 0).unwrap();
    f.add_device(&console()).unwrap();
    let v = card_up(&inst, 0);
    assert_eq!(f.wait(Some(Duration::from_secs(5))).unwrap(), Wake::Doorbell);
    // The card removes the device (its shutdown does): poll's error.
    let emu = inst.emulator();
    let hw = emu.card_hw(0).unwrap();
    let mut dbs = mic_core::card::CardDoorbells::new();
    v.remove(&hw.mmio, &hw.phys, &mut dbs).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match f.wait(Some(Duration::from_secs(5))).unwrap() {
            Wake::Gone => break,
            Wake::Doorbell => assert!(Instant::now() < deadline),
            Wake::TimedOut => panic!("no end reported"),
        }
    }
    let mut buf = [0u8; 8];
    let e = f
        .copy_desc(0, &mut [IoSliceMut::new(&mut buf)], true)
        .unwrap_err();
    assert_eq!(e.errno(), Some(libc::ENODEV));
    drop(inst);
}

#[test]
fn hostile_clients_get_errors_and_the_server_keeps_serving() {
    use std::os::unix::net::UnixDatagram;
    let (dir, inst) = fleet(1);
    let path = dir.path().join("dev/mic0");
    // A raw SEQPACKET client sending garbage.
    let fd = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        nix::sys::socket::SockFlag::empty(),
        None,
    )
    .unwrap();
    nix::sys::socket::connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &nix::sys::socket::UnixAddr::new(&path).unwrap(),
    )
    .unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let ask = |msg: &[u8]| -> i32 {
        nix::sys::socket::send(raw, msg, nix::sys::socket::MsgFlags::empty()).unwrap();
        let mut r = [0u8; 64];
        let n = nix::sys::socket::recv(raw, &mut r, nix::sys::socket::MsgFlags::empty()).unwrap();
        assert!(n >= 8);
        i32::from_le_bytes(r[4..8].try_into().unwrap())
    };
    assert_eq!(ask(&[1, 2, 3]), -libc::EINVAL, "short header");
    let unknown = [0x99u8, 0x73, 0, 0xC0, 0, 0, 0, 0];
    assert_eq!(ask(&unknown), -libc::ENOTTY, "unknown ioctl");
    // COPY_DESC with too many iovecs, and with a short argument.
    let mut cd = vec![0u8; 8 + 24];
    cd[..4].copy_from_slice(&mic_core::abi::MIC_VIRTIO_COPY_DESC.to_le_bytes());
    cd[4..8].copy_from_slice(&24u32.to_le_bytes());
    cd[8 + 8..8 + 12].copy_from_slice(&5000u32.to_le_bytes());
    assert_eq!(ask(&cd), -libc::EINVAL);
    cd[8 + 8..8 + 12].copy_from_slice(&3u32.to_le_bytes());
    assert_eq!(ask(&cd), -libc::EFAULT);
    // A message larger than any the protocol has.
    let huge = vec![0u8; 300 << 10];
    let _ = nix::sys::socket::send(raw, &huge, nix::sys::socket::MsgFlags::empty());
    // An ordinary client still works meanwhile.
    let root = MicRoot::new(dir.path());
    let mut f = VirtioFile::open(&root, 0).unwrap();
    f.add_device(&console()).unwrap();
    drop(f);
    // A datagram socket cannot even connect to it.
    let d = UnixDatagram::unbound().unwrap();
    assert!(d.connect(&path).is_err());
    drop(inst);
}

#[test]
fn arena_buffers_take_the_shared_path_in_both_modes() {
    for inline in [false, true] {
        let (_dir, inst, mut f) = console_on(inline);
        let mut v = card_up(&inst, 0);
        let emu = inst.emulator();
        let hw = emu.card_hw(0).unwrap();
        let mut buf = f.alloc_buf(64 << 10);
        assert!(buf.is_shared());
        // 60 KiB of a pattern from the card, then 4 KiB back into it.
        let pattern: Vec<u8> = (0..60 << 10).map(|i: u32| (i % 251) as u8).collect();
        hw.phys.write(0x2100_0000, &pattern).unwrap();
        v.queue(1)
            .unwrap()
            .add(
                &hw.phys,
                &[
                    Buf {
                        addr: 0x2100_0000,
                        len: 60 << 10,
                        write: false,
                    },
                    Buf {
                        addr: 0x2200_0000,
                        len: 4 << 10,
                        write: true,
                    },
                ],
                3,
            )
            .unwrap();
        buf[60 << 10..].fill(0xA5);
        let n = f.copy_desc(1, &mut [IoSliceMut::new(&mut buf)], true).unwrap();
        assert_eq!(n, 64 << 10);
        assert_eq!(&buf[..60 << 10], &pattern[..], "inline={inline}");
        let mut back = vec![0u8; 4 << 10];
        hw.phys.read(0x2200_0000, &mut back).unwrap();
        assert!(back.iter().all(|&b| b == 0xA5), "inline={inline}");
        assert_eq!(
            v.queue(1).unwrap().pop_used(&hw.phys).unwrap(),
            Some(UsedBuf {
                token: 3,
                len: 64 << 10
            })
        );
        // The arena runs out: the next buffers come from the heap and work.
        let more: Vec<_> = (0..400).map(|_| f.alloc_buf(64 << 10)).collect();
        assert!(more.iter().any(|b| !b.is_shared()));
        drop(f);
        drop(inst);
    }
}

#[test]
fn a_client_waiting_on_the_fast_path_sees_the_emulator_go() {
    let (dir, inst) = fleet(1);
    let root = MicRoot::new(dir.path());
    let mut f = VirtioFile::open(&root, 0).unwrap();
    f.add_device(&console()).unwrap();
    let _v = card_up(&inst, 0);
    // The emulator stops (its sockets close): calls fail, none hangs.
    drop(inst);
    let mut buf = f.alloc_buf(64);
    let r = f.copy_desc(0, &mut [IoSliceMut::new(&mut buf)], true);
    assert!(r.is_err(), "{r:?}");
    // Wake-ups still queued come first; then the end.
    let mut seen = Vec::new();
    loop {
        let w = f.wait(Some(Duration::from_secs(5))).unwrap();
        seen.push(w);
        match w {
            Wake::Gone => break,
            Wake::Doorbell if seen.len() < 4 => {}
            _ => panic!("no end reported: {seen:?}"),
        }
    }
    drop(dir);
}

/// Chains of `len` bytes on vring `vr` of the played card, readable (TX)
/// or writable (RX) by the host, at `base + i·64 KiB`, tokens from 100;
/// readable ones carry byte `i + 1` throughout.
fn post(inst: &Instance, v: &mut CardVdev, vr: u8, base: u64, n: usize, len: u32) {
    let emu = inst.emulator();
    let hw = emu.card_hw(0).unwrap();
    let q = v.queue(vr).unwrap();
    for i in 0..n {
        let addr = base + (i as u64) * 0x1_0000;
        if vr == 1 {
            hw.phys.write(addr, &vec![i as u8 + 1; len as usize]).unwrap();
        }
        let b = Buf {
            addr,
            len,
            write: vr == 0,
        };
        q.add(&hw.phys, &[b], 100 + i as u32).unwrap();
    }
}

/// A fleet of one card and a console on its `dev/mic0` (inline mode or
/// direct).
fn console_on(inline: bool) -> (tempfile::TempDir, Instance, VirtioFile) {
    let (dir, inst) = fleet(1);
    let root = MicRoot::new(dir.path());
    let mut f = if inline {
        VirtioFile::open_inline(&root, 0).unwrap()
    } else {
        VirtioFile::open(&root, 0).unwrap()
    };
    f.add_device(&console()).unwrap();
    (dir, inst, f)
}

/// `n` buffers of 4 KiB: in the shared arena, or on the heap.
fn buffers(f: &mut VirtioFile, arena: bool, n: usize) -> Vec<libmic::vdev::IoBuf> {
    (0..n)
        .map(|_| {
            if arena {
                f.alloc_buf(4096)
            } else {
                vec![0u8; 4096].into()
            }
        })
        .collect()
}

/// A batch handed over and collected later moves what the same batch made
/// whole would; the file takes nothing else meanwhile; where it cannot be
/// handed over (buffers outside the arena) it is made whole at once.
#[test]
fn a_batch_started_then_finished_is_the_batch_made_whole() {
    for (inline, arena) in [(false, false), (false, true), (true, true), (true, false)] {
        let what = format!("inline={inline} arena={arena}");
        let (_dir, inst, mut f) = console_on(inline);
        let mut v = card_up(&inst, 0);
        let emu = inst.emulator();
        let hw = emu.card_hw(0).unwrap();
        let mut bufs = buffers(&mut f, arena, 8);
        post(&inst, &mut v, 1, 0x2100_0000, 5, 3000);
        let mut io: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let pending = f.start_batch(1, &mut io, true);
        drop(io);
        let started = format!("{pending:?}") == "PendingBatch(started)";
        // Handed over on the shared slot, for buffers in the arena.
        assert_eq!(started, arena, "{what}");
        if started {
            assert!(
                f.config_change(&[0; 12]).is_err(),
                "{what}: another request while a batch is in flight"
            );
        }
        let b = f.finish_batch(pending).unwrap();
        assert!(b.error.is_none(), "{what}: {:?}", b.error);
        assert_eq!(b.chains, 5, "{what}");
        assert_eq!(&b.lens[..6], &[3000, 3000, 3000, 3000, 3000, 0], "{what}");
        for (i, buf) in bufs.iter().take(5).enumerate() {
            assert!(
                buf[..3000].iter().all(|&x| x == i as u8 + 1),
                "{what}: buffer {i}"
            );
        }
        let q = v.queue(1).unwrap();
        for i in 0..5 {
            assert_eq!(
                q.pop_used(&hw.phys).unwrap(),
                Some(UsedBuf {
                    token: 100 + i,
                    len: 3000
                }),
                "{what}"
            );
        }
        assert_eq!(q.pop_used(&hw.phys).unwrap(), None, "{what}");
        // Collected: the file serves again.
        post(&inst, &mut v, 1, 0x2180_0000, 1, 10);
        let mut io: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let b = f.copy_desc_batch(1, &mut io, true).unwrap();
        assert_eq!((b.chains, b.lens[0]), (1, 10), "{what}");
    }
}

#[test]
fn a_batch_moves_one_chain_per_buffer_and_stops_where_the_ring_ends() {
    // Direct mode with heap and arena buffers, inline mode with arena ones
    // (one request each time), inline with heap ones (one COPY_DESC per
    // chain inside libmic): the same outcome.
    for (inline, arena) in [(false, false), (false, true), (true, true), (true, false)] {
        let what = format!("inline={inline} arena={arena}");
        let (_dir, inst, mut f) = console_on(inline);
        let mut v = card_up(&inst, 0);
        let emu = inst.emulator();
        let hw = emu.card_hw(0).unwrap();
        let mut bufs = buffers(&mut f, arena, 8);
        // Card → host: 5 chains of 3000 bytes for 8 buffers.
        post(&inst, &mut v, 1, 0x2100_0000, 5, 3000);
        let mut io: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let b = f.copy_desc_batch(1, &mut io, true).unwrap();
        drop(io);
        assert!(b.error.is_none(), "{what}: {:?}", b.error);
        assert_eq!(b.chains, 5, "{what}");
        assert_eq!(&b.lens[..6], &[3000, 3000, 3000, 3000, 3000, 0], "{what}");
        for (i, buf) in bufs.iter().take(5).enumerate() {
            assert!(
                buf[..3000].iter().all(|&x| x == i as u8 + 1),
                "{what}: buffer {i}"
            );
            assert!(
                buf[3000..].iter().all(|&x| x == 0),
                "{what}: buffer {i} past its chain"
            );
        }
        assert!(bufs[5].iter().all(|&x| x == 0), "{what}: no sixth chain");
        let q = v.queue(1).unwrap();
        for i in 0..5 {
            assert_eq!(
                q.pop_used(&hw.phys).unwrap(),
                Some(UsedBuf {
                    token: 100 + i,
                    len: 3000
                }),
                "{what}"
            );
        }
        assert_eq!(q.pop_used(&hw.phys).unwrap(), None, "{what}");

        // Host → card: 3 receive buffers for 4 frames of different sizes.
        post(&inst, &mut v, 0, 0x2200_0000, 3, 2048);
        for (i, buf) in bufs.iter_mut().enumerate() {
            buf.fill(0xB0 + i as u8);
        }
        let sizes = [100usize, 2000, 1514, 64];
        let mut io: Vec<IoSliceMut<'_>> = bufs
            .iter_mut()
            .zip(sizes)
            .map(|(b, n)| IoSliceMut::new(&mut b[..n]))
            .collect();
        let b = f.copy_desc_batch(0, &mut io, true).unwrap();
        assert!(b.error.is_none(), "{what}: {:?}", b.error);
        assert_eq!(b.chains, 3, "{what}: the fourth frame found no buffer");
        assert_eq!(&b.lens[..4], &[100, 2000, 1514, 0], "{what}");
        let q = v.queue(0).unwrap();
        for (i, n) in sizes.iter().take(3).enumerate() {
            let u = q.pop_used(&hw.phys).unwrap().unwrap();
            assert_eq!(
                u,
                UsedBuf {
                    token: 100 + i as u32,
                    len: *n as u32
                },
                "{what}"
            );
            let mut got = vec![0u8; *n];
            hw.phys
                .read(0x2200_0000 + (i as u64) * 0x1_0000, &mut got)
                .unwrap();
            assert!(got.iter().all(|&x| x == 0xB0 + i as u8), "{what}: frame {i}");
        }
        drop(f);
        drop(inst);
    }
}

#[test]
fn each_copy_of_a_batch_completes_its_chain_or_leaves_it_held_as_asked() {
    // What a disk does: one hand-off completes the held chain and starts
    // the next, left held. Every transport, the same used entries.
    for (inline, arena) in [(false, false), (false, true), (true, true), (true, false)] {
        let what = format!("inline={inline} arena={arena}");
        let (_dir, inst, mut f) = console_on(inline);
        let mut v = card_up(&inst, 0);
        let emu = inst.emulator();
        let hw = emu.card_hw(0).unwrap();
        let mut bufs = buffers(&mut f, arena, 2);
        post(&inst, &mut v, 1, 0x2100_0000, 2, 3000);
        let q = v.queue(1).unwrap();
        let b = f
            .copy_desc_each(1, &mut [IoSliceMut::new(&mut bufs[0][..1000])], &[false])
            .unwrap();
        assert_eq!((b.chains, b.lens[0]), (1, 1000), "{what}");
        assert_eq!(q.pop_used(&hw.phys).unwrap(), None, "{what}: chain 0 held");
        let (a, c) = bufs.split_at_mut(1);
        let mut io = [
            IoSliceMut::new(&mut a[0][1000..3000]),
            IoSliceMut::new(&mut c[0][..1000]),
        ];
        let b = f.copy_desc_each(1, &mut io, &[true, false]).unwrap();
        assert!(b.error.is_none(), "{what}: {:?}", b.error);
        assert_eq!((b.chains, &b.lens[..2]), (2, &[2000, 1000][..]), "{what}");
        let used = |t, len| Some(UsedBuf { token: t, len });
        assert_eq!(q.pop_used(&hw.phys).unwrap(), used(100, 3000), "{what}");
        assert_eq!(q.pop_used(&hw.phys).unwrap(), None, "{what}: chain 1 held");
        let b = f
            .copy_desc_each(1, &mut [IoSliceMut::new(&mut bufs[1][1000..3000])], &[true])
            .unwrap();
        assert_eq!((b.chains, b.lens[0]), (1, 2000), "{what}");
        assert_eq!(q.pop_used(&hw.phys).unwrap(), used(101, 3000), "{what}");
        for (i, buf) in bufs.iter().enumerate() {
            assert!(buf[..3000].iter().all(|&x| x == i as u8 + 1), "{what}: chain {i}");
        }
        drop(f);
        drop(inst);
    }
}

#[test]
fn a_refused_chain_stops_the_batch_with_its_errno_after_the_chains_before_it() {
    let (dir, inst) = fleet(1);
    let root = MicRoot::new(dir.path());
    let mut f = VirtioFile::open(&root, 0).unwrap();
    f.add_device(&console()).unwrap();
    let mut v = card_up(&inst, 0);
    let emu = inst.emulator();
    let hw = emu.card_hw(0).unwrap();
    // Two good chains, then one whose buffer lies outside card memory.
    post(&inst, &mut v, 1, 0x2100_0000, 2, 512);
    let outside = Buf {
        addr: 0x8000_0000,
        len: 512,
        write: false,
    };
    v.queue(1).unwrap().add(&hw.phys, &[outside], 7).unwrap();
    post(&inst, &mut v, 1, 0x2300_0000, 1, 512);
    let mut bufs: Vec<libmic::vdev::IoBuf> = (0..4).map(|_| f.alloc_buf(1024)).collect();
    let mut io: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
    let b = f.copy_desc_batch(1, &mut io, true).unwrap();
    drop(io);
    assert_eq!(b.chains, 2);
    assert_eq!(&b.lens[..3], &[512, 512, 0]);
    let e = b.error.expect("the bad chain's error");
    assert!(e.errno().is_some(), "{e}");
    // The ring is broken now, and every later copy says so.
    let again = f
        .copy_desc(1, &mut [IoSliceMut::new(&mut bufs[3])], true)
        .unwrap_err();
    assert_eq!(again.errno(), Some(libc::EIO), "{again}");
    assert!(bufs[0][..512].iter().all(|&x| x == 1));
    assert!(bufs[1][..512].iter().all(|&x| x == 2));
    drop(inst);
}

/// A raw SEQPACKET client of card 0's socket.
fn raw_client(dir: &std::path::Path) -> std::os::fd::OwnedFd {
    let fd = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        nix::sys::socket::SockFlag::empty(),
        None,
    )
    .unwrap();
    nix::sys::socket::connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &nix::sys::socket::UnixAddr::new(&dir.join("dev/mic0")).unwrap(),
    )
    .unwrap();
    fd
}

/// One request (op, payload) and its reply: (result, payload).
fn raw_call(fd: &std::os::fd::OwnedFd, op: u32, payload: &[u8]) -> (i32, Vec<u8>) {
    use mic_core::abi::emu_dev::{MSG_REPLY, MsgHeader, ReqHeader};
    let raw = std::os::fd::AsRawFd::as_raw_fd(fd);
    let mut msg = ReqHeader {
        op,
        len: payload.len() as u32,
    }
    .to_bytes()
    .to_vec();
    msg.extend_from_slice(payload);
    nix::sys::socket::send(raw, &msg, nix::sys::socket::MsgFlags::empty()).unwrap();
    loop {
        let mut r = vec![0u8; 64 << 10];
        let n = nix::sys::socket::recv(raw, &mut r, nix::sys::socket::MsgFlags::empty()).unwrap();
        let h = MsgHeader::from_slice(&r[..n]).unwrap();
        if h.kind == MSG_REPLY {
            return (h.result, r[MsgHeader::SIZE..n].to_vec());
        }
    }
}

/// HELLO with `version` (no shared region): (result, the server's version).
fn hello(fd: &std::os::fd::OwnedFd, version: u32) -> (i32, u32) {
    use mic_core::abi::emu_dev::{Hello, HelloReply, OP_HELLO};
    static PROBE: u8 = 1;
    let h = Hello {
        version,
        flags: 0,
        probe: std::ptr::addr_of!(PROBE) as u64,
        shm_base: 0,
        shm_len: 0,
    };
    let (r, body) = raw_call(fd, OP_HELLO, &h.to_bytes());
    (r, HelloReply::from_slice(&body).map_or(0, |h| h.version))
}

/// A batch's bytes: entries of (vring, iovecs).
fn batch_bytes(entries: &[(u8, &[(u64, u64)])]) -> Vec<u8> {
    use mic_core::abi::MicCopyDesc;
    use mic_core::abi::emu_dev::{BatchReq, Iovec};
    let mut b = BatchReq {
        count: entries.len() as u32,
        flags: 0,
    }
    .to_bytes()
    .to_vec();
    for (vr, iovs) in entries {
        let cd = MicCopyDesc {
            iov: 0,
            iovcnt: iovs.len() as u32,
            vr_idx: *vr,
            update_used: 1,
            out_len: 0,
        };
        b.extend_from_slice(&cd.to_bytes());
        for &(base, len) in *iovs {
            b.extend_from_slice(&Iovec { base, len }.to_bytes());
        }
    }
    b
}

#[test]
fn batches_are_negotiated_and_malformed_ones_are_refused_whole() {
    use mic_core::abi::emu_dev::{
        BATCH_MAX as WIRE_MAX, BatchReply, BatchResult, OP_COPY_BATCH, PROTO_VERSION, batch_reply_len,
    };
    assert_eq!(BATCH_MAX, WIRE_MAX as usize);
    let (dir, inst) = fleet(1);
    // Version 0 is refused; a version-1 client is served without batches.
    let old = raw_client(dir.path());
    assert_eq!(hello(&old, 0).0, -libc::EPROTO);
    assert_eq!(hello(&old, 1), (0, 1));
    let one = batch_bytes(&[(1, &[(0x1000, 16)])]);
    assert_eq!(
        raw_call(&old, OP_COPY_BATCH, &one).0,
        -libc::ENOTTY,
        "not in version 1"
    );
    drop(old);
    // A client from the future is answered with ours.
    let c = raw_client(dir.path());
    assert_eq!(hello(&c, PROTO_VERSION + 5), (0, PROTO_VERSION));
    let mut buf = vec![0u8; 4096];
    let addr = buf.as_mut_ptr() as u64;
    // Malformed: each refused with EINVAL before anything runs.
    let none: &[(u64, u64)] = &[];
    let too_many: Vec<(u8, &[(u64, u64)])> = (0..=WIRE_MAX).map(|_| (1u8, none)).collect();
    let mut flagged = one.clone();
    flagged[4] = 2;
    let mut short = one.clone();
    short.truncate(one.len() - 3);
    let mut trailing = one.clone();
    trailing.push(0);
    let mut huge_iovcnt = one.clone();
    huge_iovcnt[8 + 8..8 + 12].copy_from_slice(&5000u32.to_le_bytes());
    let mut count_lies = one.clone();
    count_lies[..4].copy_from_slice(&2u32.to_le_bytes());
    for (what, b) in [
        ("empty", vec![]),
        ("too many entries", batch_bytes(&too_many)),
        ("reserved flags", flagged),
        ("an entry cut short", short),
        ("bytes after the last entry", trailing),
        ("too many iovecs", huge_iovcnt),
        ("a count beyond the entries", count_lies),
    ] {
        assert_eq!(raw_call(&c, OP_COPY_BATCH, &b).0, -libc::EINVAL, "{what}");
    }
    // Well formed, on a file without a device: the first entry's errno.
    let (r, body) = raw_call(
        &c,
        OP_COPY_BATCH,
        &batch_bytes(&[(1, &[(addr, 16)]), (1, &[(addr, 16)])]),
    );
    assert_eq!(r, 0);
    assert_eq!(body.len(), batch_reply_len(2));
    assert_eq!(BatchReply::from_slice(&body).unwrap().done, 1);
    let first = BatchResult::from_slice(&body[BatchReply::SIZE..]).unwrap();
    assert_eq!(first.result, -libc::EINVAL, "no device on this file");
    // BATCH_F_STARTED is known from version 4 on, and refused before.
    let mut started = one.clone();
    started[4] = mic_core::abi::emu_dev::BATCH_F_STARTED as u8;
    assert_eq!(raw_call(&c, OP_COPY_BATCH, &started).0, 0, "known in version 4");
    let v3 = raw_client(dir.path());
    assert_eq!(hello(&v3, 3), (0, 3));
    assert_eq!(
        raw_call(&v3, OP_COPY_BATCH, &started).0,
        -libc::EINVAL,
        "not in version 3"
    );
    drop(v3);
    // With a device and chains: entry 0 moves one, entry 1 names a vring
    // the device does not have (EINVAL), entry 2 never runs.
    assert_eq!(
        raw_call(&c, mic_core::abi::MIC_VIRTIO_ADD_DEVICE, &console().to_bytes()).0,
        0
    );
    let mut v = card_up(&inst, 0);
    post(&inst, &mut v, 1, 0x2100_0000, 2, 16);
    let b = batch_bytes(&[(1, &[(addr, 16)]), (9, &[(addr, 16)]), (1, &[(addr, 16)])]);
    let (r, body) = raw_call(&c, OP_COPY_BATCH, &b);
    assert_eq!(r, 0);
    assert_eq!(BatchReply::from_slice(&body).unwrap().done, 2);
    let res: Vec<BatchResult> = body[BatchReply::SIZE..]
        .chunks_exact(BatchResult::SIZE)
        .filter_map(BatchResult::from_slice)
        .collect();
    assert_eq!(
        res[0],
        BatchResult {
            result: 0,
            out_len: 16
        }
    );
    assert_eq!(res[1].result, -libc::EINVAL);
    assert_eq!(res[2], BatchResult::default());
    assert!(buf[..16].iter().all(|&x| x == 1), "the first chain's bytes");
    // Another client is served meanwhile (its file has no device).
    let mut f = VirtioFile::open(&MicRoot::new(dir.path()), 0).unwrap();
    let mut io = [IoSliceMut::new(&mut buf)];
    let e = f.copy_desc_batch(0, &mut io, true).unwrap().error.unwrap();
    assert_eq!(e.errno(), Some(libc::EINVAL), "{e}");
    drop(f);
    drop(c);
    drop(inst);
}

#[test]
fn acknowledged_wake_ups_lose_no_doorbell() {
    // At most one MSG_WAKE is outstanding until the client acknowledges
    // it: doorbells meanwhile coalesce; one after the client saw it wakes
    // it again.
    let (_dir, inst, mut f) = console_on(false);
    let v = card_up(&inst, 0);
    let emu = inst.emulator();
    let hw = emu.card_hw(0).unwrap();
    // The bring-up's doorbells: at least one wake, then quiet.
    assert_eq!(f.wait(Some(Duration::from_secs(5))).unwrap(), Wake::Doorbell);
    while f.wait(Some(Duration::from_millis(50))).unwrap() == Wake::Doorbell {}
    for round in 0..20 {
        // Three doorbells before the client looks: one wake (or more).
        for _ in 0..3 {
            v.notify(&hw.mmio, &hw.phys);
        }
        assert_eq!(
            f.wait(Some(Duration::from_secs(5))).unwrap(),
            Wake::Doorbell,
            "round {round}"
        );
        while f.wait(Some(Duration::ZERO)).unwrap() == Wake::Doorbell {}
        // The next one, after the client saw the last, wakes it again.
        v.notify(&hw.mmio, &hw.phys);
        assert_eq!(
            f.wait(Some(Duration::from_secs(5))).unwrap(),
            Wake::Doorbell,
            "round {round}: a doorbell after the acknowledgement was lost"
        );
        while f.wait(Some(Duration::from_millis(20))).unwrap() == Wake::Doorbell {}
    }
    drop(f);
    drop(inst);
}

#[test]
fn a_batch_larger_than_the_request_slot_is_served_over_the_socket_and_one_past_the_message_limit_refused() {
    use mic_core::abi::emu_dev::{
        BatchReply, BatchResult, MAX_MSG, OP_COPY_BATCH, PROTO_VERSION, SHM_REQ_MAX, batch_reply_len,
    };
    // 40 chains of 64 bytes, each taken by an entry of 64 one-byte iovecs:
    // a request well past the shared region's slot.
    const CHAINS: usize = 40;
    const LEN: usize = 64;
    let (dir, inst) = fleet(1);
    let c = raw_client(dir.path());
    assert_eq!(hello(&c, PROTO_VERSION), (0, PROTO_VERSION));
    assert_eq!(
        raw_call(&c, mic_core::abi::MIC_VIRTIO_ADD_DEVICE, &console().to_bytes()).0,
        0
    );
    let mut v = card_up(&inst, 0);
    post(&inst, &mut v, 1, 0x2100_0000, CHAINS, LEN as u32);
    let mut buf = vec![0u8; CHAINS * LEN];
    let base = buf.as_mut_ptr() as u64;
    let iovs: Vec<Vec<(u64, u64)>> = (0..CHAINS)
        .map(|i| (0..LEN).map(|j| (base + (i * LEN + j) as u64, 1)).collect())
        .collect();
    let entries: Vec<(u8, &[(u64, u64)])> = iovs.iter().map(|v| (1u8, v.as_slice())).collect();
    let big = batch_bytes(&entries);
    assert!(big.len() > SHM_REQ_MAX && big.len() < MAX_MSG, "{}", big.len());
    let (r, body) = raw_call(&c, OP_COPY_BATCH, &big);
    assert_eq!(r, 0);
    assert_eq!(body.len(), batch_reply_len(CHAINS as u32));
    assert_eq!(BatchReply::from_slice(&body).unwrap().done, CHAINS as u32);
    for (i, raw) in body[BatchReply::SIZE..]
        .chunks_exact(BatchResult::SIZE)
        .enumerate()
    {
        let res = BatchResult::from_slice(raw).unwrap();
        assert_eq!(
            res,
            BatchResult {
                result: 0,
                out_len: LEN as u32
            },
            "entry {i}"
        );
        assert!(
            buf[i * LEN..(i + 1) * LEN].iter().all(|&x| x == i as u8 + 1),
            "chain {i}'s bytes, one an iovec"
        );
    }
    // Past the message limit (but within the socket's send buffer): cut
    // on receipt, refused with EINVAL, and nothing of it runs.
    post(&inst, &mut v, 1, 0x2200_0000, 1, LEN as u32);
    let wide: Vec<(u64, u64)> = (0..170).map(|j| (base + j, 1)).collect();
    let entries: Vec<(u8, &[(u64, u64)])> = (0..64).map(|_| (1u8, wide.as_slice())).collect();
    let huge = batch_bytes(&entries);
    assert!(huge.len() > MAX_MSG, "{}", huge.len());
    assert_eq!(raw_call(&c, OP_COPY_BATCH, &huge).0, -libc::EINVAL);
    // The connection still serves, and the chain posted is still there.
    let one: Vec<(u64, u64)> = vec![(base, LEN as u64)];
    let (r, body) = raw_call(&c, OP_COPY_BATCH, &batch_bytes(&[(1, &one)]));
    assert_eq!(r, 0);
    let res = BatchResult::from_slice(&body[BatchReply::SIZE..]).unwrap();
    assert_eq!(res.out_len, LEN as u32, "the refused batch took no chain");
    assert!(buf[..LEN].iter().all(|&x| x == 1));
    drop(c);
    drop(inst);
}

#[test]
fn a_copy_whose_request_outgrows_the_slot_is_an_error_not_a_panic() {
    // Through libmic's client on the fast path: more iovecs than the slot
    // holds go over the socket, and the driver's limit answers (EINVAL).
    use mic_core::abi::emu_dev::{Iovec, SHM_REQ_MAX};
    use mic_core::host::vop::MAX_IOVECS;
    let (_dir, inst, mut f) = console_on(false);
    let mut v = card_up(&inst, 0);
    post(&inst, &mut v, 1, 0x2100_0000, 1, 16);
    let n = SHM_REQ_MAX / Iovec::SIZE + 1;
    let mut bytes = vec![0u8; n];
    let mut io: Vec<IoSliceMut<'_>> = bytes.chunks_mut(1).map(IoSliceMut::new).collect();
    let e = f.copy_desc(1, &mut io, true).unwrap_err();
    assert_eq!(e.errno(), Some(libc::EINVAL), "{e}");
    // Within the slot, within the limit: the chain comes, the file is fine.
    let mut io: Vec<IoSliceMut<'_>> = bytes[..MAX_IOVECS as usize]
        .chunks_mut(1)
        .map(IoSliceMut::new)
        .collect();
    assert_eq!(f.copy_desc(1, &mut io, true).unwrap(), 16);
    assert!(bytes[..16].iter().all(|&x| x == 1));
    drop(f);
    drop(inst);
}

/// A raw client of card 0's socket with the shared region, speaking the
/// slot protocol byte by byte.
struct RawSlot {
    sock: std::os::fd::OwnedFd,
    memfd: std::os::fd::OwnedFd,
    kick_server: nix::sys::eventfd::EventFd,
    kick_client: nix::sys::eventfd::EventFd,
    // INVARIANT: a live shared read-write mapping of `len` bytes of the
    // memfd, unmapped by Drop.
    map: *mut u8,
    len: usize,
    seq: u32,
}

impl RawSlot {
    /// Connects, says HELLO with the region (the current version), and
    /// adds a console.
    fn connect(dir: &std::path::Path) -> Self {
        use mic_core::abi::emu_dev::{HELLO_SHM, Hello, OP_HELLO, PROTO_VERSION, SHM_ARENA};
        use nix::sys::eventfd::{EfdFlags, EventFd};
        use std::os::fd::{AsFd as _, AsRawFd};
        static PROBE: u8 = 1;
        let len = SHM_ARENA + (1 << 20);
        let memfd =
            nix::sys::memfd::memfd_create("raw-slot", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&memfd, len as i64).unwrap();
        // SAFETY: a fresh shared mapping of the memfd just sized; checked.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                memfd.as_raw_fd(),
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED);
        let flags = EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK;
        let me = Self {
            sock: raw_client(dir),
            memfd,
            kick_server: EventFd::from_value_and_flags(0, flags).unwrap(),
            kick_client: EventFd::from_value_and_flags(0, flags).unwrap(),
            map: map.cast(),
            len,
            seq: 0,
        };
        let h = Hello {
            version: PROTO_VERSION,
            flags: HELLO_SHM,
            probe: std::ptr::addr_of!(PROBE) as u64,
            shm_base: me.map as u64,
            shm_len: len as u64,
        };
        let mut msg = mic_core::abi::emu_dev::ReqHeader {
            op: OP_HELLO,
            len: Hello::SIZE as u32,
        }
        .to_bytes()
        .to_vec();
        msg.extend_from_slice(&h.to_bytes());
        let fds = [
            me.memfd.as_raw_fd(),
            me.kick_server.as_fd().as_raw_fd(),
            me.kick_client.as_fd().as_raw_fd(),
        ];
        nix::sys::socket::sendmsg::<()>(
            me.sock.as_raw_fd(),
            &[std::io::IoSlice::new(&msg)],
            &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
            nix::sys::socket::MsgFlags::empty(),
            None,
        )
        .unwrap();
        let mut r = [0u8; 64];
        let n =
            nix::sys::socket::recv(me.sock.as_raw_fd(), &mut r, nix::sys::socket::MsgFlags::empty()).unwrap();
        assert_eq!(&r[..8], &[1, 0, 0, 0, 0, 0, 0, 0], "HELLO answered 0 ({n} bytes)");
        assert_eq!(
            raw_call(
                &me.sock,
                mic_core::abi::MIC_VIRTIO_ADD_DEVICE,
                &console().to_bytes()
            )
            .0,
            0
        );
        me
    }

    fn word(&self, off: usize) -> &std::sync::atomic::AtomicU32 {
        assert!(off + 4 <= mic_core::abi::emu_dev::SHM_ARENA && off % 4 == 0);
        // SAFETY: an aligned control word (checked; the mapping is
        // page-aligned) inside the live mapping.
        #[allow(clippy::cast_ptr_alignment)]
        unsafe {
            &*self.map.add(off).cast::<std::sync::atomic::AtomicU32>()
        }
    }

    fn bytes(&self, off: usize, n: usize) -> Vec<u8> {
        assert!(off + n <= self.len);
        let mut v = vec![0u8; n];
        // SAFETY: inside the live mapping (checked), read once the server
        // published its answer.
        unsafe { std::ptr::copy_nonoverlapping(self.map.add(off), v.as_mut_ptr(), n) };
        v
    }

    /// Writes raw `bytes` into the request slot and hands them over.
    fn post(&mut self, bytes: &[u8]) {
        use mic_core::abi::emu_dev::{SHM_REQ, SHM_REQ_MAX, SHM_REQ_SEQ, SHM_SERVER_SLEEPING};
        use std::sync::atomic::Ordering::SeqCst;
        assert!(bytes.len() <= SHM_REQ_MAX);
        // SAFETY: inside the request slot of the live mapping (checked);
        // the server reads it only after the counter below moves.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.map.add(SHM_REQ), bytes.len()) };
        self.seq = self.seq.wrapping_add(1);
        self.word(SHM_REQ_SEQ).store(self.seq, SeqCst);
        if self.word(SHM_SERVER_SLEEPING).load(SeqCst) != 0 {
            self.kick_server.write(1).unwrap();
        }
    }

    /// The server's next answer in the response slot (its header and the
    /// first `n` payload bytes), waiting on the client eventfd, 10 s at most.
    fn answer(&self, n: usize) -> (mic_core::abi::emu_dev::MsgHeader, Vec<u8>) {
        use mic_core::abi::emu_dev::{MsgHeader, SHM_CLIENT_SLEEPING, SHM_RESP, SHM_RESP_SEQ};
        use std::os::fd::AsFd as _;
        use std::sync::atomic::Ordering::SeqCst;
        let end = Instant::now() + Duration::from_secs(10);
        while self.word(SHM_RESP_SEQ).load(SeqCst) != self.seq {
            assert!(Instant::now() < end, "no answer to request {}", self.seq);
            self.word(SHM_CLIENT_SLEEPING).store(1, SeqCst);
            if self.word(SHM_RESP_SEQ).load(SeqCst) != self.seq {
                let fd = self.kick_client.as_fd();
                let mut p = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
                // TIMEOUT: one look; the loop's bound is 10 s.
                let _ = nix::poll::poll(&mut p, nix::poll::PollTimeout::from(100u16));
                let _ = self.kick_client.read();
            }
            self.word(SHM_CLIENT_SLEEPING).store(0, SeqCst);
        }
        let h = MsgHeader::from_slice(&self.bytes(SHM_RESP, MsgHeader::SIZE)).unwrap();
        (h, self.bytes(SHM_RESP + MsgHeader::SIZE, n))
    }

    /// A COPY_DESC in the slot on vring `vr` naming `iovs`.
    fn copy_desc(&mut self, vr: u8, iovs: &[(u64, u64)]) {
        use mic_core::abi::MicCopyDesc;
        use mic_core::abi::emu_dev::{Iovec, ReqHeader};
        let cd = MicCopyDesc {
            iov: 0,
            iovcnt: iovs.len() as u32,
            vr_idx: vr,
            update_used: 1,
            out_len: 0,
        };
        let len = MicCopyDesc::SIZE + iovs.len() * Iovec::SIZE;
        let mut b = ReqHeader {
            op: mic_core::abi::MIC_VIRTIO_COPY_DESC,
            len: len as u32,
        }
        .to_bytes()
        .to_vec();
        b.extend_from_slice(&cd.to_bytes());
        for &(base, len) in iovs {
            b.extend_from_slice(&Iovec { base, len }.to_bytes());
        }
        self.post(&b);
    }

    /// The answer to a plan: `result` for OP_PLAN_DONE.
    fn plan_done(&mut self, result: i32) {
        use mic_core::abi::emu_dev::{OP_PLAN_DONE, ReqHeader};
        let mut b = ReqHeader {
            op: OP_PLAN_DONE,
            len: 4,
        }
        .to_bytes()
        .to_vec();
        b.extend_from_slice(&result.to_le_bytes());
        self.post(&b);
    }
}

impl Drop for RawSlot {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `connect` (invariant).
        unsafe { libc::munmap(self.map.cast(), self.len) };
    }
}

/// `out_len` of a COPY_DESC answer's payload (its `MicCopyDesc`).
fn out_len(body: &[u8]) -> u32 {
    mic_core::abi::MicCopyDesc::from_slice(body).unwrap().out_len
}

#[test]
fn a_slot_request_claiming_more_than_the_slot_is_refused_and_the_slot_still_serves() {
    use mic_core::abi::MicCopyDesc;
    use mic_core::abi::emu_dev::{Iovec, MSG_REPLY, ReqHeader, SHM_REQ_MAX};
    let (dir, inst) = fleet(1);
    let mut c = RawSlot::connect(dir.path());
    let mut v = card_up(&inst, 0);
    post(&inst, &mut v, 1, 0x2100_0000, 2, 16);
    // Our buffer is reached by process_vm (root, no aperture asked for).
    let mut buf = vec![0u8; 16];
    let base = buf.as_mut_ptr() as u64;
    // A COPY_DESC of one iovec, padded with zeros to a header length of
    // `len`: the server reads the argument and the iovec, ignores the rest.
    let request = |len: u32| {
        let cd = MicCopyDesc {
            iov: 0,
            iovcnt: 1,
            vr_idx: 1,
            update_used: 1,
            out_len: 0,
        };
        let mut b = ReqHeader {
            op: mic_core::abi::MIC_VIRTIO_COPY_DESC,
            len,
        }
        .to_bytes()
        .to_vec();
        b.extend_from_slice(&cd.to_bytes());
        b.extend_from_slice(&Iovec { base, len: 16 }.to_bytes());
        b.resize(SHM_REQ_MAX.min(ReqHeader::SIZE + len as usize), 0);
        b
    };
    let most = (SHM_REQ_MAX - ReqHeader::SIZE) as u32;
    for (what, len) in [
        ("one byte past the slot", most + 1),
        (
            "past the largest socket message",
            (mic_core::abi::emu_dev::MAX_MSG + 1) as u32,
        ),
        ("u32::MAX", u32::MAX),
    ] {
        c.post(&request(len));
        let (h, body) = c.answer(MicCopyDesc::SIZE);
        assert_eq!((h.kind, h.result), (MSG_REPLY, -libc::EINVAL), "{what}");
        assert!(
            body.iter().all(|&b| b == 0) || out_len(&body) == 0,
            "{what}: no out_len"
        );
        assert!(buf.iter().all(|&b| b == 0), "{what}: nothing ran");
    }
    // Exactly the slot: served, the first chain comes, and then the second.
    for chain in 1..=2u8 {
        c.post(&request(most));
        let (h, body) = c.answer(MicCopyDesc::SIZE);
        assert_eq!((h.kind, h.result), (MSG_REPLY, 0));
        assert_eq!(out_len(&body), 16);
        assert!(buf.iter().all(|&b| b == chain), "chain {chain}: {buf:?}");
    }
    // The socket beside it: a header claiming more than its message
    // carries is refused the same way, and the connection goes on.
    let raw = std::os::fd::AsRawFd::as_raw_fd(&c.sock);
    for claim in [Iovec::SIZE as u32 + MicCopyDesc::SIZE as u32 + 1, u32::MAX] {
        let mut msg = request(claim);
        msg.truncate(ReqHeader::SIZE + MicCopyDesc::SIZE + Iovec::SIZE);
        nix::sys::socket::send(raw, &msg, nix::sys::socket::MsgFlags::empty()).unwrap();
        // The card's doorbells (wake-ups) come on the socket too.
        let h = loop {
            let mut r = [0u8; 64];
            let n = nix::sys::socket::recv(raw, &mut r, nix::sys::socket::MsgFlags::empty()).unwrap();
            let h = mic_core::abi::emu_dev::MsgHeader::from_slice(&r[..n]).unwrap();
            if h.kind == MSG_REPLY {
                break h;
            }
        };
        assert_eq!(h.result, -libc::EINVAL, "claim {claim}");
    }
    let (r, _) = raw_call(
        &c.sock,
        mic_core::abi::MIC_VIRTIO_COPY_DESC,
        &request(most)[8..48],
    );
    assert_eq!(r, 0, "the socket still serves (the ring is empty: out_len 0)");
    drop(c);
    drop(inst);
}

/// OP_APERTURE on a raw connection: (result, size, the memfd).
fn aperture(sock: &std::os::fd::OwnedFd) -> (i32, u64, Option<std::os::fd::OwnedFd>) {
    use mic_core::abi::emu_dev::{ApertureReply, MSG_REPLY, MsgHeader, OP_APERTURE, ReqHeader};
    use std::os::fd::{AsRawFd, FromRawFd};
    let raw = sock.as_raw_fd();
    let h = ReqHeader {
        op: OP_APERTURE,
        len: 0,
    }
    .to_bytes();
    nix::sys::socket::send(raw, &h, nix::sys::socket::MsgFlags::empty()).unwrap();
    loop {
        let mut buf = [0u8; 64];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let m = nix::sys::socket::recvmsg::<()>(
            raw,
            &mut iov,
            Some(&mut cmsg),
            nix::sys::socket::MsgFlags::empty(),
        )
        .unwrap();
        let mut fd = None;
        for c in m.cmsgs().unwrap() {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                // SAFETY: the kernel just installed these for us.
                fd = fds
                    .first()
                    .map(|&f| unsafe { std::os::fd::OwnedFd::from_raw_fd(f) });
            }
        }
        let n = m.bytes;
        let h = MsgHeader::from_slice(&buf[..n]).unwrap();
        if h.kind == MSG_REPLY {
            let size = ApertureReply::from_slice(&buf[MsgHeader::SIZE..n]).map_or(0, |a| a.size);
            return (h.result, size, fd);
        }
    }
}

#[test]
#[allow(clippy::too_many_lines)]
fn with_the_aperture_the_client_copies_where_the_plan_says_and_its_answer_decides() {
    use mic_core::abi::emu_dev::{MSG_PLAN, MSG_REPLY, PROTO_VERSION, PlanOp};
    let (dir, inst) = fleet(1);
    let hw = inst.emulator().card_hw(0).unwrap();
    // No aperture without the shared region (plans travel in its slots).
    let bare = raw_client(dir.path());
    assert_eq!(hello(&bare, PROTO_VERSION).0, 0);
    assert_eq!(aperture(&bare).0, -libc::EPERM);
    drop(bare);
    let mut c = RawSlot::connect(dir.path());
    let (r, size, fd) = aperture(&c.sock);
    assert_eq!((r, size), (0, 1 << 30), "the card's memory, all of it");
    let fd = fd.expect("the memfd");
    // SAFETY: a fresh shared mapping of the card's memfd; checked.
    let ap = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            0,
        )
    };
    assert_ne!(ap, libc::MAP_FAILED);
    let ap = ap.cast::<u8>();
    let mut v = card_up(&inst, 0);
    post(&inst, &mut v, 1, 0x2100_0000, 3, 16);
    let plan = |c: &RawSlot| {
        let (h, body) = c.answer(mic_core::abi::emu_dev::PLAN_MAX * PlanOp::SIZE);
        assert_eq!(h.kind, MSG_PLAN);
        let ops: Vec<PlanOp> = body
            .chunks_exact(PlanOp::SIZE)
            .take(h.result as usize)
            .filter_map(PlanOp::from_slice)
            .collect();
        ops
    };
    let reply = |c: &RawSlot| {
        let (h, body) = c.answer(mic_core::abi::MicCopyDesc::SIZE);
        assert_eq!(h.kind, MSG_REPLY);
        (h.result, out_len(&body))
    };
    // Addresses meaningless to the server (it must not touch them): two
    // iovecs of 8 bytes take the first chain of 16.
    let iovs = [(0xdead_0000, 8), (0xbeef_0000, 8)];
    c.copy_desc(1, &iovs);
    let op = |card_addr, user_off, len, to_user| PlanOp {
        card_addr,
        user_off,
        len,
        entry: 0,
        to_user,
    };
    assert_eq!(plan(&c), [op(0x2100_0000, 0, 8, 1), op(0x2100_0008, 8, 8, 1)]);
    // SAFETY: inside the mapping of the card's memory.
    let got = unsafe { std::slice::from_raw_parts(ap.add(0x2100_0000), 16) }.to_vec();
    assert_eq!(got, [1u8; 16], "the aperture is the card's memory");
    assert!(
        v.queue(1).unwrap().pop_used(&hw.phys).unwrap().is_none(),
        "nothing is used before the client's answer"
    );
    c.plan_done(0);
    assert_eq!(reply(&c), (0, 16));
    assert_eq!(
        v.queue(1).unwrap().pop_used(&hw.phys).unwrap(),
        Some(UsedBuf { token: 100, len: 16 })
    );
    // Refused: EFAULT, and the chain stays where it was.
    c.copy_desc(1, &iovs[..1]);
    assert_eq!(plan(&c), [op(0x2101_0000, 0, 8, 1)]);
    c.plan_done(-libc::EFAULT);
    assert_eq!(reply(&c).0, -libc::EFAULT);
    c.copy_desc(1, &[(0x1000, 16)]);
    assert_eq!(plan(&c), [op(0x2101_0000, 0, 16, 1)], "the same chain again");
    c.plan_done(0);
    assert_eq!(reply(&c), (0, 16));
    // Never answered: EFAULT once the budget passed; the late answer is a
    // request of its own (EINVAL); the chain is still there.
    c.copy_desc(1, &[(0x1000, 16)]);
    assert_eq!(plan(&c), [op(0x2102_0000, 0, 16, 1)]);
    // The answer is written over the plan, under the same counter value.
    let t = Instant::now();
    until("the server to give up on the plan", || {
        c.bytes(mic_core::abi::emu_dev::SHM_RESP, 4) == MSG_REPLY.to_le_bytes()
    });
    assert!(t.elapsed() >= Duration::from_millis(mic_core::abi::emu_dev::PLAN_BUDGET_MS));
    assert_eq!(reply(&c).0, -libc::EFAULT);
    c.plan_done(0);
    assert_eq!(reply(&c).0, -libc::EINVAL);
    c.copy_desc(1, &[(0x1000, 16)]);
    assert_eq!(plan(&c), [op(0x2102_0000, 0, 16, 1)]);
    c.plan_done(0);
    assert_eq!(reply(&c), (0, 16));
    // Caller → card: the client writes the card's buffer itself.
    post(&inst, &mut v, 0, 0x2200_0000, 1, 16);
    c.copy_desc(0, &[(0x1000, 16)]);
    assert_eq!(plan(&c), [op(0x2200_0000, 0, 16, 0)]);
    // SAFETY: inside the mapping of the card's memory.
    unsafe { std::ptr::write_bytes(ap.add(0x2200_0000), 0xab, 16) };
    c.plan_done(0);
    assert_eq!(reply(&c), (0, 16));
    let mut card = [0u8; 16];
    hw.phys.read(0x2200_0000, &mut card).unwrap();
    assert_eq!(card, [0xab; 16]);
    // Gone mid-plan: the server stops waiting, and the connection ends as
    // ever: the card is asked to remove the device.
    post(&inst, &mut v, 1, 0x2300_0000, 1, 16);
    c.copy_desc(1, &[(0x1000, 16)]);
    assert_eq!(plan(&c).len(), 1);
    drop(c);
    until("the removal request", || {
        v.config_request(&hw.phys).unwrap() == Some(mic_core::card::virtio::ConfigRequest::Remove)
    });
    v.ack_config(&hw.phys).unwrap();
    // SAFETY: the mapping made above.
    unsafe { libc::munmap(ap.cast(), size as usize) };
    drop(inst);
}

#[test]
fn heap_buffers_are_copied_by_the_client_both_ways_and_inline_clients_go_without() {
    for inline in [false, true] {
        let (_dir, inst, mut f) = console_on(inline);
        assert_eq!(f.copies_itself(), !inline);
        let mut v = card_up(&inst, 0);
        let hw = inst.emulator().card_hw(0).unwrap();
        // A chain of 3000 bytes into three heap buffers of 1000.
        post(&inst, &mut v, 1, 0x2100_0000, 1, 3000);
        let mut bufs = [vec![0u8; 1000], vec![0u8; 1000], vec![0u8; 1000]];
        let mut io: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        assert_eq!(f.copy_desc(1, &mut io, true).unwrap(), 3000);
        assert!(bufs.iter().flatten().all(|&b| b == 1));
        // And back: 2500 of 3000 bytes offered fill a chain of 2500.
        post(&inst, &mut v, 0, 0x2200_0000, 1, 2500);
        for (i, b) in bufs.iter_mut().enumerate() {
            b.fill(0x10 + i as u8);
        }
        let mut io: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        assert_eq!(f.copy_desc(0, &mut io, true).unwrap(), 2500);
        let mut card = vec![0u8; 2500];
        hw.phys.read(0x2200_0000, &mut card).unwrap();
        let want: Vec<u8> = (0..2500).map(|i| 0x10 + (i / 1000) as u8).collect();
        assert_eq!(card, want);
        // A batch of heap buffers, one chain each.
        post(&inst, &mut v, 1, 0x2300_0000, 2, 700);
        let mut two = [vec![0u8; 700], vec![0u8; 700]];
        let mut io: Vec<IoSliceMut<'_>> = two.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let b = f.copy_desc_batch(1, &mut io, true).unwrap();
        assert!(b.error.is_none(), "{:?}", b.error);
        assert_eq!(&b.lens[..b.chains], [700, 700]);
        assert!(two[0].iter().all(|&x| x == 1) && two[1].iter().all(|&x| x == 2));
        drop(f);
        drop(inst);
    }
}
