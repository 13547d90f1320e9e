// SPDX-License-Identifier: GPL-2.0-only

//! The caller's side of COPY_DESC: the iovecs of a `struct mic_copy_desc`
//! as mic-core's [`UserBuffers`], copying between user memory and the
//! card's GDDR through the aperture (the original's CPU copy).

use kernel::prelude::*;
use kernel::uaccess::UserSlice;

use crate::abi::MicCopyDesc;
use crate::host::vop::{CopyFault, UserBuffers, VopError, MAX_IOVECS};
use crate::hw::Memory;

/// `struct iovec` (x86-64): base, length.
const IOVEC_SIZE: usize = 16;
/// Bytes copied per step through the bounce buffer.
const CHUNK: usize = 512;

/// One user buffer.
#[derive(Clone, Copy)]
struct Iovec {
    base: usize,
    len: u64,
}

/// The user's iovecs and the card memory they are copied from and to.
pub(crate) struct Iovecs<'a, M: Memory> {
    iov: KVec<Iovec>,
    total: u64,
    card: &'a M,
}

/// Reads `len` bytes of user memory at `ptr`.
pub(crate) fn read_user(ptr: usize, len: usize) -> Result<KVec<u8>> {
    let mut buf = KVec::from_elem(0u8, len, GFP_KERNEL)?;
    UserSlice::new(ptr, len).reader().read_slice(&mut buf)?;
    Ok(buf)
}

/// Reads the `struct mic_copy_desc` at `arg`.
pub(crate) fn read_copy_desc(arg: usize) -> Result<MicCopyDesc> {
    let mut b = [0u8; MicCopyDesc::SIZE];
    UserSlice::new(arg, b.len()).reader().read_slice(&mut b)?;
    Ok(MicCopyDesc::from_bytes(&b))
}

/// Writes `out_len` back (the only field the original writes back).
pub(crate) fn write_out_len(arg: usize, out_len: u32) -> Result {
    let at = arg.checked_add(crate::abi::CD_OUT_LEN).ok_or(EFAULT)?;
    UserSlice::new(at, 4)
        .writer()
        .write_slice(&out_len.to_le_bytes())
}

impl<'a, M: Memory> Iovecs<'a, M> {
    /// Reads the iovec array of `cd` (at most [`MAX_IOVECS`]).
    pub(crate) fn read(cd: &MicCopyDesc, card: &'a M) -> Result<Self> {
        if cd.iovcnt > MAX_IOVECS {
            return Err(crate::hostcard::core_err(
                VopError::TooManyIovecs(cd.iovcnt).errno(),
            ));
        }
        let n = cd.iovcnt as usize;
        let raw = read_user(usize::try_from(cd.iov).map_err(|_| EFAULT)?, n * IOVEC_SIZE)
            .map_err(|_| EINVAL)?;
        let mut iov = KVec::with_capacity(n, GFP_KERNEL)?;
        let mut total = 0u64;
        for chunk in raw.chunks_exact(IOVEC_SIZE) {
            let base = u64::from_le_bytes(chunk[..8].try_into().map_err(|_| EINVAL)?);
            let len = u64::from_le_bytes(chunk[8..].try_into().map_err(|_| EINVAL)?);
            total = total.checked_add(len).ok_or(EINVAL)?;
            iov.push(
                Iovec {
                    base: usize::try_from(base).map_err(|_| EFAULT)?,
                    len,
                },
                GFP_KERNEL,
            )?;
        }
        Ok(Self { iov, total, card })
    }

    /// Calls `f(user_address, card_offset, n)` for each piece of `off .. off + len`.
    fn pieces(
        &self,
        mut off: u64,
        len: u32,
        mut f: impl FnMut(usize, u64, usize) -> Result<(), CopyFault>,
    ) -> Result<(), CopyFault> {
        let mut done = 0u64;
        let len = u64::from(len);
        let mut start = 0u64;
        for v in self.iov.iter() {
            let end = start + v.len;
            while done < len && off >= start && off < end {
                let within = off - start;
                let n = (end - off).min(len - done).min(CHUNK as u64);
                let user = v.base.checked_add(within as usize).ok_or(CopyFault)?;
                f(user, done, n as usize)?;
                done += n;
                off += n;
            }
            start = end;
            if done == len {
                return Ok(());
            }
        }
        if done == len {
            Ok(())
        } else {
            Err(CopyFault)
        }
    }
}

impl<M: Memory> UserBuffers for Iovecs<'_, M> {
    fn capacity(&self) -> u64 {
        self.total
    }

    fn card_to_user(&mut self, off: u64, card_addr: u64, len: u32) -> Result<(), CopyFault> {
        let card = self.card;
        self.pieces(off, len, |user, done, n| {
            let mut bounce = [0u8; CHUNK];
            let addr = card_addr.checked_add(done).ok_or(CopyFault)?;
            card.read(addr, &mut bounce[..n]).map_err(|_| CopyFault)?;
            UserSlice::new(user, n)
                .writer()
                .write_slice(&bounce[..n])
                .map_err(|_| CopyFault)
        })
    }

    fn user_to_card(&mut self, off: u64, card_addr: u64, len: u32) -> Result<(), CopyFault> {
        let card = self.card;
        self.pieces(off, len, |user, done, n| {
            let mut bounce = [0u8; CHUNK];
            UserSlice::new(user, n)
                .reader()
                .read_slice(&mut bounce[..n])
                .map_err(|_| CopyFault)?;
            let addr = card_addr.checked_add(done).ok_or(CopyFault)?;
            card.write(addr, &bounce[..n]).map_err(|_| CopyFault)
        })
    }

    fn finish(&mut self) -> Result<(), CopyFault> {
        self.card.write_barrier();
        Ok(())
    }
}
