//! virtio-net on the card (`eth0`) under a smoltcp interface: vq 0 receives
//! (the card keeps [`RX_BUFS`] writable buffers posted), vq 1 transmits;
//! every frame is prefixed by the 10-byte `virtio_net_hdr`.
//!
//! Receive honours the header as Linux's driver does: `NEEDS_CSUM` gets the
//! checksum completed at `csum_start + csum_offset`, `DATA_VALID` skips
//! verification (mpssd marks every frame so: PCIe does not corrupt), any
//! other frame has its IPv4, TCP, UDP and ICMP checksums verified here
//! (smoltcp's own receive checks are off, so none is done twice). GSO
//! frames were never negotiated and are dropped and counted. Transmit
//! sends a plain header (no offload) and smoltcp computes every checksum.
//!
//! The interface has the card's own locally administered MAC
//! (`02:6d:69:63:CARD:N`, unless the host offers one), eth0 the command
//! line's static address; it answers ARP and ICMP echo, and serves TCP echo
//! (7), discard (9) and HTTP (80, the card's status as JSON). smoltcp's
//! timers are polled when it asks ([`Net::next_poll`]); `ping` runs on an
//! ICMP socket.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use mic_core::abi::virtio::{
    VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE, VirtioNetConfig, VirtioNetHdr, feature, net_features,
};
use mic_core::card::virtio::VirtioError;
use mic_core::card::vring::Buf;
use mic_core::hw::{Memory, Mmio};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::socket::{icmp, tcp};
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress,
    IpCidr, IpProtocol, Ipv4Cidr, Ipv4Packet, TcpPacket, UdpPacket,
};

use super::memmap::{Arena, Region};
use super::virtio::{Io, ProbeError};

/// Receive buffers kept posted.
pub const RX_BUFS: u32 = 64;
/// Transmit buffers.
pub const TX_BUFS: u32 = 64;
/// Bytes per buffer: header and the largest untagged Ethernet frame.
pub const BUF: u32 = 1536;
/// The virtio_net_hdr the MIC exchanges.
pub const HDR: usize = VirtioNetHdr::SIZE;
/// MTU of eth0.
pub const MTU: u32 = 1500;
/// Largest frame without FCS.
const FRAME_MAX: usize = MTU as usize + 14;
/// The services and how many connections each takes at once.
const SERVICES: [(u16, Svc); 3] = [(7, Svc::Echo), (9, Svc::Discard), (80, Svc::Http)];
/// At most this many connections per service at once (one socket each;
/// one of them always listening while fewer are open, as a backlog).
const CONNS_PER_SERVICE: usize = 8;
/// Socket buffers per connection.
const TCP_BUF: usize = 8 << 10;
/// The largest HTTP request accepted.
const HTTP_MAX_REQUEST: usize = 8 << 10;
/// ping's interval and its wait for the last reply.
const PING_INTERVAL: Duration = Duration::from_secs(1);
const PING_WAIT: Duration = Duration::from_secs(1);
const PING_PAYLOAD: usize = 56;

/// The features the card's driver takes when offered: a MAC from the host,
/// and link status. No offloads: smoltcp neither produces partial
/// checksums nor takes GSO frames.
#[must_use]
pub fn wanted_features() -> u32 {
    feature(net_features::MAC) | feature(net_features::STATUS)
}

/// The card's own MAC for net device `n`: locally administered, unicast,
/// the same at every boot.
#[must_use]
pub fn card_mac(card: u32, n: u32) -> [u8; 6] {
    [0x02, 0x6d, 0x69, 0x63, card as u8, n as u8]
}

/// Why a received frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxDrop {
    /// Shorter than a header and an Ethernet header.
    Short(usize),
    /// A GSO frame (never negotiated).
    Gso(u8),
    /// `NEEDS_CSUM` offsets outside the frame.
    CsumOffsets { start: u16, offset: u16 },
    /// A checksum that does not verify.
    Checksum(&'static str),
}

impl std::fmt::Display for RxDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RxDrop::Short(n) => write!(f, "short frame ({n} bytes)"),
            RxDrop::Gso(t) => write!(f, "bad gso type {t}"),
            RxDrop::CsumOffsets { start, offset } => {
                write!(f, "partial checksum at {start}+{offset} outside the frame")
            }
            RxDrop::Checksum(what) => write!(f, "bad {what} checksum"),
        }
    }
}

