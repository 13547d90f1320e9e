//! The virtio-net backend against micemu's emulated card, each test in a
//! network namespace of its own (the TAP `mic0` and everything that talks
//! to it live there; the host's namespace is never touched):
//!
//! - the card OS booted: real `ping`, `nc` (echo 7, discard 9) and `curl`
//!   (HTTP 80) from the namespace reach the card's stack through the TAP,
//!   the backend and the emulated card;
//! - a card played by the test: back-pressure when it stops posting
//!   receive buffers, doorbells only when the device waits for the card
//!   (the driver's kick suppression), and its hostile transmit headers
//!   kept from the TAP;
//! - the TAP's life: address and link up while the device runs, gone
//!   after, and an interface of the same name refused clearly.
//!
//! No sleeps: waits are on the device's counters, the played card's rings
//! or the tools' own exits, re-read until a deadline.

mod card;
mod netns;

use std::io::Write as _;
use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use libmic::vdev::VirtioFile;
use libmic::{BootRequest, MicRoot};
use mic_core::abi::virtio::{VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VirtioNetHdr};
use micemu::{Config, Instance, Timing};
use mpssd::config::CardConfig;
use mpssd::devices::net::{NetConfig, NetDevice, NetError, NetState, NetStats, hdr, netlink, tap};

/// Upper bound on any wait; only reached if something hangs.
const HANG: Duration = Duration::from_secs(30);
const CARD_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 1);
const HOST_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 254);
/// An ethertype of the IEEE's for local experiments: the test's own frames.
const ETH_TEST: u16 = 0x88b5;

struct Setup {
    dir: tempfile::TempDir,
    inst: Instance,
    stats: Arc<NetStats>,
    dev: Option<NetDevice>,
}

impl Setup {
    /// A namespace of this thread's own, micemu with one card, and the net
    /// device started on it.
    fn start() -> Setup {
        netns::enter();
        let dir = tempfile::tempdir().unwrap();
        let inst = Instance::start(
            dir.path(),
            Config {
                cards: 1,
                memory: 256 << 20,
                timing: Timing {
                    ack_budget: Duration::from_secs(5),
                    ..Timing::FAST
                },
                ..Config::default()
            },
        )
        .unwrap();
        let stats = Arc::new(NetStats::default());
        let dev = start_device(&inst, &stats).unwrap();
        Setup {
            dir,
            inst,
            stats,
            dev: Some(dev),
        }
    }

    fn root(&self) -> MicRoot {
        MicRoot::new(self.dir.path())
    }

    /// Re-reads the counters until `cond` holds.
    fn until(&self, what: &str, cond: impl Fn(&NetStats) -> bool) {
        let start = Instant::now();
        while !cond(&self.stats) {
            assert!(
                start.elapsed() < HANG,
                "timed out waiting for {what}; counters {:?}, state {:?}",
                self.stats.snapshot(),
                self.stats.state()
            );
            std::thread::yield_now();
        }
    }
}

fn start_device(inst: &Instance, stats: &Arc<NetStats>) -> Result<NetDevice, NetError> {
    let file = VirtioFile::open(&MicRoot::new(inst.root()), 0).unwrap();
    let cfg = NetConfig::resolve(0, &CardConfig::default(), None);
    NetDevice::start(0, file, &cfg, Arc::clone(stats))
}

fn get(stats: &NetStats, name: &str) -> u64 {
    stats.snapshot()[name]
}

