//! The FUSE operations: kernfs semantics on top of a [`Backend`].

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno as FuseErrno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, OpenAccMode, OpenFlags, PollEvents, PollFlags, PollNotifier, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyPoll, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};

use mic_core::host::attrs::{DEBUGFS_DIR_MODE, STORE_MAX};

use super::hub::PollHub;
use super::snapshot::{Snapshot, Snapshots};
use super::tree::Node;
use super::{Backend, Tree, WriteDone};

/// How long the kernel may cache attributes and lookups. The tree is fixed
/// for the life of the mount (card count, names, modes, sizes), so names
/// resolve once, not on every open by a tool that starts afresh.
const TTL: Duration = Duration::from_secs(3600);
/// sysfs buffers are one page: `show` output and `store` input are bounded by it.
const PAGE_SIZE: usize = STORE_MAX;
/// The most a mount keeps of shows for its open files, all together (see
/// [`Snapshots`]): room for the largest card log (16 MiB) beside as much
/// again of everything else.
const SNAPSHOT_BUDGET: usize = 32 << 20;
/// kernfs `DEFAULT_POLLMASK`.
const DEFAULT_POLLMASK: PollEvents = PollEvents::POLLIN
    .union(PollEvents::POLLOUT)
    .union(PollEvents::POLLRDNORM)
    .union(PollEvents::POLLWRNORM);

/// File handles are unique in the process so that the [`PollHub`], which
/// outlives mounts, never confuses two of them.
static NEXT_FH: AtomicU64 = AtomicU64::new(1);

/// One `open` of a file (a kernfs `kernfs_open_file`).
struct OpenFile {
    tree: Tree,
    card: u32,
    name: &'static str,
    readable: bool,
    writable: bool,
    /// Event counter value at open or at the last read from offset 0.
    event: AtomicU64,
    /// Content produced by the last read from offset 0 (the `seq_file`
    /// buffer), unless the mount's budget had no room for it.
    snapshot: Mutex<Option<Arc<Snapshot>>>,
}