/// RFC 1071 sum (not complemented) of `data`, from `init`.
fn ones_sum(init: u32, data: &[u8]) -> u16 {
    let mut acc = u64::from(init);
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        acc += u64::from(*b) << 8;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Checks a received buffer (header + frame) as the driver must; on
/// success the frame (after the header) may go to the stack. A partial
/// checksum is completed in place.
pub fn rx_check(raw: &mut [u8]) -> Result<(), RxDrop> {
    if raw.len() < HDR + 14 {
        return Err(RxDrop::Short(raw.len()));
    }
    let hdr = VirtioNetHdr::from_slice(&raw[..HDR]).ok_or(RxDrop::Short(raw.len()))?;
    let gso = hdr.gso_type & !VIRTIO_NET_HDR_GSO_ECN;
    if gso != VIRTIO_NET_HDR_GSO_NONE {
        return Err(RxDrop::Gso(hdr.gso_type));
    }
    let frame = &mut raw[HDR..];
    if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
        let (start, offset) = (usize::from(hdr.csum_start), usize::from(hdr.csum_offset));
        let bad = RxDrop::CsumOffsets {
            start: hdr.csum_start,
            offset: hdr.csum_offset,
        };
        let at = start
            .checked_add(offset)
            .filter(|&a| a + 2 <= frame.len())
            .ok_or(bad)?;
        // The field holds the pseudo-header sum; the rest is ours to add.
        let mut sum = !ones_sum(0, &frame[start..]);
        if sum == 0 {
            sum = 0xffff;
        }
        frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        return Ok(());
    }
    if hdr.flags & VIRTIO_NET_HDR_F_DATA_VALID != 0 {
        return Ok(());
    }
    verify(frame)
}

/// Verifies the checksums of an IPv4 frame (others pass: ARP has none, and
/// what smoltcp cannot parse it drops).
fn verify(frame: &[u8]) -> Result<(), RxDrop> {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return Ok(());
    };
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return Ok(());
    }
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return Ok(());
    };
    if !ip.verify_checksum() {
        return Err(RxDrop::Checksum("IPv4 header"));
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Ok(());
    }
    let (src, dst) = (IpAddress::Ipv4(ip.src_addr()), IpAddress::Ipv4(ip.dst_addr()));
    let ok = match ip.next_header() {
        IpProtocol::Tcp => TcpPacket::new_checked(ip.payload()).is_ok_and(|p| p.verify_checksum(&src, &dst)),
        IpProtocol::Udp => UdpPacket::new_checked(ip.payload()).is_ok_and(|p| p.verify_checksum(&src, &dst)),
        IpProtocol::Icmp => Icmpv4Packet::new_checked(ip.payload()).is_ok_and(|p| p.verify_checksum()),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(RxDrop::Checksum(match ip.next_header() {
            IpProtocol::Tcp => "TCP",
            IpProtocol::Udp => "UDP",
            _ => "ICMP",
        }))
    }
}

/// Counters, as `ip -s link` would show them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_dropped: u64,
    pub rx_errors: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_dropped: u64,
}

#[derive(Debug)]
struct TxSide {
    region: Region,
    free: Vec<u32>,
    /// Written frames to make available: (buffer, bytes with header).
    pending: Vec<(u32, u32)>,
}

/// smoltcp's view of the device during one poll.
struct Phy<'a, P: Memory> {
    mem: &'a P,
    tx: &'a mut TxSide,
    rxq: &'a mut VecDeque<Vec<u8>>,
    stats: &'a mut NetStats,
    up: bool,
}

struct RxTok(Vec<u8>);

impl phy::RxToken for RxTok {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

struct TxTok<'a, P: Memory> {
    mem: &'a P,
    tx: &'a mut TxSide,
    stats: &'a mut NetStats,
    up: bool,
}

impl<P: Memory> phy::TxToken for TxTok<'_, P> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; HDR + len];
        let r = f(&mut buf[HDR..]);
        let slot = if self.up && len <= FRAME_MAX {
            self.tx.free.pop()
        } else {
            None
        };
        let Some(i) = slot else {
            self.stats.tx_dropped += 1;
            return r;
        };
        buf[..HDR].copy_from_slice(&VirtioNetHdr::default().to_bytes());
        if self
            .mem
            .write(self.tx.region.at(u64::from(i * BUF)), &buf)
            .is_err()
        {
            self.tx.free.push(i);
            self.stats.tx_dropped += 1;
            return r;
        }
        self.tx.pending.push((i, buf.len() as u32));
        self.stats.tx_packets += 1;
        self.stats.tx_bytes += len as u64;
        r
    }
}

