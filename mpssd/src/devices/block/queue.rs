//! The request queue served one hand-off per request.
//!
//! A disk cannot answer a request before it has its header, so every
//! request costs at least two COPY_DESCs on one chain: the first fetches
//! the readable bytes (the header and a write's data) and leaves the chain
//! held, the second completes it with the writable bytes (a read's data
//! and the status). The driver holds one chain per ring at a time, so the
//! second copy of a request and the first of the next are all one batch
//! can carry: `copy_desc_each` sends the two together (on micemu one
//! hand-off between the processes, which costs far more than the copies;
//! one ioctl each on the real device). A burst of `n` requests costs
//! `n + 1` hand-offs, where one copy at a time cost `2n` (reads) or `3n`
//! (writes: header, data, status).
//!
//! Nothing is acknowledged early: a request's image I/O (and a flush's
//! `fdatasync`) is done before the batch that completes it is sent, and
//! at most one answered request waits for its completing copy, in a
//! buffer allocated once. When the ring has no next chain (or the budget
//! is spent) that copy goes alone, so no answer waits for the card.
//!
//! A chain that does not [`request::fits`] (a header split short, no
//! status byte, more than a chunk of data) is served by [`request::serve`]
//! one copy at a time, after the waiting answer is sent.

use std::io::IoSliceMut;

use libmic::vdev::{Batch, ChainError, ChainShape, IoBuf, RingMap, VdevError, VirtioFile};

use super::request::{self, Abort, BUF_LEN, Disk, Ring, Served};

/// The request queue: the card's chains as the ring mapping shows them,
/// and the driver's COPY_DESC.
pub trait Queue: Ring<Error = VdevError> {
    /// The shape of the chain `skip` places after the one the driver
    /// fetches next (1: the one after a held chain).
    fn peek(&self, skip: u16) -> Result<Option<ChainShape>, ChainError>;
    /// COPY_DESCs, one chain per buffer, each with its own `update_used`
    /// ([`VirtioFile::copy_desc_each`]).
    fn copy_each(&mut self, bufs: &mut [IoSliceMut<'_>], update_used: &[bool]) -> Result<Batch, VdevError>;
}

/// vring 0 of a disk's `dev/micN` file.
#[derive(Debug)]
pub struct FileQueue<'a> {
    pub file: &'a mut VirtioFile,
    pub map: &'a RingMap,
}

impl Ring for FileQueue<'_> {
    type Error = VdevError;
    fn copy(&mut self, bufs: &mut [IoSliceMut<'_>], complete: bool) -> Result<u32, VdevError> {
        self.file.copy_desc(0, bufs, complete)
    }
}

impl Queue for FileQueue<'_> {
    fn peek(&self, skip: u16) -> Result<Option<ChainShape>, ChainError> {
        self.map.peek_chain_after(0, skip)
    }
    fn copy_each(&mut self, bufs: &mut [IoSliceMut<'_>], update_used: &[bool]) -> Result<Batch, VdevError> {
        self.file.copy_desc_each(0, bufs, update_used)
    }
}

/// How a round ended (short of an [`Abort`]).
#[derive(Debug)]
pub enum End {
    /// No chain is left.
    Empty,
    /// The budget is spent and chains are left.
    Budget,
    /// The next chain is one the driver would refuse (every request before
    /// it is completed).
    BadChain(ChainError),
}

/// An answered request whose chain is held: its writable bytes are in
/// `out[..len]`.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    len: usize,
    served: Served,
}

