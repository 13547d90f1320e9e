//! `dev/micN` served by micemu: a `SOCK_SEQPACKET` socket, one connection
//! per open file, the ioctls as messages (`mic_core::abi::emu_dev`).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mic_core::abi::emu_dev::{
    ApertureReply, BATCH_F_STARTED, BATCH_MAX, BatchReply, BatchReq, BatchResult, CopyReply,
    HELLO_FORCE_INLINE, HELLO_SHM, Hello, HelloReply, Iovec, MAX_INLINE, MAX_MSG, MODE_DIRECT, MSG_GONE,
    MSG_REPLY, MSG_WAKE, MmapReq, MsgHeader, OP_ACK_WAKE, OP_APERTURE, OP_COPY_BATCH, OP_HELLO, OP_MMAP,
    PROTO_VERSION, PROTO_VERSION_APERTURE, PROTO_VERSION_BATCH, PROTO_VERSION_MIN, PROTO_VERSION_STARTED,
    Piece, ReqHeader, batch_reply_len,
};
use mic_core::abi::{MIC_VIRTIO_ADD_DEVICE, MIC_VIRTIO_CONFIG_CHANGE, MIC_VIRTIO_COPY_DESC, MicCopyDesc};
use nix::sys::socket::{
    AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr, connect, recvmsg, sendmsg,
    socket,
};

use super::map::Mapping;
use super::shm::{self, Aperture, IoBuf, Shm};
use super::{Batch, Transport, VdevError, Wake, meaning, poll_ms};

/// A byte whose address the server reads to learn whether it can reach
/// our memory (direct mode).
static PROBE: u8 = 0x5a;

#[derive(Debug)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent facts of one connection"
)]
pub(super) struct SockFile {
    fd: OwnedFd,
    path: PathBuf,
    card: u32,
    direct: bool,
    /// The protocol version HELLO settled on.
    version: u32,
    /// A wake (or the end) seen while waiting for a reply.
    wake: bool,
    gone: bool,
    buf: Vec<u8>,
    /// The COPY_DESC fast path, once the emulator took it.
    shm: Option<Shm>,
    /// The card's memory, if the emulator handed it over: we copy what
    /// lies outside the arena ourselves, where its plans say.
    aperture: Option<Aperture>,
    /// A batch was handed over through the slot and its answer is not
    /// collected yet: nothing else may be asked meanwhile.
    inflight: bool,
}

/// A reply: its result and payload (in `SockFile::buf`), and a passed fd.
struct Reply {
    result: i32,
    len: usize,
    fd: Option<OwnedFd>,
}

