//! The wire format of micemu's `dev/micN`: a `SOCK_SEQPACKET` Unix socket
//! whose every connection is one open file of the character device.
//!
//! Not used by the kernel module; it lives here so the emulator (server)
//! and libmic (client) share one definition. The three ioctls travel with
//! their ioctl numbers as the operation and their argument layouts as the
//! payload; what a socket cannot carry as an argument (the iovec array a
//! `mic_copy_desc` points to, the data in inline mode) follows the argument.
//!
//! ```text
//! client → server  ReqHeader { op, len } + payload
//!   OP_HELLO       Hello                          → REPLY HelloReply
//!   ADD_DEVICE     descriptor block               → REPLY
//!   COPY_DESC      MicCopyDesc, iovcnt × Iovec,   → REPLY MicCopyDesc (out_len),
//!                  [inline: the iovecs' bytes]      CopyReply, [inline: to_user bytes]
//!   CONFIG_CHANGE  config_len bytes               → REPLY
//!   OP_MMAP        MmapReq                        → REPLY n × Piece + the fd (SCM_RIGHTS)
//!   OP_ACK_WAKE    (nothing)                      → no reply
//! server → client  MsgHeader { kind, result } + payload
//!   MSG_REPLY      result 0 or −errno, then the payload above
//!   MSG_WAKE       poll's POLLIN: a card doorbell or reset for this device;
//!                  at most one outstanding until the client sends OP_ACK_WAKE
//!   MSG_GONE       poll's POLLERR: the device is gone
//! ```
//!
//! In direct mode the server moves the bytes with `process_vm_readv/writev`
//! between card memory and the client's iovecs (the one copy the kernel's
//! `copy_to_user` makes); when it cannot reach the client's memory (HELLO
//! tells), inline mode carries the bytes in the messages instead.

use super::layout::abi_struct;

/// Protocol version.
pub const PROTO_VERSION: u32 = 1;

/// Handshake: version and the direct-mode probe.
pub const OP_HELLO: u32 = 0x4D45_0001;
/// mmap of the file.
pub const OP_MMAP: u32 = 0x4D45_0002;
/// The client consumed a `MSG_WAKE`.
pub const OP_ACK_WAKE: u32 = 0x4D45_0003;

/// A reply to the request before it.
pub const MSG_REPLY: u32 = 1;
/// A wake-up (poll: readable).
pub const MSG_WAKE: u32 = 2;
/// The device is gone (poll: error).
pub const MSG_GONE: u32 = 3;

/// Copies go by `process_vm_readv/writev` on the client's iovecs.
pub const MODE_DIRECT: u32 = 1;
/// Copies travel inside the messages.
pub const MODE_INLINE: u32 = 2;

/// Largest message either side sends.
pub const MAX_MSG: usize = 256 << 10;
/// Largest caller buffer total of one inline COPY_DESC (leaves room for
/// the headers and iovecs in [`MAX_MSG`]).
pub const MAX_INLINE: usize = 192 << 10;

/// [`Hello::flags`]: use inline mode even if direct would work.
pub const HELLO_FORCE_INLINE: u32 = 1;

/// `PROT_WRITE` in [`MmapReq::prot`].
pub const PROT_WRITE: u32 = 2;

abi_struct! {
    /// Header of every client message.
    pub struct ReqHeader: size 8, repr(C, align(4)) {
        /// An ioctl number or `OP_*`.
        op: u32 => REQ_OP = 0,
        /// Payload bytes after the header.
        len: u32 => REQ_LEN = 4,
    }
}

abi_struct! {
    /// Header of every server message.
    pub struct MsgHeader: size 8, repr(C, align(4)) {
        /// `MSG_*`.
        kind: u32 => MSG_KIND = 0,
        /// 0, or a negative errno (replies only).
        result: i32 => MSG_RESULT = 4,
    }
}

abi_struct! {
    /// `OP_HELLO` payload.
    pub struct Hello: size 16, repr(C, align(8)) {
        /// The client's [`PROTO_VERSION`].
        version: u32 => HELLO_VERSION = 0,
        /// [`HELLO_FORCE_INLINE`] or 0.
        flags: u32 => HELLO_FLAGS = 4,
        /// Address of one readable byte in the client, for the server to
        /// try `process_vm_readv` on.
        probe: u64 => HELLO_PROBE = 8,
    }
}

abi_struct! {
    /// `OP_HELLO` reply payload.
    pub struct HelloReply: size 8, repr(C, align(4)) {
        /// The server's [`PROTO_VERSION`].
        version: u32 => HELLO_REPLY_VERSION = 0,
        /// [`MODE_DIRECT`] or [`MODE_INLINE`].
        mode: u32 => HELLO_REPLY_MODE = 4,
    }
}

abi_struct! {
    /// `struct iovec` as it travels after a `MicCopyDesc`.
    pub struct Iovec: size 16, repr(C, align(8)) {
        /// Client address.
        base: u64 => IOVEC_BASE = 0,
        /// Bytes.
        len: u64 => IOVEC_LEN = 8,
    }
}

abi_struct! {
    /// Trailer of a COPY_DESC reply.
    pub struct CopyReply: size 8, repr(C, align(4)) {
        /// Bytes moved card → caller (at the start of the caller's buffers).
        to_user: u32 => COPY_REPLY_TO_USER = 0,
        /// Reserved, 0.
        flags: u32 => COPY_REPLY_FLAGS = 4,
    }
}

abi_struct! {
    /// `OP_MMAP` payload.
    pub struct MmapReq: size 24, repr(C, align(8)) {
        /// Offset into the file's mapping layout.
        offset: u64 => MMAP_OFFSET = 0,
        /// Bytes.
        len: u64 => MMAP_LEN = 8,
        /// `PROT_*` bits asked for.
        prot: u32 => MMAP_PROT = 16,
    }
}

abi_struct! {
    /// One piece of a mapping: map `len` bytes of the passed fd at
    /// `file_off` to `map_off` of the mapping.
    pub struct Piece: size 24, repr(C, align(8)) {
        /// Offset in the mapping.
        map_off: u64 => PIECE_MAP_OFF = 0,
        /// Offset in the fd.
        file_off: u64 => PIECE_FILE_OFF = 8,
        /// Bytes.
        len: u64 => PIECE_LEN = 16,
    }
}