impl<P: Memory> phy::Device for Phy<'_, P> {
    type RxToken<'a>
        = RxTok
    where
        Self: 'a;
    type TxToken<'a>
        = TxTok<'a, P>
    where
        Self: 'a;

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(RxTok, TxTok<'_, P>)> {
        let frame = self.rxq.pop_front()?;
        // A reply with no free buffer is dropped (counted), as a full
        // transmit queue drops: receiving never stalls on the host.
        Some((
            RxTok(frame),
            TxTok {
                mem: self.mem,
                tx: self.tx,
                stats: self.stats,
                up: self.up,
            },
        ))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<TxTok<'_, P>> {
        if !self.up || self.tx.free.is_empty() {
            return None;
        }
        Some(TxTok {
            mem: self.mem,
            tx: self.tx,
            stats: self.stats,
            up: self.up,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = FRAME_MAX;
        caps.max_burst_size = None;
        caps.checksum = checksums();
        caps
    }
}

/// Compute every checksum on transmit; verify none on receive
/// ([`rx_check`] did, or the host vouched for the frame).
fn checksums() -> ChecksumCapabilities {
    let mut c = ChecksumCapabilities::default();
    c.ipv4 = Checksum::Tx;
    c.udp = Checksum::Tx;
    c.tcp = Checksum::Tx;
    c.icmpv4 = Checksum::Tx;
    c
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Svc {
    Echo,
    Discard,
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum HttpState {
    #[default]
    Reading,
    /// A GET of the status: waiting for the card to supply it.
    WantStatus,
    Sending,
}

#[derive(Debug, Default)]
struct HttpConn {
    state: HttpState,
    req: Vec<u8>,
    resp: Vec<u8>,
    sent: usize,
}

#[derive(Debug)]
struct Service {
    handle: SocketHandle,
    port: u16,
    kind: Svc,
    http: HttpConn,
}

impl Service {
    /// A new socket listening on `port`.
    fn listen(sockets: &mut SocketSet<'static>, port: u16, kind: Svc) -> Self {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; TCP_BUF]),
            tcp::SocketBuffer::new(vec![0; TCP_BUF]),
        );
        // Port is non-zero and the socket fresh: listen cannot fail.
        let _ = s.listen(port);
        Service {
            handle: sockets.add(s),
            port,
            kind,
            http: HttpConn::default(),
        }
    }
}

#[derive(Debug)]
struct Ping {
    console: u32,
    target: Ipv4Addr,
    count: u32,
    ident: u16,
    sent: u32,
    received: u32,
    next_send: Instant,
    last_sent: Option<Instant>,
    waiting: Vec<(u16, Instant)>,
    rtts: Vec<f64>,
    started: Instant,
}

impl Ping {
    // Milliseconds as floating point, for display only.
    #[allow(clippy::cast_precision_loss)]
    fn summary(&self, now: Instant) -> String {
        let loss = ((self.sent - self.received) * 100)
            .checked_div(self.sent)
            .unwrap_or(0);
        let mut s = format!(
            "\n--- {} ping statistics ---\n{} packets transmitted, {} received, {loss}% packet loss, time {}ms\n",
            self.target,
            self.sent,
            self.received,
            now.saturating_duration_since(self.started).as_millis()
        );
        if !self.rtts.is_empty() {
            let n = self.rtts.len() as f64;
            let min = self.rtts.iter().copied().fold(f64::INFINITY, f64::min);
            let max = self.rtts.iter().copied().fold(0.0, f64::max);
            let avg = self.rtts.iter().sum::<f64>() / n;
            let mdev = (self.rtts.iter().map(|r| (r - avg) * (r - avg)).sum::<f64>() / n).sqrt();
            let _ = writeln!(
                s,
                "rtt min/avg/max/mdev = {min:.3}/{avg:.3}/{max:.3}/{mdev:.3} ms"
            );
        }
        s
    }
}

/// The driver of one virtio-net device and its TCP/IP stack.
pub struct Net {
    name: String,
    mac: [u8; 6],
    link_up: bool,
    rx: Region,
    tx: TxSide,
    rxq: VecDeque<Vec<u8>>,
    iface: Interface,
    sockets: SocketSet<'static>,
    services: Vec<Service>,
    icmp: Option<SocketHandle>,
    ping: Option<Ping>,
    pings: u16,
    ident_base: u16,
    addr: Option<(Ipv4Addr, u8)>,
    stats: NetStats,
    epoch: Instant,
    /// Receive errors seen (for rate-limiting their log lines).
    rx_warnings: u64,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("name", &self.name)
            .field("mac", &self.mac)
            .field("addr", &self.addr)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn valid_mac(m: [u8; 6]) -> bool {
    m[0] & 1 == 0 && m != [0; 6]
}

impl Net {
    /// Sets up the interface for device `n` (`eth{n}`) of card `card`,
    /// with `addr` if it is eth0 and the command line gave one.
    pub fn new<M: Mmio, P: Memory>(
        io: &mut Io<'_, M, P>,
        arena: &mut Arena,
        name: String,
        card: u32,
        n: u32,
        addr: Option<(Ipv4Addr, u8)>,
    ) -> Result<(Self, Vec<Region>), ProbeError> {
        let features = io.vdev.features();
        let mut raw = [0u8; VirtioNetConfig::SIZE];
        let len = usize::from(io.vdev.desc().config_len).min(raw.len());
        let _ = io.vdev.read_config(&io.hw.phys, 0, &mut raw[..len]);
        let cfg = VirtioNetConfig::from_bytes(&raw);
        let mut mac = card_mac(card, n);
        if features & feature(net_features::MAC) != 0 {
            if valid_mac(cfg.mac) {
                mac = cfg.mac;
            } else {
                io.log(4, "the host's MAC is not a unicast address; using the card's own");
            }
        }
        let link_up = features & feature(net_features::STATUS) == 0 || cfg.status & 1 != 0;
        let rx = arena
            .alloc(u64::from(RX_BUFS * BUF))
            .ok_or(ProbeError::NoMemory)?;
        let Some(txr) = arena.alloc(u64::from(TX_BUFS * BUF)) else {
            arena.free(rx);
            return Err(ProbeError::NoMemory);
        };
        let mut tx = TxSide {
            region: txr,
            free: (0..TX_BUFS).rev().collect(),
            pending: Vec::new(),
        };
        let mut rxq = VecDeque::new();
        let mut stats = NetStats::default();
        let epoch = io.now;
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        config.random_seed = 0x6d69_6300_0000_0000 | u64::from(card) << 8 | u64::from(n);
        let mut phy = Phy {
            mem: &io.hw.phys,
            tx: &mut tx,
            rxq: &mut rxq,
            stats: &mut stats,
            up: link_up,
        };
        let mut iface = Interface::new(config, &mut phy, smoltcp::time::Instant::from_micros(0));
        if let Some((a, len)) = addr {
            iface.update_ip_addrs(|addrs| {
                let _ = addrs.push(IpCidr::Ipv4(Ipv4Cidr::new(a, len)));
            });
        }
        let mut sockets = SocketSet::new(Vec::new());
        let mut services = Vec::new();
        for (port, kind) in SERVICES {
            services.push(Service::listen(&mut sockets, port, kind));
        }
        let net = Self {
            name,
            mac,
            link_up,
            rx,
            tx,
            rxq,
            iface,
            sockets,
            services,
            icmp: None,
            ping: None,
            pings: 0,
            ident_base: (card as u16) << 8 | (n as u16) << 4,
            addr,
            stats,
            epoch,
            rx_warnings: 0,
        };
        Ok((net, vec![rx, txr]))
    }

    /// `ethN`.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The MAC in use.
    #[must_use]
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The IPv4 address and prefix, if configured.
    #[must_use]
    pub fn addr(&self) -> Option<(Ipv4Addr, u8)> {
        self.addr
    }

    /// Whether the link is up.
    #[must_use]
    pub fn link_up(&self) -> bool {
        self.link_up
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    fn rx_buf(&self, i: u32) -> Buf {
        Buf {
            addr: self.rx.at(u64::from(i * BUF)),
            len: BUF,
            write: true,
        }
    }

    fn smol_now(&self, now: Instant) -> smoltcp::time::Instant {
        let us = now.saturating_duration_since(self.epoch).as_micros();
        smoltcp::time::Instant::from_micros(i64::try_from(us).unwrap_or(i64::MAX))
    }

    /// Posts the receive buffers.
    pub fn start<M: Mmio, P: Memory>(&mut self, io: &mut Io<'_, M, P>) -> Result<(), VirtioError> {
        for i in 0..RX_BUFS {
            io.add(0, &[self.rx_buf(i)], i)?;
        }
        let addr = self
            .addr
            .map_or_else(|| "no address".to_owned(), |(a, l)| format!("{a}/{l}"));
        io.log(
            6,
            &format!(
                "MAC {}, features {:#010x}, link {}, {addr}",
                super::shell::mac_str(&self.mac),
                io.vdev.features(),
                if self.link_up { "up" } else { "down" }
            ),
        );
        Ok(())
    }

    /// A config change: the link status, when the host reports it.
    pub fn config_changed<M: Mmio, P: Memory>(&mut self, io: &mut Io<'_, M, P>) {
        if io.vdev.features() & feature(net_features::STATUS) == 0 {
            return;
        }
        let mut raw = [0u8; VirtioNetConfig::SIZE];
        let len = usize::from(io.vdev.desc().config_len).min(raw.len());
        if io.vdev.read_config(&io.hw.phys, 0, &mut raw[..len]).is_ok() {
            let up = VirtioNetConfig::from_bytes(&raw).status & 1 != 0;
            if up != self.link_up {
                self.link_up = up;
                io.log(6, if up { "link up" } else { "link down" });
            }
        }
    }

    /// Reaps transmitted and received buffers (at most `budget` each),
    /// hands received frames to the stack and runs it.
    pub fn service<M: Mmio, P: Memory>(
        &mut self,
        io: &mut Io<'_, M, P>,
        budget: usize,
    ) -> Result<bool, VirtioError> {
        let mut more = io.reap(1, budget, |_, used| {
            self.tx.free.push(used.token);
            Ok(())
        })?;
        more |= io.reap(0, budget, |io, used| {
            let len = used.len.min(BUF) as usize;
            let mut raw = vec![0u8; len];
            let at = self.rx_buf(used.token);
            io.hw.phys.read(at.addr, &mut raw)?;
            io.add(0, &[at], used.token)?;
            match rx_check(&mut raw) {
                Ok(()) if self.rxq.len() < RX_BUFS as usize => {
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += (len - HDR) as u64;
                    raw.drain(..HDR);
                    self.rxq.push_back(raw);
                }
                Ok(()) => self.stats.rx_dropped += 1,
                Err(e) => {
                    self.stats.rx_errors += 1;
                    // Rate-limited as net_warn_ratelimited is: a burst of
                    // ten, then one line per hundred.
                    if self.rx_warnings < 10 || self.rx_warnings % 100 == 0 {
                        io.log(4, &format!("{e} ({} dropped so far)", self.stats.rx_errors));
                    }
                    self.rx_warnings += 1;
                }
            }
            Ok(())
        })?;
        self.poll(io)?;
        Ok(more)
    }

    /// Runs the stack and the services until they settle, then makes the
    /// written frames available.
    pub fn poll<M: Mmio, P: Memory>(&mut self, io: &mut Io<'_, M, P>) -> Result<(), VirtioError> {
        let now = self.smol_now(io.now);
        for _ in 0..4 {
            let mut phy = Phy {
                mem: &io.hw.phys,
                tx: &mut self.tx,
                rxq: &mut self.rxq,
                stats: &mut self.stats,
                up: self.link_up,
            };
            self.iface.poll(now, &mut phy, &mut self.sockets);
            let a = self.run_services(io.index, &mut io.sink.http);
            let b = self.run_ping(io.now, &mut io.sink.output);
            if !a && !b {
                break;
            }
        }
        for (i, len) in std::mem::take(&mut self.tx.pending) {
            let addr = self.tx.region.at(u64::from(i * BUF));
            io.add(
                1,
                &[Buf {
                    addr,
                    len,
                    write: false,
                }],
                i,
            )?;
        }
        Ok(())
    }

    /// When the stack (or ping) wants to be polled again.
    pub fn next_poll(&mut self, now: Instant) -> Option<Duration> {
        let at = self.smol_now(now);
        let stack = self
            .iface
            .poll_delay(at, &self.sockets)
            .map(|d| Duration::from_micros(d.total_micros()));
        let ping = self.ping.as_ref().map(|p| {
            let due = if p.sent < p.count {
                p.next_send
            } else {
                p.last_sent.map_or(now, |t| t + PING_WAIT)
            };
            due.saturating_duration_since(now)
        });
        match (stack, ping) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Moves data for the TCP services; returns whether anything moved.
    fn run_services(&mut self, index: u32, http: &mut Vec<u32>) -> bool {
        let mut moved = false;
        let mut wants_status = false;
        for svc in &mut self.services {
            let s = self.sockets.get_mut::<tcp::Socket>(svc.handle);
            if !s.is_open() {
                svc.http = HttpConn::default();
                let _ = s.listen(svc.port);
                continue;
            }
            if s.state() == tcp::State::Listen {
                continue;
            }
            match svc.kind {
                Svc::Echo => {
                    let mut buf = [0u8; 2048];
                    while s.can_recv() && s.can_send() {
                        let room = (s.send_capacity() - s.send_queue()).min(buf.len());
                        let Ok(n) = s.recv_slice(&mut buf[..room]) else {
                            break;
                        };
                        if n == 0 {
                            break;
                        }
                        let _ = s.send_slice(&buf[..n]);
                        moved = true;
                    }
                }
                Svc::Discard => {
                    while s.can_recv() {
                        match s.recv(|b| (b.len(), b.len())) {
                            Ok(0) | Err(_) => break,
                            Ok(_) => moved = true,
                        }
                    }
                }
                Svc::Http => moved |= http_step(s, &mut svc.http, &mut wants_status),
            }
            // The peer finished and everything was answered (an HTTP client
            // that half-closes still gets its answer): close our side.
            let answering = svc.kind == Svc::Http && svc.http.state != HttpState::Reading;
            if !answering && !s.may_recv() && s.state() == tcp::State::CloseWait && s.send_queue() == 0 {
                s.close();
                moved = true;
            }
        }
        if wants_status && !http.contains(&index) {
            http.push(index);
        }
        self.keep_listening();
        moved
    }

    /// Every service keeps one socket listening while it has room for more
    /// connections, and only one idle listener.
    fn keep_listening(&mut self) {
        for (port, kind) in SERVICES {
            let listening = |sockets: &SocketSet<'static>, svc: &Service| {
                svc.port == port && sockets.get::<tcp::Socket>(svc.handle).state() == tcp::State::Listen
            };
            let mine = self.services.iter().filter(|s| s.port == port).count();
            let idle = self
                .services
                .iter()
                .filter(|s| listening(&self.sockets, s))
                .count();
            if idle == 0 && mine < CONNS_PER_SERVICE {
                self.services.push(Service::listen(&mut self.sockets, port, kind));
            }
            for _ in 1..idle {
                let Some(k) = self.services.iter().position(|s| listening(&self.sockets, s)) else {
                    break;
                };
                let svc = self.services.swap_remove(k);
                self.sockets.remove(svc.handle);
            }
        }
    }

    /// The card's status, for every HTTP client waiting for it.
    pub fn answer_status<M: Mmio, P: Memory>(
        &mut self,
        io: &mut Io<'_, M, P>,
        json: &str,
    ) -> Result<(), VirtioError> {
        for svc in &mut self.services {
            if svc.http.state == HttpState::WantStatus {
                svc.http.resp = http_response(200, "OK", json);
                svc.http.state = HttpState::Sending;
            }
        }
        self.poll(io)
    }

    /// Starts `ping` for `console`.
    pub fn start_ping(
        &mut self,
        console: u32,
        target: Ipv4Addr,
        count: u32,
        now: Instant,
    ) -> Result<String, String> {
        if self.ping.is_some() {
            return Err(format!("{} is busy with another ping", self.name));
        }
        let Some((a, len)) = self.addr else {
            return Err("connect: Network is unreachable".to_owned());
        };
        if Ipv4Cidr::new(a, len).network() != Ipv4Cidr::new(target, len).network() && target != a {
            return Err("connect: Network is unreachable".to_owned());
        }
        if let Some(h) = self.icmp.take() {
            self.sockets.remove(h);
        }
        self.pings = self.pings.wrapping_add(1);
        let ident = self.ident_base ^ self.pings;
        let mut sock = icmp::Socket::new(
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], vec![0; 2048]),
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], vec![0; 2048]),
        );
        sock.bind(icmp::Endpoint::Ident(ident))
            .map_err(|e| format!("bind: {e}"))?;
        self.icmp = Some(self.sockets.add(sock));
        self.ping = Some(Ping {
            console,
            target,
            count,
            ident,
            sent: 0,
            received: 0,
            next_send: now,
            last_sent: None,
            waiting: Vec::new(),
            rtts: Vec::new(),
            started: now,
        });
        Ok(format!(
            "PING {target} ({target}) {PING_PAYLOAD}({}) bytes of data.\n",
            PING_PAYLOAD + 28
        ))
    }

    fn run_ping(&mut self, now: Instant, output: &mut Vec<(u32, String, bool)>) -> bool {
        let (Some(p), Some(h)) = (&mut self.ping, self.icmp) else {
            return false;
        };
        let s = self.sockets.get_mut::<icmp::Socket>(h);
        let mut moved = false;
        while let Ok((data, from)) = s.recv() {
            let Ok(pkt) = Icmpv4Packet::new_checked(data) else {
                continue;
            };
            let Ok(Icmpv4Repr::EchoReply { ident, seq_no, .. }) = Icmpv4Repr::parse(&pkt, &checksums())
            else {
                continue;
            };
            if ident != p.ident {
                continue;
            }
            if let Some(k) = p.waiting.iter().position(|(s, _)| *s == seq_no) {
                let (_, sent) = p.waiting.remove(k);
                let rtt = now.saturating_duration_since(sent).as_secs_f64() * 1e3;
                p.received += 1;
                p.rtts.push(rtt);
                let text = format!(
                    "{} bytes from {from}: icmp_seq={seq_no} time={rtt:.3} ms\n",
                    PING_PAYLOAD + 8
                );
                output.push((p.console, text, false));
                moved = true;
            }
        }
        if p.sent < p.count && now >= p.next_send && s.can_send() {
            let seq = (p.sent + 1) as u16;
            let payload: Vec<u8> = (0..PING_PAYLOAD as u8).collect();
            let repr = Icmpv4Repr::EchoRequest {
                ident: p.ident,
                seq_no: seq,
                data: &payload,
            };
            if let Ok(buf) = s.send(repr.buffer_len(), IpAddress::Ipv4(p.target)) {
                repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &checksums());
                p.sent += 1;
                p.waiting.push((seq, now));
                p.last_sent = Some(now);
                p.next_send = now + PING_INTERVAL;
                moved = true;
            }
        }
        let finished =
            p.sent == p.count && (p.waiting.is_empty() || p.last_sent.is_some_and(|t| now >= t + PING_WAIT));
        if finished {
            output.push((p.console, p.summary(now), true));
            self.ping = None;
        }
        moved
    }

    /// ctrl-C on `console`: a ping it runs stops with its statistics.
    pub fn cancel(&mut self, console: u32) -> String {
        match self.ping.take() {
            Some(p) if p.console == console => p.summary(Instant::now()),
            other => {
                self.ping = other;
                String::new()
            }
        }
    }

    /// The device goes away: a running ping ends with a message.
    pub fn stop(&mut self, output: &mut Vec<(u32, String, bool)>) {
        if let Some(p) = self.ping.take() {
            output.push((p.console, format!("ping: {} went away\n", self.name), true));
        }
    }
}