/// Runs `cmd` (bounded by coreutils' `timeout`), feeding it `input`;
/// returns (success, stdout, stderr).
fn run(args: &[&str], input: &[u8]) -> (bool, Vec<u8>, String) {
    let mut child = Command::new("timeout")
        .arg("60")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{args:?}: {e} (is it installed? .ci/run installs it)"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A pattern no two stretches of which look alike.
fn pattern(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn host_tools_reach_the_card_os() {
    let s = Setup::start();
    let (up, addrs) = netlink::describe("mic0").unwrap();
    assert!(up, "mic0 is up");
    assert_eq!(addrs, vec![(HOST_IP, 24)]);
    let root = s.root();
    let c = root.card_by_id(0);
    c.boot_with(&BootRequest::defaults_for(&c), Some(&root.system_map()))
        .unwrap();
    c.wait_os_up(Some(HANG)).unwrap();
    s.until("the card's driver", |st| st.state() == NetState::Up);

    let (ok, out, err) = run(&["ping", "-c", "3", "-i", "0.2", "-W", "5", "172.31.0.1"], b"");
    let out = String::from_utf8_lossy(&out);
    assert!(ok, "ping failed: {out}{err}");
    assert!(out.contains("3 packets transmitted, 3 received"), "{out}");

    // Echo: a quarter of a megabyte comes back byte for byte.
    let data = pattern(256 << 10);
    let (ok, out, err) = run(&["nc", "-N", "-w", "20", "172.31.0.1", "7"], &data);
    assert!(ok, "nc to echo failed: {err}");
    assert_eq!(out.len(), data.len(), "echo returned {} bytes", out.len());
    assert!(out == data, "echo returned other bytes");

    // Discard: a megabyte goes in, nothing comes back.
    let rx_before = get(&s.stats, "rx_bytes");
    let (ok, out, err) = run(&["nc", "-N", "-w", "20", "172.31.0.1", "9"], &pattern(1 << 20));
    assert!(ok, "nc to discard failed: {err}");
    assert!(out.is_empty());
    assert!(get(&s.stats, "rx_bytes") - rx_before > 1 << 20);

    // HTTP: the card's status as JSON, its eth0 as the cmdline set it.
    let (ok, out, err) = run(&["curl", "-sS", "--max-time", "20", "http://172.31.0.1/"], b"");
    assert!(ok, "curl failed: {err}");
    let status: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let eth0 = &status["net"][0];
    assert_eq!(eth0["name"], "eth0", "{status}");
    assert_eq!(eth0["ipv4"], format!("{CARD_IP}/24"));
    // Every frame the card was given checked out (DATA_VALID, whole
    // frames: the TAP offloads nothing to a card that negotiated nothing).
    assert_eq!(eth0["rx_errors"], 0, "{status}");
    assert!(eth0["rx_bytes"].as_u64().unwrap() > 1 << 20);

    let st = s.stats.snapshot();
    assert_eq!(st["errors"], 0, "{st:?}");
    assert_eq!(st["rx_truncated"], 0, "{st:?}");
    assert!(st["tx_frames"] > 100 && st["rx_frames"] > 700, "{st:?}");
    assert_eq!(st["activations"], 1);
}

/// A UDP datagram to the link's broadcast address: one frame into the
/// TAP, no ARP needed.
fn broadcaster() -> UdpSocket {
    let u = UdpSocket::bind((HOST_IP, 0)).unwrap();
    u.set_broadcast(true).unwrap();
    u
}

/// Broadcasts datagrams `datagram N` for each N of `nums`.
fn datagrams(udp: &UdpSocket, nums: std::ops::Range<u32>) {
    for i in nums {
        udp.send_to(format!("datagram {i}").as_bytes(), "172.31.0.255:9")
            .unwrap();
    }
}

/// The UDP payload of a frame the card received (header + Ethernet +
/// IPv4 + UDP), if it is one of the test's datagrams.
fn datagram(raw: &[u8]) -> Option<&[u8]> {
    let f = raw.get(hdr::HDR..)?;
    (f.get(12..14)? == [8, 0] && f.get(23)? == &17).then(|| &f[42..])
}

#[test]
fn a_card_that_stops_posting_buffers_stops_the_tap_reads() {
    let s = Setup::start();
    let mut card = card::Card::up(&s.inst, 0, 0);
    s.until("the card's driver", |st| st.state() == NetState::Up);
    let udp = broadcaster();

    card.post_rx(4, 1536);
    card.kick();
    datagrams(&udp, 0..50);
    // Four buffers filled; the fifth frame waits, the ring is full.
    s.until("a full ring", |st| st.rx_ring_full.load(Ordering::Relaxed) == 1);
    let got = card.take_rx();
    assert_eq!(got.len(), 4);
    assert_eq!(get(&s.stats, "rx_frames"), 4);
    for raw in &got {
        let h = VirtioNetHdr::from_slice(&raw[..hdr::HDR]).unwrap();
        assert_eq!(h.flags, VIRTIO_NET_HDR_F_DATA_VALID, "marked as the original did");
    }
    let ours: Vec<_> = got.iter().filter_map(|r| datagram(r)).collect();
    assert!(ours.iter().all(|d| d.starts_with(b"datagram ")));

    // More frames keep coming; the device does not look at the TAP: a
    // doorbell with nothing posted wakes it once, and it sleeps again.
    let polls = get(&s.stats, "polls");
    let bells = get(&s.stats, "doorbells");
    datagrams(&udp, 50..150);
    card.kick();
    s.until("the doorbell", |st| st.doorbells.load(Ordering::Relaxed) > bells);
    s.until("sleeping again", |st| st.polls.load(Ordering::Relaxed) > polls);
    assert!(
        get(&s.stats, "polls") <= polls + 3,
        "the device woke {} times for 100 frames it had no room for",
        get(&s.stats, "polls") - polls
    );
    assert_eq!(get(&s.stats, "rx_frames"), 4, "nothing delivered without buffers");

    // The card posts again: delivery resumes on its kick, and stops when
    // the new buffers are full (the device never held more than one).
    card.post_rx(8, 1536);
    card.kick();
    s.until("a second full ring", |st| {
        st.rx_ring_full.load(Ordering::Relaxed) == 2
    });
    assert_eq!(get(&s.stats, "rx_frames"), 12);
    let got = card.take_rx();
    assert_eq!(got.len(), 8);
    // In order: the datagrams that arrived were queued in the TAP, not lost
    // or reordered by the device.
    let nums: Vec<u32> = got
        .iter()
        .filter_map(|r| datagram(r))
        .map(|d| std::str::from_utf8(&d[9..]).unwrap().parse().unwrap())
        .collect();
    assert!(nums.windows(2).all(|w| w[0] < w[1]), "{nums:?}");
    assert_eq!(get(&s.stats, "errors"), 0);
}

/// Frames from the TAP reach the card in the order they came, every one,
/// across batches (each read from the TAP while the one before is copied)
/// and uneven refills: the card posts 1, 7, 33, 64 … buffers at a time, so
/// batches end mid-set and the frames read ahead wait their turn.
#[test]
fn frames_from_the_tap_reach_the_card_in_order_across_batches() {
    const FRAMES: u32 = 600;
    let s = Setup::start();
    let mut card = card::Card::up(&s.inst, 0, 0);
    s.until("the card's driver", |st| st.state() == NetState::Up);
    let ok = std::process::Command::new("ip")
        .args(["link", "set", "dev", "mic0", "txqueuelen", "2000"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "ip link set mic0 txqueuelen");
    // Every datagram waits in the TAP before the card posts a buffer.
    datagrams(&broadcaster(), 0..FRAMES);
    let mut nums: Vec<u32> = Vec::new();
    let mut frames = 0u64;
    let posts = [1usize, 7, 33, 64, 2, 50, 31, 32, 17, 64, 5];
    let mut i = 0;
    let start = std::time::Instant::now();
    while nums.len() < FRAMES as usize {
        assert!(start.elapsed() < HANG, "only {} of {FRAMES} arrived", nums.len());
        let before = get(&s.stats, "rx_frames");
        // Never more than the frames left: each post is filled whole.
        let n = posts[i % posts.len()].min(FRAMES as usize - nums.len());
        i += 1;
        card.post_rx(n, 1536);
        card.kick_if_needed();
        s.until("the posted buffers filled", |st| {
            st.rx_frames.load(Ordering::Relaxed) == before + n as u64
        });
        let got = card.take_rx();
        assert_eq!(got.len(), n);
        frames += n as u64;
        // Other frames (the kernel's own: IPv6 router solicitations, say)
        // may come too; the test's datagrams come in order.
        nums.extend(got.iter().filter_map(|r| datagram(r)).filter_map(|d| {
            std::str::from_utf8(d.strip_prefix(b"datagram ")?)
                .ok()?
                .parse::<u32>()
                .ok()
        }));
    }
    assert_eq!(nums, (0..FRAMES).collect::<Vec<_>>());
    assert_eq!(get(&s.stats, "rx_frames"), frames);
    assert_eq!(get(&s.stats, "errors"), 0);
}

#[test]
fn frames_longer_than_the_cards_buffers_are_cut_and_counted() {
    let s = Setup::start();
    let mut card = card::Card::up(&s.inst, 0, 0);
    s.until("the card's driver", |st| st.state() == NetState::Up);
    // Buffers shorter than any frame (the header and an Ethernet header
    // are 24 bytes; an ARP frame alone is 42).
    card.post_rx(3, 30);
    card.kick();
    datagrams(&broadcaster(), 0..10);
    s.until("three frames", |st| st.rx_frames.load(Ordering::Relaxed) == 3);
    assert_eq!(get(&s.stats, "rx_truncated"), 3, "each frame cut is counted");
    assert!(
        get(&s.stats, "rx_bytes") >= 3 * 42,
        "the frames' own lengths are counted"
    );
    let got = card.take_rx();
    assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [30; 3]);
    // A buffer that fits takes the next frame whole.
    card.post_rx(1, 1536);
    card.kick();
    s.until("a fourth frame", |st| st.rx_frames.load(Ordering::Relaxed) == 4);
    assert_eq!(get(&s.stats, "rx_truncated"), 3);
    let got = card.take_rx();
    assert!(
        got.len() == 1 && got[0].len() > 30,
        "{:?}",
        got.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert_eq!(get(&s.stats, "errors"), 0);
}

#[test]
fn the_card_rings_only_when_the_device_waits_for_it() {
    let s = Setup::start();
    let mut card = card::Card::up(&s.inst, 0, 0);
    s.until("the card's driver", |st| st.state() == NetState::Up);
    let udp = broadcaster();

    // A first receive buffer: the ring was empty, the card rings.
    card.post_rx(1, 1536);
    assert!(card.kick_if_needed());
    // The device has a buffer it has not filled: it wants no kick for more.
    card.until("the device to turn kicks off", HANG, |c| !c.kicks_wanted(0));
    for _ in 0..63 {
        card.post_rx(1, 1536);
        assert!(!card.kick_if_needed(), "a doorbell the device did not need");
    }
    assert_eq!((card.rung, card.saved), (1, 63));
    assert!(card.kicks_wanted(1), "nothing waits on the transmit ring");

    // Frames fill all 64 and one waits: the device needs buffers now.
    datagrams(&udp, 0..100);
    s.until("a full ring", |st| st.rx_ring_full.load(Ordering::Relaxed) == 1);
    assert_eq!(get(&s.stats, "rx_frames"), 64);
    assert!(card.kicks_wanted(0));
    assert_eq!(card.take_rx().len(), 64);
    // One more buffer rings, and the waiting frame is delivered.
    card.post_rx(1, 1536);
    assert!(card.kick_if_needed());
    s.until("the waiting frame", |st| {
        st.rx_frames.load(Ordering::Relaxed) == 65
    });

    // Transmit: a frame on an idle ring rings; once the device has taken
    // it, the next rings again (kicks are never left off).
    let frame = netns::ether([0xff; 6], [0x02, 0x6d, 0x69, 0x63, 0, 1], ETH_TEST, &[1; 100]);
    let plain = VirtioNetHdr::default().to_bytes();
    for n in 1..=2 {
        assert!(card.send(&[&plain, &frame]));
        assert!(card.kick_if_needed());
        s.until("the frame sent", |st| st.tx_frames.load(Ordering::Relaxed) == n);
        card.until("its completion", HANG, |c| c.reap_tx() == 1);
        assert!(card.kicks_wanted(1));
    }
    assert_eq!(card.rung, 4);
    assert_eq!(get(&s.stats, "errors"), 0);
}

/// Frames from the card reach the TAP in the order the card sent them,
/// every one, across many batches (each copied while the one before is
/// written out) and refills of the ring, a hostile one among them dropped
/// without disturbing the rest.
#[test]
fn frames_from_the_card_reach_the_tap_in_order_across_batches() {
    const FRAMES: u16 = 1000;
    let s = Setup::start();
    let mut card = card::Card::up(&s.inst, 0, hdr::host_features());
    s.until("the card's driver", |st| st.state() == NetState::Up);
    let cap = netns::Packet::bind("mic0", Duration::from_secs(10));
    let plain = VirtioNetHdr::default().to_bytes();
    let frame = |n: u16| {
        let mut body = vec![0u8; 200];
        body[..2].copy_from_slice(&n.to_be_bytes());
        netns::ether([0xff; 6], [0x02, 0x6d, 0x69, 0x63, 0, 1], ETH_TEST, &body)
    };
    // Read as they come: the socket's queue would not hold them all.
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while seen.len() < usize::from(FRAMES) - 1 {
            let Some(f) = cap.recv() else { break };
            if f.get(12..14) == Some(&ETH_TEST.to_be_bytes()[..]) {
                seen.push(u16::from_be_bytes([f[14], f[15]]));
            }
        }
        seen
    });
    let mut sent = 0u16;
    while sent < FRAMES {
        card.reap_tx();
        let mut added = false;
        while sent < FRAMES {
            // Frame 500 is shorter than its header: dropped, counted.
            let ok = if sent == 500 {
                card.send(&[&plain[..5]])
            } else {
                card.send(&[&plain, &frame(sent)])
            };
            if !ok {
                break;
            }
            sent += 1;
            added = true;
        }
        if added {
            card.kick_if_needed();
        } else {
            card.until("room in the transmit ring", HANG, |c| {
                c.reap_tx();
                c.vdev.queue(1).unwrap().num_free() > 0
            });
        }
    }
    let seen = reader.join().expect("the reader");
    let want: Vec<u16> = (0..FRAMES).filter(|&n| n != 500).collect();
    assert_eq!(seen, want);
    s.until("every frame counted", |st| {
        st.tx_frames.load(Ordering::Relaxed) >= u64::from(FRAMES) - 1
    });
    assert_eq!(s.stats.snapshot()["tx_drop_short"], 1);
}

#[test]
fn hostile_frames_from_the_card_never_reach_the_tap() {
    let s = Setup::start();
    let mut card = card::Card::up(&s.inst, 0, hdr::host_features());
    s.until("the card's driver", |st| st.state() == NetState::Up);
    let cap = netns::Packet::bind("mic0", Duration::from_secs(10));

    let mac = |n| [0x02, 0x6d, 0x69, 0x63, 0, n];
    let good = |n: u8| netns::ether([0xff; 6], mac(n), ETH_TEST, &[n; 100]);
    let plain = VirtioNetHdr::default().to_bytes();
    let h = |flags, gso_type, hdr_len, gso_size, csum_start, csum_offset| {
        VirtioNetHdr {
            flags,
            gso_type,
            hdr_len,
            gso_size,
            csum_start,
            csum_offset,
        }
        .to_bytes()
    };
    let ipv4 = netns::ether([0xff; 6], mac(9), 0x0800, &[0x45; 200]);
    let huge = vec![0u8; 70_000];
    let (g1, g2, g3) = (good(1), good(2), good(3));
    let sane = h(VIRTIO_NET_HDR_F_DATA_VALID | 0x80, 0x80, 9999, 7, 60000, 60000);
    let gso0 = h(VIRTIO_NET_HDR_F_NEEDS_CSUM, 1, 54, 0, 34, 16);
    let gso_hdr_len = h(VIRTIO_NET_HDR_F_NEEDS_CSUM, 1, 5000, 1448, 34, 16);
    let ufo = h(VIRTIO_NET_HDR_F_NEEDS_CSUM, 3, 42, 1400, 34, 6);
    let csum = h(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 200, 100);
    let chains: Vec<Vec<&[u8]>> = vec![
        vec![&plain, &g1],
        // Shorter than the header; a header and no frame.
        vec![&plain[..5]],
        vec![&plain],
        // Longer than 65550 bytes after the header, in pieces.
        vec![&plain, &huge[..30_000], &huge[30_000..]],
        // GSO with gso_size 0; hdr_len past the frame.
        vec![&gso0, &ipv4],
        vec![&gso_hdr_len, &ipv4],
        // UDP fragmentation (UFO was not offered).
        vec![&ufo, &ipv4],
        // A partial checksum whose field lies beyond the frame.
        vec![&csum, &ipv4],
        // Fields meaning nothing for a plain frame: cleared, delivered.
        vec![&sane, &g2],
    ];
    for c in &chains {
        assert!(card.send(c));
    }
    card.kick();
    card.until("every chain completed", HANG, |c| {
        c.reap_tx();
        c.vdev.queue(1).unwrap().in_flight() == 0
    });

    let mut seen = Vec::new();
    while seen.len() < 2 {
        let f = cap.recv().expect("the good frames reach the TAP");
        if f.get(12..14) == Some(&ETH_TEST.to_be_bytes()[..]) {
            seen.push(f);
        }
    }
    assert_eq!(seen, vec![g1, g2]);
    // The device counts a frame once the TAP took it: a reader of the
    // interface may see it first.
    s.until("the good frames counted", |st| {
        st.tx_frames.load(Ordering::Relaxed) >= 2
    });
    let st = s.stats.snapshot();
    assert_eq!(st["tx_frames"], 2, "{st:?}");
    assert_eq!(st["tx_sanitised"], 1, "{st:?}");
    assert_eq!(st["tx_drop_short"], 2, "{st:?}");
    assert_eq!(st["tx_drop_long"], 1, "{st:?}");
    assert_eq!(st["tx_drop_gso"], 3, "{st:?}");
    assert_eq!(st["tx_drop_csum"], 1, "{st:?}");
    assert_eq!(st["tx_drop_tap"], 0, "the kernel refused nothing: {st:?}");
    assert_eq!(st["errors"], 7);
    assert_eq!(s.stats.state(), NetState::Up, "dropping frames breaks nothing");

    // And the next well-formed frame still goes through.
    assert!(card.send(&[&plain, &g3]));
    card.kick();
    loop {
        let f = cap.recv().expect("the frame after the hostile ones");
        if f.get(12..14) == Some(&ETH_TEST.to_be_bytes()[..]) {
            assert_eq!(f, g3);
            break;
        }
    }
}

#[test]
fn the_tap_lives_with_the_device() {
    let mut s = Setup::start();
    assert!(netlink::describe("mic0").unwrap().0);
    // One interface of that name: a second device is refused, clearly,
    // and adds nothing to the card.
    let again = start_device(&s.inst, &Arc::new(NetStats::default())).unwrap_err();
    let text = format!("{again}");
    assert!(
        matches!(again, NetError::Tap(tap::TapError::Create { .. })),
        "{again:?}"
    );
    assert!(text.contains("mic0") && text.contains("exists already"), "{text}");
    s.dev.take().unwrap().stop();
    assert_eq!(s.stats.state(), NetState::Down);
    let gone = netlink::describe("mic0").unwrap_err();
    assert!(format!("{gone}").contains("refused"), "{gone}");
    // Started again (as after a card reset), with the same counters.
    let dev = start_device(&s.inst, &s.stats).unwrap();
    assert_eq!(netlink::describe("mic0").unwrap(), (true, vec![(HOST_IP, 24)]));
    assert_eq!(dev.status().target, "mic0 172.31.0.254/24");
    assert_eq!(dev.status().kind, "net");
    dev.stop();
}
