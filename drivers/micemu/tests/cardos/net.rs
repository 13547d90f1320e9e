//! eth0: hand-built ARP and ICMP frames through the net device, then a
//! host-side smoltcp stack (the host end of the link, as mpssd's TAP would
//! be) talking TCP echo, discard and HTTP to the card, and the card's shell
//! pinging the host.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mic_core::abi::virtio::{VIRTIO_NET_HDR_F_DATA_VALID, VirtioNetHdr};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, Icmpv4Packet, IpAddress, IpCidr, Ipv4Address, Ipv4Packet,
};

use crate::host::{Dev, Fleet, WAIT, booted, net_block, with_hdr};

const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
const CARD_MAC: [u8; 6] = [0x02, 0x6d, 0x69, 0x63, 0, 0];
const HOST_IP: [u8; 4] = [172, 31, 0, 254];
const CARD_IP: [u8; 4] = [172, 31, 0, 1];

fn csum(data: &[u8]) -> u16 {
    let mut acc: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

fn arp_request() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&HOST_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&HOST_MAC);
    f.extend_from_slice(&HOST_IP);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&CARD_IP);
    f
}

fn echo_request(seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34];
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(payload);
    let c = csum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0, 0, 64, 1, 0, 0]);
    ip.extend_from_slice(&HOST_IP);
    ip.extend_from_slice(&CARD_IP);
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = CARD_MAC.to_vec();
    f.extend_from_slice(&HOST_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&icmp);
    f
}

/// The next frame the card sends, with its header checked.
fn next_frame(net: &mut Dev) -> Vec<u8> {
    net.wait_until("a frame from the card", |d| d.pending(1));
    let raw = net.recv_one(1).unwrap();
    let hdr = VirtioNetHdr::from_slice(&raw[..10]).unwrap();
    assert_eq!(hdr, VirtioNetHdr::default(), "the card offloads nothing");
    raw[10..].to_vec()
}

fn booted_net() -> (Fleet, Dev) {
    let fleet = Fleet::start(1);
    let mut net = Dev::add(&fleet, 0, &net_block());
    fleet.boot(0);
    net.wait_driver_ok();
    fleet.wait_log(0, libmic::OS_UP_MARKER);
    (fleet, net)
}

#[test]
fn arp_and_icmp_echo_answer_hand_built_frames() {
    let (fleet, mut net) = booted_net();
    let log = fleet.wait_log(0, "virtio_net virtio0 eth0: MAC");
    assert!(
        log.iter().any(|l| l
            == "virtio_net virtio0 eth0: MAC 02:6d:69:63:00:00, features 0x00000000, link up, 172.31.0.1/24"),
        "{log:#?}"
    );
    net.send(&with_hdr(&arp_request(), VIRTIO_NET_HDR_F_DATA_VALID));
    let reply = next_frame(&mut net);
    assert_eq!(&reply[..6], &HOST_MAC);
    assert_eq!(&reply[6..12], &CARD_MAC);
    assert_eq!(&reply[12..22], &[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
    assert_eq!(&reply[22..28], &CARD_MAC);
    assert_eq!(&reply[28..32], &CARD_IP);
    assert_eq!(&reply[32..38], &HOST_MAC);
    assert_eq!(&reply[38..42], &HOST_IP);
    // An echo request with a broken checksum and no DATA_VALID is dropped;
    // the next one is answered (the first reply is for it).
    let mut bad = echo_request(1, b"0123456789abcdef");
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    net.send(&with_hdr(&bad, 0));
    net.send(&with_hdr(&echo_request(2, b"0123456789abcdef"), 0));
    let reply = next_frame(&mut net);
    let ip = Ipv4Packet::new_checked(&reply[14..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(ip.src_addr(), Ipv4Address::from(CARD_IP));
    assert_eq!(ip.dst_addr(), Ipv4Address::from(HOST_IP));
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!(
        (icmp.msg_type().into(), icmp.echo_ident(), icmp.echo_seq_no()),
        (0u8, 0x1234, 2)
    );
    assert_eq!(icmp.data(), b"0123456789abcdef");
    // A GSO frame (never negotiated) is dropped and logged.
    let gso = VirtioNetHdr {
        gso_type: 1,
        ..VirtioNetHdr::default()
    };
    let mut raw = gso.to_bytes().to_vec();
    raw.extend_from_slice(&echo_request(3, b"x"));
    net.send(&raw);
    fleet.wait_log(0, "eth0: bad gso type 1");
}

/// The host's end of the link: a smoltcp interface over the device file.
struct Peer {
    dev: Dev,
    iface: Interface,
    sockets: SocketSet<'static>,
    epoch: Instant,
}

struct HostPhy<'a>(&'a Dev);
struct Rx(Vec<u8>);
struct Tx<'a>(&'a Dev);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0[10..])
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; 10 + len];
        let r = f(&mut buf[10..]);
        // What mpssd does: PCIe does not corrupt, the card need not check.
        buf[0] = VIRTIO_NET_HDR_F_DATA_VALID;
        let _ = self.0.try_copy(0, &mut buf, true);
        r
    }
}