pub(crate) struct MicFs {
    backend: Arc<dyn Backend>,
    hub: Arc<PollHub>,
    /// Identifies this mount's waiters in the hub.
    mount_id: u64,
    handles: Mutex<HashMap<u64, Arc<OpenFile>>>,
    snapshots: Snapshots,
    /// Who debugfs belongs to: the user micemu runs as (root, normally).
    owner: (u32, u32),
    time: SystemTime,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MicFs {
    pub(crate) fn new(backend: Arc<dyn Backend>, hub: Arc<PollHub>, mount_id: u64) -> Self {
        Self {
            backend,
            hub,
            mount_id,
            handles: Mutex::new(HashMap::new()),
            snapshots: Snapshots::new(SNAPSHOT_BUDGET),
            owner: (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw()),
            time: SystemTime::now(),
        }
    }

    /// Whether `req` comes from someone debugfs belongs to. The kernel
    /// keeps everyone else out of debugfs at its 0700 mount point; here a
    /// handle opened by root and passed on is refused too, on every request.
    fn privileged(&self, req: &Request) -> bool {
        req.uid() == 0 || req.uid() == self.owner.0
    }

    /// Whether `req` may not touch `node` (a node inside debugfs, asked by
    /// someone debugfs does not belong to).
    fn denied(&self, req: &Request, node: Node) -> bool {
        node.in_debugfs() && !self.privileged(req)
    }

    fn node(&self, ino: INodeNo) -> Option<Node> {
        Node::from_ino(ino, &*self.backend)
    }

    fn attr(&self, node: Node) -> FileAttr {
        let (kind, perm, nlink, size) = match node {
            Node::File(tree, _, idx) => {
                let mode = self.backend.files(tree)[idx].mode & 0o7777;
                // sysfs attributes claim a page; debugfs files claim nothing.
                let size = match tree {
                    Tree::Sysfs => PAGE_SIZE as u64,
                    Tree::Debugfs => 0,
                };
                (FileType::RegularFile, mode, 1, size)
            }
            dir if dir.in_debugfs() => (
                FileType::Directory,
                DEBUGFS_DIR_MODE,
                2 + dir.subdirs(&*self.backend),
                0,
            ),
            dir => (FileType::Directory, 0o755, 2 + dir.subdirs(&*self.backend), 0),
        };
        let (uid, gid) = if node.in_debugfs() { self.owner } else { (0, 0) };
        FileAttr {
            ino: node.ino(),
            size,
            blocks: 0,
            atime: self.time,
            mtime: self.time,
            ctime: self.time,
            crtime: self.time,
            kind,
            perm,
            nlink,
            uid,
            gid,
            rdev: 0,
            blksize: PAGE_SIZE as u32,
            flags: 0,
        }
    }

    fn handle(&self, fh: FileHandle) -> Option<Arc<OpenFile>> {
        lock(&self.handles).get(&fh.0).cloned()
    }
}

impl Filesystem for MicFs {
    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(dir) = self.node(parent) else {
            return reply.error(FuseErrno::ENOENT);
        };
        if !dir.is_dir() {
            return reply.error(FuseErrno::ENOTDIR);
        }
        if self.denied(req, dir) {
            return reply.error(FuseErrno::EACCES);
        }
        match dir.child(name.as_bytes(), &*self.backend) {
            Some(node) => reply.entry(&TTL, &self.attr(node), Generation(0)),
            None => reply.error(FuseErrno::ENOENT),
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino) {
            // debugfs's mount point itself may be looked at by anyone.
            Some(node) if node != Node::KernelDebug && self.denied(req, node) => {
                reply.error(FuseErrno::EACCES);
            }
            Some(node) => reply.attr(&TTL, &self.attr(node)),
            None => reply.error(FuseErrno::ENOENT),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let Some(node) = self.node(ino) else {
            return reply.error(FuseErrno::ENOENT);
        };
        if self.denied(req, node) {
            return reply.error(FuseErrno::EACCES);
        }
        // Truncation (open with O_TRUNC, as `echo x > attr` does) and time
        // updates are accepted and ignored, as by sysfs. Ownership and
        // permissions are fixed.
        if mode.is_some() || uid.is_some() || gid.is_some() {
            return reply.error(FuseErrno::EPERM);
        }
        reply.attr(&TTL, &self.attr(node));
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(FuseErrno::EPERM);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(FuseErrno::EPERM);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(FuseErrno::EPERM);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(FuseErrno::EPERM);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(FuseErrno::EPERM);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: fuser::ReplyCreate,
    ) {
        // What vfs_create says for a directory without ->create.
        reply.error(FuseErrno::EACCES);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let (tree, card, idx) = match self.node(ino) {
            Some(node) if self.denied(req, node) => return reply.error(FuseErrno::EACCES),
            Some(Node::File(tree, card, idx)) => (tree, card, idx),
            Some(_) => return reply.error(FuseErrno::EISDIR),
            None => return reply.error(FuseErrno::ENOENT),
        };
        let spec = self.backend.files(tree)[idx];
        let readable = flags.acc_mode() != OpenAccMode::O_WRONLY;
        let writable = flags.acc_mode() != OpenAccMode::O_RDONLY;
        // kernfs_fop_open: even root cannot open for writing a file without
        // any write bit, nor for reading one without any read bit.
        if (readable && spec.mode & 0o444 == 0) || (writable && spec.mode & 0o222 == 0) {
            return reply.error(FuseErrno::EACCES);
        }
        let fh = NEXT_FH.fetch_add(1, Ordering::Relaxed);
        let file = OpenFile {
            tree,
            card,
            name: spec.name,
            readable,
            writable,
            event: AtomicU64::new(self.hub.event(card, tree, spec.name)),
            snapshot: Mutex::new(None),
        };
        lock(&self.handles).insert(fh, Arc::new(file));
        let mut fopen = FopenFlags::FOPEN_DIRECT_IO;
        if writable {
            // Stores through different opens do not serialise on the inode
            // lock (kernfs serialises per open file only), so one pending
            // store does not hold up another writer of the same attribute.
            fopen |= FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES;
        }
        reply.opened(FileHandle(fh), fopen);
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(file) = self.handle(fh) else {
            return reply.error(FuseErrno::EBADF);
        };
        if !file.readable {
            return reply.error(FuseErrno::EBADF);
        }
        if file.tree == Tree::Debugfs && !self.privileged(req) {
            return reply.error(FuseErrno::EACCES);
        }
        let mut snapshot = lock(&file.snapshot);
        // A show served once because the budget had no room to keep it.
        let mut unkept = None;
        if offset == 0 || snapshot.is_none() {
            // As kernfs_seq_show: remember the event before calling show, so
            // a notify racing with it is reported by the next poll.
            file.event
                .store(self.hub.event(file.card, file.tree, file.name), Ordering::SeqCst);
            *snapshot = None;
            match self.backend.read(file.card, file.tree, file.name) {
                Ok(mut data) => {
                    if file.tree == Tree::Sysfs && data.len() >= PAGE_SIZE {
                        log::warn!(
                            "mic{} sysfs {} show returned {} bytes; truncating to a page",
                            file.card,
                            file.name,
                            data.len()
                        );
                        data.truncate(PAGE_SIZE - 1);
                    }
                    match self.snapshots.keep((file.tree, file.card, file.name), data) {
                        Ok(kept) => *snapshot = Some(kept),
                        Err(data) => unkept = Some(data),
                    }
                }
                Err(errno) => return reply.error(FuseErrno::from_i32(errno)),
            }
        }
        let data: &[u8] = match (&unkept, &*snapshot) {
            (Some(data), _) => data,
            (None, Some(kept)) => kept,
            (None, None) => &[],
        };
        let start = usize::try_from(offset).map_or(data.len(), |o| o.min(data.len()));
        let end = start.saturating_add(size as usize).min(data.len());
        reply.data(&data[start..end]);
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(file) = self.handle(fh) else {
            return reply.error(FuseErrno::EBADF);
        };
        if !file.writable {
            return reply.error(FuseErrno::EBADF);
        }
        if file.tree == Tree::Debugfs && !self.privileged(req) {
            return reply.error(FuseErrno::EACCES);
        }
        if data.is_empty() {
            return reply.written(0);
        }
        // kernfs hands a store at most a page and write(2) returns what the
        // store took; the caller writes the rest again (a second store).
        let data = if file.tree == Tree::Sysfs {
            &data[..data.len().min(STORE_MAX)]
        } else {
            data
        };
        let done = WriteDone::new(reply, data.len() as u32);
        self.backend.write(file.card, file.tree, file.name, data, done);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is buffered to flush. ENOSYS tells the kernel never to
        // send FLUSH again, which saves every close(2) a round trip to us.
        reply.error(FuseErrno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let file = lock(&self.handles).remove(&fh.0);
        if let Some(file) = file {
            self.hub.release(file.card, file.tree, file.name, fh.0);
        }
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.node(ino) {
            Some(node) if self.denied(req, node) => reply.error(FuseErrno::EACCES),
            Some(node) if node.is_dir() => reply.opened(FileHandle(0), FopenFlags::empty()),
            Some(_) => reply.error(FuseErrno::ENOTDIR),
            None => reply.error(FuseErrno::ENOENT),
        }
    }

    fn readdir(&self, req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let Some(dir) = self.node(ino) else {
            return reply.error(FuseErrno::ENOENT);
        };
        if self.denied(req, dir) {
            return reply.error(FuseErrno::EACCES);
        }
        if !dir.is_dir() {
            return reply.error(FuseErrno::ENOTDIR);
        }
        let entries = [(".".into(), dir), ("..".into(), dir.parent())]
            .into_iter()
            .chain(dir.children(&*self.backend));
        for (i, (name, node)) in entries.enumerate().skip(offset as usize) {
            let kind = if node.is_dir() {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            if reply.add(node.ino(), i as u64 + 1, kind, &*name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, PAGE_SIZE as u32, 255, PAGE_SIZE as u32);
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        if self.node(ino).is_some_and(|n| self.denied(req, n)) {
            return reply.error(FuseErrno::EACCES);
        }
        reply.error(FuseErrno::NO_XATTR);
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        if self.node(ino).is_some_and(|n| self.denied(req, n)) {
            reply.error(FuseErrno::EACCES);
        } else if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(FuseErrno::EOPNOTSUPP);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(FuseErrno::EOPNOTSUPP);
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(FuseErrno::ENOTTY);
    }

    fn poll(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        ph: PollNotifier,
        _events: PollEvents,
        flags: PollFlags,
        reply: ReplyPoll,
    ) {
        let Some(file) = self.handle(fh) else {
            return reply.error(FuseErrno::EBADF);
        };
        if file.tree == Tree::Debugfs && !self.privileged(req) {
            return reply.error(FuseErrno::EACCES);
        }
        // Like kernfs_generic_poll's poll_wait, register whenever someone
        // waits, changed or not: an epoll waiter stays queued after being
        // told about a change and must hear about the next one too.
        let waiter = flags
            .contains(PollFlags::FUSE_POLL_SCHEDULE_NOTIFY)
            .then_some((self.mount_id, ph));
        let changed = self.hub.poll(
            file.card,
            file.tree,
            file.name,
            fh.0,
            file.event.load(Ordering::SeqCst),
            waiter,
        );
        reply.poll(if changed {
            DEFAULT_POLLMASK | PollEvents::POLLERR | PollEvents::POLLPRI
        } else {
            DEFAULT_POLLMASK
        });
    }
}