impl SockFile {
    pub(super) fn connect(path: &Path, card: u32, force_inline: bool) -> Result<Self, VdevError> {
        let io = |op: &'static str| {
            move |e: nix::errno::Errno| VdevError::Io {
                path: path.to_path_buf(),
                op,
                source: e.into(),
            }
        };
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(io("socket"))?;
        connect(fd.as_raw_fd(), &UnixAddr::new(path).map_err(io("connect"))?).map_err(io("connect"))?;
        // Let the emulator copy into our buffers under Yama ptrace scope 1.
        // SAFETY: prctl with integer arguments only.
        unsafe {
            libc::prctl(libc::PR_SET_PTRACER, libc::PR_SET_PTRACER_ANY, 0, 0, 0);
        }
        let mut me = Self {
            fd,
            path: path.to_path_buf(),
            card,
            direct: false,
            version: PROTO_VERSION_MIN,
            wake: false,
            gone: false,
            buf: vec![0; MAX_MSG],
            shm: None,
            aperture: None,
            inflight: false,
        };
        // The fast path is an optimisation: without a memfd it is skipped.
        let shm = Shm::new(shm::DEFAULT_LEN).ok();
        let mut flags = if force_inline { HELLO_FORCE_INLINE } else { 0 };
        if shm.is_some() {
            flags |= HELLO_SHM;
        }
        let hello = Hello {
            version: PROTO_VERSION,
            flags,
            probe: std::ptr::addr_of!(PROBE) as u64,
            shm_base: shm.as_ref().map_or(0, |s| s.region().base()),
            shm_len: shm.as_ref().map_or(0, |s| s.region().len() as u64),
        };
        let fds: Vec<std::os::fd::RawFd> = shm
            .as_ref()
            .map(|s| s.fds().iter().map(AsRawFd::as_raw_fd).collect())
            .unwrap_or_default();
        me.send_fds("HELLO", OP_HELLO, &[&hello.to_bytes()], &fds)?;
        let r = me.reply("HELLO")?;
        if r.result < 0 {
            // EPROTO: another version. Ask nothing more of it.
            return Err(VdevError::Protocol {
                path: me.path,
                theirs: 0,
                ours: PROTO_VERSION,
            });
        }
        let hr = HelloReply::from_slice(&me.buf[..r.len]).ok_or_else(|| me.bad("HELLO"))?;
        if !(PROTO_VERSION_MIN..=PROTO_VERSION).contains(&hr.version) {
            return Err(VdevError::Protocol {
                path: me.path,
                theirs: hr.version,
                ours: PROTO_VERSION,
            });
        }
        me.direct = hr.mode == MODE_DIRECT;
        me.version = hr.version;
        me.shm = shm;
        if me.shm.is_some() && !force_inline && me.version >= PROTO_VERSION_APERTURE {
            // Also an optimisation: refused (EPERM) or unmappable, the
            // emulator copies as before.
            me.aperture = me.take_aperture()?;
        }
        Ok(me)
    }

    /// OP_APERTURE: the card's memory, mapped, or `None` if refused.
    fn take_aperture(&mut self) -> Result<Option<Aperture>, VdevError> {
        let r = self.call("APERTURE", OP_APERTURE, &[])?;
        let (Some(fd), true) = (r.fd, r.result >= 0) else {
            return Ok(None);
        };
        let size = ApertureReply::from_slice(&self.buf[..r.len]).ok_or_else(|| self.bad("APERTURE"))?;
        let len = usize::try_from(size.size).map_err(|_| self.bad("APERTURE"))?;
        Ok(Aperture::map(fd.as_fd(), len).ok())
    }

    /// Whether COPY_DESC's bytes for buffers outside the arena are copied
    /// by us, from the card's memory the emulator handed over.
    pub(super) fn copies_itself(&self) -> bool {
        self.aperture.is_some()
    }

    /// A buffer for COPY_DESC: in the shared arena while it has room (one
    /// plain copy), else on the heap.
    pub(super) fn alloc(&mut self, len: usize) -> IoBuf {
        self.shm
            .as_mut()
            .and_then(|s| s.alloc(len))
            .unwrap_or_else(|| IoBuf::heap(len))
    }

    pub(super) fn transport(&self) -> Transport {
        if self.direct {
            Transport::SocketDirect
        } else {
            Transport::SocketInline
        }
    }

    fn bad(&self, op: &'static str) -> VdevError {
        VdevError::BadReply {
            path: self.path.clone(),
            op,
        }
    }

    fn io_err(&self, op: &'static str, e: nix::errno::Errno) -> VdevError {
        VdevError::Io {
            path: self.path.clone(),
            op,
            source: e.into(),
        }
    }

    fn driver(&self, op: &'static str, result: i32) -> VdevError {
        VdevError::Driver {
            card: self.card,
            op,
            errno: -result,
            meaning: meaning(op, -result),
        }
    }

    fn send(&self, what: &'static str, op: u32, parts: &[&[u8]]) -> Result<(), VdevError> {
        self.send_fds(what, op, parts, &[])
    }

    fn send_fds(
        &self,
        what: &'static str,
        op: u32,
        parts: &[&[u8]],
        fds: &[std::os::fd::RawFd],
    ) -> Result<(), VdevError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let h = ReqHeader { op, len: len as u32 }.to_bytes();
        let mut iov = vec![IoSlice::new(&h)];
        iov.extend(parts.iter().map(|p| IoSlice::new(p)));
        let rights = [nix::sys::socket::ControlMessage::ScmRights(fds)];
        let cmsg: &[nix::sys::socket::ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
        loop {
            match sendmsg::<()>(self.fd.as_raw_fd(), &iov, cmsg, MsgFlags::MSG_NOSIGNAL, None) {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(self.io_err(what, e)),
            }
        }
    }

    /// Receives one message into `buf`: its header, payload length and fd.
    fn recv(&mut self, what: &'static str) -> Result<(MsgHeader, usize, Option<OwnedFd>), VdevError> {
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        loop {
            let mut iov = [IoSliceMut::new(&mut self.buf)];
            match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(m) => {
                    let n = m.bytes;
                    let mut fd = None;
                    for c in m.cmsgs().map_err(|e| VdevError::Io {
                        path: self.path.clone(),
                        op: what,
                        source: e.into(),
                    })? {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            for raw in fds {
                                // SAFETY: the kernel just installed this
                                // descriptor in our table for us.
                                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                                fd.get_or_insert(owned);
                            }
                        }
                    }
                    if n == 0 {
                        self.gone = true;
                        return Err(self.io_err(what, nix::errno::Errno::ECONNRESET));
                    }
                    let h = MsgHeader::from_slice(&self.buf[..n]).ok_or_else(|| self.bad(what))?;
                    self.buf.copy_within(MsgHeader::SIZE..n, 0);
                    return Ok((h, n - MsgHeader::SIZE, fd));
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(self.io_err(what, e)),
            }
        }
    }

    /// Notes a wake (acknowledging it) or the end.
    fn note(&mut self, kind: u32) -> Result<(), VdevError> {
        match kind {
            MSG_WAKE => {
                self.wake = true;
                self.send("ACK", OP_ACK_WAKE, &[])
            }
            MSG_GONE => {
                self.gone = true;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// One request and its reply; wakes arriving meanwhile are kept.
    fn call(&mut self, what: &'static str, op: u32, parts: &[&[u8]]) -> Result<Reply, VdevError> {
        if self.inflight {
            return Err(self.bad(what));
        }
        self.send(what, op, parts)?;
        self.reply(what)
    }

    fn reply(&mut self, what: &'static str) -> Result<Reply, VdevError> {
        loop {
            let (h, len, fd) = self.recv(what)?;
            if h.kind == MSG_REPLY {
                return Ok(Reply {
                    result: h.result,
                    len,
                    fd,
                });
            }
            self.note(h.kind)?;
        }
    }

    fn simple(&mut self, what: &'static str, op: u32, arg: &[u8]) -> Result<(), VdevError> {
        let r = self.call(what, op, &[arg])?;
        if r.result < 0 {
            return Err(self.driver(what, r.result));
        }
        Ok(())
    }

    pub(super) fn add_device(&mut self, block: &[u8]) -> Result<(), VdevError> {
        self.simple("ADD_DEVICE", MIC_VIRTIO_ADD_DEVICE, block)
    }

    pub(super) fn config_change(&mut self, config: &[u8]) -> Result<(), VdevError> {
        self.simple("CONFIG_CHANGE", MIC_VIRTIO_CONFIG_CHANGE, config)
    }

    pub(super) fn copy_desc(
        &mut self,
        vr_idx: u8,
        bufs: &mut [IoSliceMut<'_>],
        update_used: bool,
    ) -> Result<u32, VdevError> {
        let cd = MicCopyDesc {
            iov: 0,
            iovcnt: bufs.len() as u32,
            vr_idx,
            update_used: u8::from(update_used),
            out_len: 0,
        };
        let iovs: Vec<u8> = bufs
            .iter()
            .flat_map(|b| {
                Iovec {
                    base: b.as_ptr() as u64,
                    len: b.len() as u64,
                }
                .to_bytes()
            })
            .collect();
        let inline: Vec<u8>;
        let mut parts: Vec<&[u8]> = vec![&[]; 0];
        let cdb = cd.to_bytes();
        parts.push(&cdb);
        parts.push(&iovs);
        if !self.direct {
            let total: usize = bufs.iter().map(|b| b.len()).sum();
            if total > MAX_INLINE {
                return Err(VdevError::TooLarge {
                    card: self.card,
                    len: total,
                    max: MAX_INLINE,
                });
            }
            inline = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            parts.push(&inline);
        }
        // A request too large for the slot goes over the socket.
        let fast = Shm::fits(ReqHeader::SIZE + cdb.len() + iovs.len())
            && self.shm.as_ref().is_some_and(|s| {
                self.direct
                    || self.aperture.is_some()
                    || bufs.iter().all(|b| s.in_arena(b.as_ptr() as u64, b.len()))
            });
        if fast {
            return self.copy_desc_fast(&cdb, &iovs, bufs);
        }
        let r = self.call("COPY_DESC", MIC_VIRTIO_COPY_DESC, &parts)?;
        if r.result < 0 {
            return Err(self.driver("COPY_DESC", r.result));
        }
        let out = MicCopyDesc::from_slice(&self.buf[..r.len]).ok_or_else(|| self.bad("COPY_DESC"))?;
        let tail = CopyReply::from_slice(self.buf.get(MicCopyDesc::SIZE..r.len).unwrap_or(&[]))
            .ok_or_else(|| self.bad("COPY_DESC"))?;
        if !self.direct {
            // Scatter what came from the card over the caller's buffers.
            let start = MicCopyDesc::SIZE + CopyReply::SIZE;
            let data = self
                .buf
                .get(start..start + tail.to_user as usize)
                .ok_or_else(|| self.bad("COPY_DESC"))?;
            let mut off = 0;
            for b in bufs.iter_mut() {
                if off == data.len() {
                    break;
                }
                let n = b.len().min(data.len() - off);
                b[..n].copy_from_slice(&data[off..off + n]);
                off += n;
            }
        }
        Ok(out.out_len)
    }

    /// COPY_DESC through the shared slot (the bytes go straight to and from
    /// the caller's buffers: arena or process_vm).
    fn copy_desc_fast(
        &mut self,
        cd: &[u8],
        iovs: &[u8],
        bufs: &mut [IoSliceMut<'_>],
    ) -> Result<u32, VdevError> {
        let Some(mut shm) = self.shm.take() else {
            return Err(self.bad("COPY_DESC"));
        };
        let h = ReqHeader {
            op: MIC_VIRTIO_COPY_DESC,
            len: (cd.len() + iovs.len()) as u32,
        }
        .to_bytes();
        let mut reply = [0u8; MsgHeader::SIZE + MicCopyDesc::SIZE];
        let res = self.slot_call(&mut shm, &[&h, cd, iovs], &mut reply, bufs, false);
        self.shm = Some(shm);
        res?;
        let head = MsgHeader::from_slice(&reply).ok_or_else(|| self.bad("COPY_DESC"))?;
        if head.result < 0 {
            return Err(self.driver("COPY_DESC", head.result));
        }
        let out = MicCopyDesc::from_slice(&reply[MsgHeader::SIZE..]).ok_or_else(|| self.bad("COPY_DESC"))?;
        Ok(out.out_len)
    }

    /// One COPY_DESC or batch (`batch`) through the slot of `shm` (taken
    /// out of `self` for the call), its answer in `reply`; the plans the
    /// emulator sends meanwhile carried out on `bufs`.
    fn slot_call(
        &mut self,
        shm: &mut Shm,
        request: &[&[u8]],
        reply: &mut [u8],
        bufs: &mut [IoSliceMut<'_>],
        batch: bool,
    ) -> Result<(), VdevError> {
        // Watched (poll) while the answer is awaited; `self.fd` stays open
        // for the whole call.
        let sock = self.fd.as_raw_fd();
        let aperture = self.aperture.take();
        let mut refused = false;
        let res = shm.call(
            request,
            reply,
            sock,
            || {
                let (m, _, _) = self.recv("COPY_DESC")?;
                self.note(m.kind)
            },
            |ops| {
                let ok = aperture.as_ref().is_some_and(|a| a.run_plan(ops, bufs, batch));
                refused |= !ok;
                ok
            },
        );
        self.aperture = aperture;
        res?;
        if refused {
            // The emulator asked for copies outside our buffers or its
            // memory: refused (it answered EFAULT), and said so.
            return Err(self.bad("COPY_DESC"));
        }
        Ok(())
    }

    /// Several COPY_DESCs on vring `vr_idx`, one chain per buffer, in one
    /// request when the emulator takes batches and can reach every buffer
    /// directly (direct mode, or the arena); one request each otherwise.
    pub(super) fn copy_desc_batch(
        &mut self,
        vr_idx: u8,
        bufs: &mut [IoSliceMut<'_>],
        update_used: &[bool],
    ) -> Result<Batch, VdevError> {
        let n = bufs.len().min(update_used.len()).min(BATCH_MAX as usize);
        let (bufs, update_used) = (&mut bufs[..n], &update_used[..n]);
        let reachable = self.direct
            || self.aperture.is_some()
            || self
                .shm
                .as_ref()
                .is_some_and(|s| bufs.iter().all(|b| s.in_arena(b.as_ptr() as u64, b.len())));
        if self.version < PROTO_VERSION_BATCH || !reachable {
            return super::batch_by_one(bufs, update_used, |b, u| {
                self.copy_desc(vr_idx, std::slice::from_mut(b), u)
            });
        }
        let req = batch_request(vr_idx, bufs, update_used, 0);
        let want = batch_reply_len(bufs.len() as u32);
        let mut reply = [0u8; MsgHeader::SIZE + batch_reply_len(BATCH_MAX)];
        let slot = Shm::fits(ReqHeader::SIZE + req.len());
        let (result, body) = if let Some(mut shm) = self.shm.take_if(|_| slot) {
            let h = ReqHeader {
                op: OP_COPY_BATCH,
                len: req.len() as u32,
            }
            .to_bytes();
            let res = self.slot_call(
                &mut shm,
                &[&h, &req],
                &mut reply[..MsgHeader::SIZE + want],
                bufs,
                true,
            );
            self.shm = Some(shm);
            res?;
            let head = MsgHeader::from_slice(&reply).ok_or_else(|| self.bad("COPY_DESC"))?;
            (head.result, &reply[MsgHeader::SIZE..MsgHeader::SIZE + want])
        } else {
            let r = self.call("COPY_DESC", OP_COPY_BATCH, &[&req])?;
            if r.result >= 0 && r.len != want {
                return Err(self.bad("COPY_DESC"));
            }
            reply[..want.min(r.len)].copy_from_slice(&self.buf[..want.min(r.len)]);
            (r.result, &reply[..want])
        };
        self.batch_answer(result, body, bufs.len())
    }

    /// What a batch's answer says: the chains moved, their lengths, the
    /// refusal that stopped it.
    fn batch_answer(&self, result: i32, body: &[u8], n: usize) -> Result<Batch, VdevError> {
        if result < 0 {
            return Err(self.driver("COPY_DESC", result));
        }
        let done = BatchReply::from_slice(body)
            .ok_or_else(|| self.bad("COPY_DESC"))?
            .done as usize;
        if done > n {
            return Err(self.bad("COPY_DESC"));
        }
        let mut out = Batch::default();
        for (i, raw) in body[BatchReply::SIZE..]
            .chunks_exact(BatchResult::SIZE)
            .take(done)
            .enumerate()
        {
            let r = BatchResult::from_slice(raw).ok_or_else(|| self.bad("COPY_DESC"))?;
            if r.result < 0 {
                out.error = Some(self.driver("COPY_DESC", r.result));
                break;
            }
            if r.out_len == 0 {
                break;
            }
            out.lens[i] = r.out_len;
            out.chains = i + 1;
        }
        Ok(out)
    }

    /// Hands a batch to the emulator through the shared slot and returns
    /// at once, where the emulator copies every buffer itself (all in the
    /// arena): the copies run while the caller does
    /// something else; [`SockFile::finish_batch`] collects the answer.
    /// `None` when the batch cannot be made so (then it is made whole by
    /// [`SockFile::copy_desc_batch`]).
    pub(super) fn start_batch(
        &mut self,
        vr_idx: u8,
        bufs: &[IoSliceMut<'_>],
        update_used: &[bool],
    ) -> Option<Started> {
        let n = bufs.len().min(update_used.len()).min(BATCH_MAX as usize);
        let (bufs, update_used) = (&bufs[..n], &update_used[..n]);
        let shm = self.shm.as_ref()?;
        // In the arena the emulator copies itself: no plan (which would
        // need the buffers while the caller works) is asked for.
        let reachable = bufs.iter().all(|b| shm.in_arena(b.as_ptr() as u64, b.len()));
        if self.version < PROTO_VERSION_BATCH || !reachable || n == 0 || self.inflight {
            return None;
        }
        let started = if self.version >= PROTO_VERSION_STARTED {
            BATCH_F_STARTED
        } else {
            0
        };
        let req = batch_request(vr_idx, bufs, update_used, started);
        if !Shm::fits(ReqHeader::SIZE + req.len()) {
            return None;
        }
        let h = ReqHeader {
            op: OP_COPY_BATCH,
            len: req.len() as u32,
        }
        .to_bytes();
        let mut shm = self.shm.take()?;
        shm.start(&[&h, &req]);
        self.inflight = true;
        Some(Started {
            n,
            shm,
            file: self.fd.as_raw_fd(),
        })
    }

    /// The answer to the batch [`SockFile::start_batch`] handed over (the
    /// buffers it named hold what it moved once this returns).
    pub(super) fn finish_batch(&mut self, started: Started) -> Result<Batch, VdevError> {
        let want = batch_reply_len(started.n as u32);
        let mut reply = [0u8; MsgHeader::SIZE + batch_reply_len(BATCH_MAX)];
        if started.file != self.fd.as_raw_fd() || !self.inflight {
            return Err(self.bad("COPY_DESC"));
        }
        let Started { n, mut shm, .. } = started;
        self.inflight = false;
        let sock = self.fd.as_raw_fd();
        // Its buffers are the emulator's to reach: a plan is never asked
        // for, and one would be refused.
        let res = shm.finish(
            &mut reply[..MsgHeader::SIZE + want],
            sock,
            || {
                let (m, _, _) = self.recv("COPY_DESC")?;
                self.note(m.kind)
            },
            |_| false,
        );
        self.shm = Some(shm);
        res?;
        let head = MsgHeader::from_slice(&reply).ok_or_else(|| self.bad("COPY_DESC"))?;
        self.batch_answer(head.result, &reply[MsgHeader::SIZE..MsgHeader::SIZE + want], n)
    }

    pub(super) fn map(&mut self, len: usize) -> Result<Mapping, VdevError> {
        let req = MmapReq {
            offset: 0,
            len: len as u64,
            prot: libc::PROT_READ as u32,
        };
        let r = self.call("mmap", OP_MMAP, &[&req.to_bytes()])?;
        if r.result < 0 {
            return Err(self.driver("mmap", r.result));
        }
        let fd = r.fd.ok_or_else(|| self.bad("mmap"))?;
        let pieces: Vec<(u64, u64, u64)> = self.buf[..r.len]
            .chunks_exact(Piece::SIZE)
            .filter_map(Piece::from_slice)
            .map(|p| (p.map_off, p.file_off, p.len))
            .collect();
        Mapping::pieces(fd.as_fd(), &pieces, len).map_err(|e| VdevError::Io {
            path: self.path.clone(),
            op: "mmap",
            source: e,
        })
    }

    pub(super) fn wait(&mut self, timeout: Option<Duration>) -> Result<Wake, VdevError> {
        loop {
            if std::mem::take(&mut self.wake) {
                return Ok(Wake::Doorbell);
            }
            if self.gone {
                return Ok(Wake::Gone);
            }
            let mut pfd = [libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            // TIMEOUT: the caller's.
            // SAFETY: one pollfd of a descriptor we own, for the call.
            let n = unsafe { libc::poll(pfd.as_mut_ptr(), 1, poll_ms(timeout)) };
            if n < 0 {
                let e = nix::errno::Errno::last();
                if e == nix::errno::Errno::EINTR {
                    continue;
                }
                return Err(self.io_err("poll", e));
            }
            if n == 0 {
                return Ok(Wake::TimedOut);
            }
            // Awake again, maybe on another CPU: the emulator's spin reads it.
            if let Some(shm) = &self.shm {
                shm.publish_cpu();
            }
            match self.recv("poll") {
                Ok((h, _, _)) => self.note(h.kind)?,
                Err(_) if self.gone => return Ok(Wake::Gone),
                Err(e) => return Err(e),
            }
        }
    }

    pub(super) fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A batch handed over and not yet answered: nothing else may go through
/// the file until it is.
#[must_use = "the emulator's answer must be collected before anything else is asked"]
pub(super) struct Started {
    n: usize,
    /// The slot, the answer's until it is collected.
    shm: Shm,
    /// The connection it was handed to.
    file: std::os::fd::RawFd,
}

/// An `OP_COPY_BATCH` request's body: one COPY_DESC and its one iovec per
/// buffer.
fn batch_request(vr_idx: u8, bufs: &[IoSliceMut<'_>], update_used: &[bool], flags: u32) -> Vec<u8> {
    let head = BatchReq {
        count: bufs.len() as u32,
        flags,
    }
    .to_bytes();
    let mut req = Vec::with_capacity(head.len() + bufs.len() * (MicCopyDesc::SIZE + Iovec::SIZE));
    req.extend_from_slice(&head);
    for (b, &u) in bufs.iter().zip(update_used) {
        let cd = MicCopyDesc {
            iov: 0,
            iovcnt: 1,
            vr_idx,
            update_used: u8::from(u),
            out_len: 0,
        };
        req.extend_from_slice(&cd.to_bytes());
        let v = Iovec {
            base: b.as_ptr() as u64,
            len: b.len() as u64,
        };
        req.extend_from_slice(&v.to_bytes());
    }
    req
}