impl phy::Device for HostPhy<'_> {
    type RxToken<'a>
        = Rx
    where
        Self: 'a;
    type TxToken<'a>
        = Tx<'a>
    where
        Self: 'a;
    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(Rx, Tx<'_>)> {
        let frame = self.0.recv_one(1)?;
        Some((Rx(frame), Tx(self.0)))
    }
    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Tx<'_>> {
        self.0.pending(0).then_some(Tx(self.0))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = 1514;
        c
    }
}

impl Peer {
    fn new(dev: Dev) -> Peer {
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(HOST_MAC)));
        config.random_seed = 7;
        let mut iface = Interface::new(config, &mut HostPhy(&dev), smoltcp::time::Instant::from_millis(0));
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::from(Ipv4Address::from(HOST_IP)), 24))
                .unwrap();
        });
        Peer {
            dev,
            iface,
            sockets: SocketSet::new(Vec::new()),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    fn poll(&mut self) {
        let now = self.now();
        self.iface.poll(now, &mut HostPhy(&self.dev), &mut self.sockets);
    }

    /// Polls (on the card's doorbells, or when smoltcp's timers ask) until
    /// `cond` holds.
    fn run_until(&mut self, what: &str, mut cond: impl FnMut(&mut Peer) -> bool) {
        let start = Instant::now();
        loop {
            self.poll();
            if cond(self) {
                return;
            }
            assert!(start.elapsed() < WAIT, "timed out: {what}");
            let delay = self
                .iface
                .poll_delay(self.now(), &self.sockets)
                .map_or(Duration::from_millis(20), |d| {
                    Duration::from_micros(d.total_micros())
                });
            // TIMEOUT: the next smoltcp deadline, at most 20 ms.
            self.dev.wait_wake(delay.min(Duration::from_millis(20)));
        }
    }

    fn connect(&mut self, port: u16, local: u16) -> SocketHandle {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 65536]),
            tcp::SocketBuffer::new(vec![0; 65536]),
        );
        s.connect(
            self.iface.context(),
            (IpAddress::from(Ipv4Address::from(CARD_IP)), port),
            local,
        )
        .unwrap();
        let h = self.sockets.add(s);
        self.run_until("the connection", |p| p.sockets.get::<tcp::Socket>(h).may_send());
        h
    }

    /// Sends `data`, closes, and collects everything until the card closes.
    fn exchange(&mut self, h: SocketHandle, data: &[u8]) -> Vec<u8> {
        let mut sent = 0;
        let mut got = Vec::new();
        let mut closed = false;
        self.run_until("the exchange", |p| {
            let s = p.sockets.get_mut::<tcp::Socket>(h);
            if sent < data.len() && s.can_send() {
                sent += s.send_slice(&data[sent..]).unwrap();
            }
            if sent == data.len() && !closed && !data.is_empty() {
                s.close();
                closed = true;
            }
            while s.can_recv() {
                s.recv(|b| {
                    got.extend_from_slice(b);
                    (b.len(), ())
                })
                .unwrap();
            }
            !s.may_recv() && sent == data.len()
        });
        got
    }
}

