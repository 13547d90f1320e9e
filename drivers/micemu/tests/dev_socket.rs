//! `DIR/dev/micN` through libmic's client, as mpssd uses it: open, add a
//! device, map it read-only, wait for the card's doorbells, copy chains
//! both ways — with this test playing the card's virtio driver (the
//! driver core's card side on the emulated card's own hardware view).
#![allow(clippy::many_single_char_names)]

use std::io::IoSliceMut;
use std::time::{Duration, Instant};

use libmic::MicRoot;
use libmic::vdev::{DeviceBlock, Transport, VirtioFile, Wake};
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
        let (dir, inst) = fleet(1);
        let root = MicRoot::new(dir.path());
        let mut f = if inline {
            VirtioFile::open_inline(&root, 0).unwrap()
        } else {
            VirtioFile::open(&root, 0).unwrap()
        };
        f.add_device(&console()).unwrap();
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
        let more: Vec<_> = (0..80).map(|_| f.alloc_buf(64 << 10)).collect();
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