/// The queue's two buffers (readable bytes in, writable bytes out) and
/// the answer waiting for its completing copy.
pub struct Server {
    input: IoBuf,
    out: IoBuf,
    waiting: Option<Waiting>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("waiting", &self.waiting)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server over two buffers of at least [`BUF_LEN`] bytes (in the
    /// arena shared with micemu: every copy is then one memcpy).
    #[must_use]
    pub fn new(input: IoBuf, out: IoBuf) -> Self {
        debug_assert!(input.len() >= BUF_LEN && out.len() >= BUF_LEN);
        Self {
            input,
            out,
            waiting: None,
        }
    }

    /// Serves up to `budget` requests; `done` hears of each completed one,
    /// in ring order. Every request started is completed before this
    /// returns, an [`Abort`] aside (the card reset the device or broke the
    /// ring).
    pub fn round<Q: Queue, D: Disk>(
        &mut self,
        q: &mut Q,
        disk: &D,
        budget: usize,
        done: &mut impl FnMut(Served),
    ) -> Result<End, Abort<VdevError>> {
        let mut started = 0;
        while started < budget {
            let shape = match q.peek(u16::from(self.waiting.is_some())) {
                Ok(Some(s)) => s,
                Ok(None) => {
                    self.send_waiting(q, done)?;
                    return Ok(End::Empty);
                }
                Err(e) => {
                    self.send_waiting(q, done)?;
                    return Ok(End::BadChain(e));
                }
            };
            started += 1;
            if !request::fits(shape) {
                self.send_waiting(q, done)?;
                done(request::serve(q, shape, disk, &mut self.input)?);
                continue;
            }
            self.fetch(q, shape, done)?;
            let (r, w) = (shape.readable as usize, shape.writable as usize);
            let served = request::answer(&self.input[..r], &mut self.out[..w], disk);
            self.waiting = Some(Waiting { len: w, served });
        }
        self.send_waiting(q, done)?;
        Ok(match q.peek(0) {
            Ok(Some(_)) | Err(_) => End::Budget,
            Ok(None) => End::Empty,
        })
    }

    /// One hand-off: the waiting answer completes its chain, and the next
    /// chain's readable bytes (`shape.readable` of them) come into `input`,
    /// the chain left held.
    fn fetch<Q: Queue>(
        &mut self,
        q: &mut Q,
        shape: ChainShape,
        done: &mut impl FnMut(Served),
    ) -> Result<(), Abort<VdevError>> {
        let r = shape.readable as usize;
        let waiting = self.waiting.take();
        let (b, head) = match waiting {
            Some(wt) => {
                let mut bufs = [
                    IoSliceMut::new(&mut self.out[..wt.len]),
                    IoSliceMut::new(&mut self.input[..r]),
                ];
                (q.copy_each(&mut bufs, &[true, false]), 1)
            }
            None => (
                q.copy_each(&mut [IoSliceMut::new(&mut self.input[..r])], &[false]),
                0,
            ),
        };
        let mut b = b.map_err(Abort::Ring)?;
        // A completing copy that moved less than the answer: the card
        // rewrote that chain after it was peeked (completed all the same).
        let mut rewritten = false;
        if let Some(wt) = waiting {
            completion(&mut b, wt.len)?;
            rewritten = b.lens[0] as usize != wt.len;
            if !rewritten {
                done(wt.served);
            }
        }
        if b.chains <= head {
            if let Some(e) = b.error.take() {
                return Err(Abort::Ring(e));
            }
        }
        let moved = if b.chains > head { b.lens[head] } else { 0 };
        if rewritten || moved as usize != r {
            // What is held of the next chain (if anything) is completed
            // with IOERR bytes, never with what the buffer held before.
            let completed = moved > 0 && self.salvage(q, r);
            return Err(Abort::Changed {
                completed: rewritten || completed,
            });
        }
        Ok(())
    }

    /// Completes the held chain with `len` IOERR bytes; whether it was.
    fn salvage<Q: Queue>(&mut self, q: &mut Q, len: usize) -> bool {
        let buf = &mut self.input[..len.max(1)];
        buf.fill(mic_core::abi::virtio::VIRTIO_BLK_S_IOERR);
        matches!(q.copy(&mut [IoSliceMut::new(buf)], true), Ok(n) if n > 0)
    }

    /// The waiting answer's completing copy, alone.
    fn send_waiting<Q: Queue>(
        &mut self,
        q: &mut Q,
        done: &mut impl FnMut(Served),
    ) -> Result<(), Abort<VdevError>> {
        let Some(wt) = self.waiting.take() else {
            return Ok(());
        };
        let mut b = q
            .copy_each(&mut [IoSliceMut::new(&mut self.out[..wt.len])], &[true])
            .map_err(Abort::Ring)?;
        completion(&mut b, wt.len)?;
        if b.lens[0] as usize != wt.len {
            return Err(Abort::Changed { completed: true });
        }
        done(wt.served);
        Ok(())
    }
}

/// The first entry of `b`, a completing copy: refused (the driver's
/// error), or nothing moved (the card rewrote the chain to nothing more:
/// it stays held, the ring stuck until the card resets the device).
fn completion(b: &mut Batch, len: usize) -> Result<(), Abort<VdevError>> {
    if b.chains > 0 || len == 0 {
        return Ok(());
    }
    Err(b
        .error
        .take()
        .map_or(Abort::Changed { completed: false }, Abort::Ring))
}

#[cfg(test)]
mod tests;