#[test]
fn tcp_echo_discard_and_http_through_a_host_stack() {
    // (The fleet outlives the device: it is declared first.)
    let (_fleet, net) = booted_net();
    let mut peer = Peer::new(net);
    // Echo: every byte back, in order, across many segments.
    let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let h = peer.connect(7, 40_007);
    assert_eq!(peer.exchange(h, &data), data);
    // Discard: taken, nothing back.
    let h = peer.connect(9, 40_009);
    assert_eq!(peer.exchange(h, &data), b"");
    // HTTP: the card's status as JSON.
    let h = peer.connect(80, 40_080);
    let resp = peer.exchange(h, b"GET / HTTP/1.0\r\nHost: mic0\r\n\r\n");
    let resp = String::from_utf8(resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: application/json"), "{head}");
    let status: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(status["card"], "mic0");
    assert_eq!(status["state"], "running");
    assert_eq!(status["kernel"], "3.10.0-micemu");
    assert_eq!(status["net"][0]["name"], "eth0");
    assert_eq!(status["net"][0]["ipv4"], "172.31.0.1/24");
    assert_eq!(status["net"][0]["mac"], "02:6d:69:63:00:00");
    assert!(status["net"][0]["rx_packets"].as_u64().unwrap() > 10);
    assert_eq!(status["devices"][0]["type"], "net");
    assert_eq!(status["devices"][0]["status"], 7);
    // One net device: two used-ring pages and 64 + 64 buffers of 1536 bytes.
    assert_eq!(status["virtio_buffers_bytes"], 2 * 4096 + 2 * 64 * 1536);
    assert_eq!(status["virtio_quarantined_bytes"], 0);
    let h = peer.connect(80, 40_081);
    let resp = String::from_utf8(peer.exchange(h, b"GET /nope HTTP/1.0\r\n\r\n")).unwrap();
    assert!(resp.starts_with("HTTP/1.0 404 Not Found\r\n"), "{resp}");
    let h = peer.connect(80, 40_082);
    let resp = String::from_utf8(peer.exchange(h, b"DELETE / HTTP/1.0\r\n\r\n")).unwrap();
    assert!(resp.starts_with("HTTP/1.0 405 "), "{resp}");
}

/// Runs a host stack answering ARP and ping on `dev` until dropped.
struct PeerThread {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeerThread {
    fn start(dev: Dev) -> PeerThread {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peer = Peer::new(dev);
            while !s.load(Ordering::SeqCst) {
                peer.poll();
                // TIMEOUT: a bound on one wait between polls.
                peer.dev.wait_wake(Duration::from_millis(20));
            }
        });
        PeerThread {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for PeerThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn the_shell_pings_the_host_and_lists_its_interface() {
    let fleet = Fleet::start(1);
    let (mut con, [net]) = booted(&fleet, [net_block()]);
    let _peer = PeerThread::start(net);
    let ip = con.run("ip addr");
    assert!(
        ip.contains("2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500"),
        "{ip}"
    );
    assert!(
        ip.contains("link/ether 02:6d:69:63:00:00 brd ff:ff:ff:ff:ff:ff"),
        "{ip}"
    );
    assert!(
        ip.contains("inet 172.31.0.1/24 brd 172.31.0.255 scope global eth0"),
        "{ip}"
    );
    let out = con.run("ping -c 1 172.31.0.254");
    assert!(
        out.starts_with("PING 172.31.0.254 (172.31.0.254) 56(84) bytes of data.\r\n"),
        "{out}"
    );
    assert!(
        out.contains("64 bytes from 172.31.0.254: icmp_seq=1 time="),
        "{out}"
    );
    assert!(
        out.contains("1 packets transmitted, 1 received, 0% packet loss"),
        "{out}"
    );
    // Nobody at .77: ctrl-C ends the ping with its statistics.
    con.dev.send(b"ping -c 5 172.31.0.77\r");
    con.expect("bytes of data.\r\n");
    con.dev.send(b"\x03");
    let out = con.expect(&con.prompt());
    assert!(out.contains("--- 172.31.0.77 ping statistics ---"), "{out}");
    assert!(out.contains("100% packet loss"), "{out}");
    assert_eq!(
        con.run("ping -c 1 10.9.9.9"),
        "ping: connect: Network is unreachable\r\n"
    );
}
