//! The TAP's host address and link state, set over rtnetlink (the
//! messages built and parsed by `netlink-packet-route`, the socket nix's)
//! as `ip addr add A/24 dev micN` and `ip link set micN up` would — without
//! running `ip`. Every request is acknowledged or refused by the kernel
//! within [`REPLY_TIMEOUT`].

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd as _, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    AddressFamily as Af, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send, socket,
};

/// How long the kernel may take to answer one request.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("rtnetlink: {op}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("rtnetlink: {op} refused by the kernel")]
    Refused {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("rtnetlink: no answer to {op} within {REPLY_TIMEOUT:?}")]
    TimedOut { op: &'static str },
    #[error("rtnetlink: an answer to {op} that does not parse")]
    BadReply { op: &'static str },
}

/// A route netlink socket.
#[derive(Debug)]
struct Rtnl {
    fd: OwnedFd,
    seq: u32,
}

impl Rtnl {
    fn open() -> Result<Self, NetlinkError> {
        let io = |op| move |e: nix::errno::Errno| NetlinkError::Io { op, source: e.into() };
        let fd = socket(
            Af::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(io("socket"))?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(io("bind"))?;
        Ok(Self { fd, seq: 0 })
    }

    /// Sends `msg` with `flags` (REQUEST added); returns its sequence number.
    fn send(&mut self, op: &'static str, flags: u16, msg: RouteNetlinkMessage) -> Result<u32, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        send(self.fd.as_raw_fd(), &buf, MsgFlags::empty())
            .map_err(|e| NetlinkError::Io { op, source: e.into() })?;
        Ok(self.seq)
    }

    /// Feeds the kernel's messages answering `seq` to `f` until it returns
    /// a result, at most [`REPLY_TIMEOUT`].
    fn answer<T>(
        &mut self,
        op: &'static str,
        seq: u32,
        mut f: impl FnMut(NetlinkPayload<RouteNetlinkMessage>) -> Option<Result<T, NetlinkError>>,
    ) -> Result<T, NetlinkError> {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut rx = vec![0u8; 32 << 10];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            // TIMEOUT: REPLY_TIMEOUT for the whole answer.
            match nix::poll::poll(&mut fds, PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)) {
                Ok(0) => return Err(NetlinkError::TimedOut { op }),
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(NetlinkError::Io { op, source: e.into() }),
            }
            let n = match recv(self.fd.as_raw_fd(), &mut rx, MsgFlags::empty()) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(NetlinkError::Io { op, source: e.into() }),
            };
            let mut data = &rx[..n];
            while !data.is_empty() {
                let len = NetlinkBuffer::new_checked(data)
                    .map_err(|_| NetlinkError::BadReply { op })?
                    .length() as usize;
                let len = len.next_multiple_of(4).min(data.len());
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[..len])
                    .map_err(|_| NetlinkError::BadReply { op })?;
                data = &data[len..];
                if msg.header.sequence_number != seq {
                    continue;
                }
                if let NetlinkPayload::Error(e) = &msg.payload {
                    if let Some(code) = e.code {
                        return Err(NetlinkError::Refused {
                            op,
                            source: std::io::Error::from_raw_os_error(-code.get()),
                        });
                    }
                }
                if let Some(r) = f(msg.payload) {
                    return r;
                }
            }
        }
    }

    /// A request the kernel acknowledges.
    fn ack(&mut self, op: &'static str, flags: u16, msg: RouteNetlinkMessage) -> Result<(), NetlinkError> {
        let seq = self.send(op, flags | NLM_F_ACK, msg)?;
        self.answer(op, seq, |p| {
            matches!(p, NetlinkPayload::Error(_)).then_some(Ok(()))
        })
    }

    /// RTM_GETLINK: the link, by name or index.
    fn link(&mut self, op: &'static str, msg: LinkMessage) -> Result<LinkMessage, NetlinkError> {
        let seq = self.send(op, 0, RouteNetlinkMessage::GetLink(msg))?;
        self.answer(op, seq, |p| match p {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => Some(Ok(l)),
            _ => None,
        })
    }
}

/// The interface index of `name`.
fn link_index(nl: &mut Rtnl, name: &str) -> Result<u32, NetlinkError> {
    const OP: &str = "looking up the interface";
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
    match nl.link(OP, msg)?.header.index {
        0 => Err(NetlinkError::BadReply { op: OP }),
        i => Ok(i),
    }
}

/// Gives interface `name` the address `addr/prefix` (replacing it if it
/// is there already) and sets it up; returns its index.
pub fn configure(name: &str, addr: Ipv4Addr, prefix: u8) -> Result<u32, NetlinkError> {
    let mut nl = Rtnl::open()?;
    let index = link_index(&mut nl, name)?;

    let mut a = AddressMessage::default();
    a.header.family = AddressFamily::Inet;
    a.header.prefix_len = prefix;
    a.header.index = index;
    let host_mask = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
    let broadcast = Ipv4Addr::from(u32::from(addr) | host_mask);
    a.attributes = vec![
        AddressAttribute::Local(IpAddr::V4(addr)),
        AddressAttribute::Address(IpAddr::V4(addr)),
        AddressAttribute::Broadcast(broadcast),
    ];
    nl.ack(
        "adding the host address",
        NLM_F_CREATE | NLM_F_REPLACE,
        RouteNetlinkMessage::NewAddress(a),
    )?;

    let mut l = LinkMessage::default();
    l.header.index = index;
    l.header.flags = LinkFlags::Up;
    l.header.change_mask = LinkFlags::Up;
    nl.ack("setting the link up", 0, RouteNetlinkMessage::SetLink(l))?;
    Ok(index)
}

/// Whether interface `name` is up, and its IPv4 addresses with their
/// prefixes, as the kernel reports them (for status and tests).
pub fn describe(name: &str) -> Result<(bool, Vec<(Ipv4Addr, u8)>), NetlinkError> {
    const OP: &str = "listing addresses";
    let mut nl = Rtnl::open()?;
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
    let link = nl.link("reading the link", msg)?;
    let up = link.header.flags.contains(LinkFlags::Up);
    let mut a = AddressMessage::default();
    a.header.family = AddressFamily::Inet;
    let seq = nl.send(OP, NLM_F_DUMP, RouteNetlinkMessage::GetAddress(a))?;
    let mut found = Vec::new();
    nl.answer(OP, seq, |p| match p {
        NetlinkPayload::Done(_) => Some(Ok(())),
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(m))
            if m.header.index == link.header.index =>
        {
            found.extend(m.attributes.iter().filter_map(|attr| match attr {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some((*ip, m.header.prefix_len)),
                _ => None,
            }));
            None
        }
        _ => None,
    })?;
    Ok((up, found))
}