/// One step of an HTTP connection; returns whether anything moved.
fn http_step(s: &mut tcp::Socket<'_>, c: &mut HttpConn, wants_status: &mut bool) -> bool {
    let mut moved = false;
    if c.state == HttpState::Reading {
        while s.can_recv() && c.req.len() < HTTP_MAX_REQUEST {
            let room = HTTP_MAX_REQUEST - c.req.len();
            let got = s.recv(|b| {
                let n = b.len().min(room);
                (n, b[..n].to_vec())
            });
            match got {
                Ok(b) if !b.is_empty() => {
                    c.req.extend_from_slice(&b);
                    moved = true;
                }
                _ => break,
            }
        }
        if let Some(end) = c.req.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&c.req[..end]).into_owned();
            let mut words = head.lines().next().unwrap_or("").split_whitespace();
            match (words.next(), words.next()) {
                (Some("GET" | "HEAD"), Some("/" | "/status")) => c.state = HttpState::WantStatus,
                (Some("GET" | "HEAD"), Some(_)) => {
                    c.resp = http_response(404, "Not Found", r#"{"error":"not found","try":"/status"}"#);
                    c.state = HttpState::Sending;
                }
                (Some(_), Some(_)) => {
                    c.resp = http_response(405, "Method Not Allowed", r#"{"error":"method not allowed"}"#);
                    c.state = HttpState::Sending;
                }
                _ => {
                    c.resp = http_response(400, "Bad Request", r#"{"error":"bad request"}"#);
                    c.state = HttpState::Sending;
                }
            }
        } else if c.req.len() >= HTTP_MAX_REQUEST {
            c.resp = http_response(
                431,
                "Request Header Fields Too Large",
                r#"{"error":"request too large"}"#,
            );
            c.state = HttpState::Sending;
        }
    }
    if c.state == HttpState::WantStatus {
        *wants_status = true;
    }
    if c.state == HttpState::Sending {
        while c.sent < c.resp.len() && s.can_send() {
            match s.send_slice(&c.resp[c.sent..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    c.sent += n;
                    moved = true;
                }
            }
        }
        if c.sent >= c.resp.len() {
            s.close();
            *c = HttpConn::default();
            moved = true;
        }
    }
    moved
}

fn http_response(code: u16, reason: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.0 {code} {reason}\r\nServer: micemu-card\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_hdr(flags: u8, gso: u8, start: u16, offset: u16, frame: &[u8]) -> Vec<u8> {
        let h = VirtioNetHdr {
            flags,
            gso_type: gso,
            csum_start: start,
            csum_offset: offset,
            ..VirtioNetHdr::default()
        };
        let mut v = h.to_bytes().to_vec();
        v.extend_from_slice(frame);
        v
    }

    /// An Ethernet + IPv4 + ICMP echo request with correct checksums.
    fn icmp_frame() -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 16];
        f[..6].copy_from_slice(&[2, 0x6d, 0x69, 0x63, 0, 0]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&36u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = 1;
        ip[12..16].copy_from_slice(&[172, 31, 0, 254]);
        ip[16..20].copy_from_slice(&[172, 31, 0, 1]);
        let c = !ones_sum(0, ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let icmp = &mut f[34..];
        icmp[0] = 8;
        icmp[4..8].copy_from_slice(&[0, 1, 0, 1]);
        icmp[8..].copy_from_slice(b"abcdefgh");
        let c = !ones_sum(0, icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        f
    }

    #[test]
    fn good_and_bad_checksums() {
        let f = icmp_frame();
        assert_eq!(rx_check(&mut with_hdr(0, 0, 0, 0, &f)), Ok(()));
        let mut bad = f.clone();
        bad[40] ^= 0xff;
        assert_eq!(
            rx_check(&mut with_hdr(0, 0, 0, 0, &bad)),
            Err(RxDrop::Checksum("ICMP"))
        );
        // DATA_VALID: the host vouches, the card does not look.
        assert_eq!(
            rx_check(&mut with_hdr(VIRTIO_NET_HDR_F_DATA_VALID, 0, 0, 0, &bad)),
            Ok(())
        );
        let mut bad_ip = f.clone();
        bad_ip[22] ^= 1;
        assert_eq!(
            rx_check(&mut with_hdr(0, 0, 0, 0, &bad_ip)),
            Err(RxDrop::Checksum("IPv4 header"))
        );
        // ARP (no checksum) passes.
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(rx_check(&mut with_hdr(0, 0, 0, 0, &arp)), Ok(()));
    }

    #[test]
    fn partial_checksums_are_completed() {
        let f = icmp_frame();
        let mut partial = f.clone();
        partial[36..38].copy_from_slice(&[0, 0]);
        let mut raw = with_hdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 34, 2, &partial);
        assert_eq!(rx_check(&mut raw), Ok(()));
        assert_eq!(&raw[HDR..], &f[..]);
        let mut raw = with_hdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 34, 15, &partial);
        assert_eq!(
            rx_check(&mut raw),
            Err(RxDrop::CsumOffsets {
                start: 34,
                offset: 15
            })
        );
        let mut raw = with_hdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, u16::MAX, u16::MAX, &partial);
        assert!(matches!(rx_check(&mut raw), Err(RxDrop::CsumOffsets { .. })));
    }

    #[test]
    fn gso_and_short_frames_are_dropped() {
        let f = icmp_frame();
        assert_eq!(rx_check(&mut with_hdr(0, 1, 0, 0, &f)), Err(RxDrop::Gso(1)));
        assert_eq!(rx_check(&mut with_hdr(0, 0x81, 0, 0, &f)), Err(RxDrop::Gso(0x81)));
        // ECN alone on a non-GSO frame is not GSO.
        assert_eq!(rx_check(&mut with_hdr(0, 0x80, 0, 0, &f)), Ok(()));
        assert_eq!(rx_check(&mut [0u8; 23]), Err(RxDrop::Short(23)));
    }

    #[test]
    fn macs_are_local_unicast_and_per_card() {
        let m = card_mac(3, 1);
        assert_eq!(m, [0x02, 0x6d, 0x69, 0x63, 3, 1]);
        assert!(valid_mac(m));
        assert!(!valid_mac([1, 2, 3, 4, 5, 6]));
        assert!(!valid_mac([0; 6]));
        assert_ne!(card_mac(0, 0), card_mac(1, 0));
    }

    #[test]
    fn http_responses_are_complete() {
        let r = String::from_utf8(http_response(200, "OK", "{}")).unwrap();
        assert!(r.starts_with("HTTP/1.0 200 OK\r\n"));
        assert!(r.contains("Content-Length: 2\r\n"));
        assert!(r.ends_with("\r\n\r\n{}"));
    }
}
