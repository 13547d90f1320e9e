// SPDX-License-Identifier: GPL-2.0-only

//! `/dev/micN`: every open file is one virtio device slot (original 3.13
//! semantics) driven by mic-core's `host::vop::VopDevice`: the three
//! ioctls, a read-only mmap of the device page and the file's ring blocks,
//! and poll (one wake per card doorbell, an error once the device is gone).

use kernel::prelude::*;
use kernel::sync::Arc;

use crate::abi::{
    MicDeviceDesc, MIC_VIRTIO_ADD_DEVICE, MIC_VIRTIO_CONFIG_CHANGE, MIC_VIRTIO_COPY_DESC,
};
use crate::host::vop::{AckPoll, AckWait, VopDevice, VopError, VopState};
use crate::hostcard::{core_err, HostCard, Vdev};
use crate::shim::{self, PollState, Vma};
use crate::user;

/// One open file of `/dev/micN`: its index in the card's device list.
pub(crate) struct MicFile {
    card: Arc<HostCard>,
    index: usize,
}

fn vop_err(e: VopError) -> Error {
    core_err(e.errno())
}

/// A fresh device slot on the heap, built in a frame of its own: it is
/// 9 KiB, and no caller's frame should hold it (kernel stacks are 16 KiB).
#[inline(never)]
fn new_vdev() -> Result<KBox<Vdev>> {
    Ok(KBox::new(
        Vdev {
            vop: VopDevice::new(),
            woken: false,
        },
        GFP_KERNEL,
    )?)
}

impl MicFile {
    pub(crate) fn open(card: Arc<HostCard>) -> Result<Self> {
        let index = {
            let mut st = card.lock();
            if st.removed {
                return Err(ENODEV);
            }
            let entry = Some(new_vdev()?);
            match st.vdevs.iter().position(Option::is_none) {
                Some(i) => {
                    st.vdevs[i] = entry;
                    i
                }
                None => {
                    st.vdevs.push(entry, GFP_KERNEL)?;
                    st.vdevs.len() - 1
                }
            }
        };
        Ok(Self { card, index })
    }

    /// Runs `f` on this file's device with the card locked.
    fn with<R>(
        &self,
        f: impl FnOnce(&HostCard, &mut crate::hostcard::Inner, usize) -> Result<R>,
    ) -> Result<R> {
        let mut st = self.card.lock();
        if st.removed {
            return Err(ENODEV);
        }
        f(&self.card, &mut st, self.index)
    }

    pub(crate) fn ioctl(&self, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            MIC_VIRTIO_ADD_DEVICE => self.add_device(arg).map(|()| 0),
            MIC_VIRTIO_COPY_DESC => self.copy_desc(arg).map(|()| 0),
            MIC_VIRTIO_CONFIG_CHANGE => self.config_change(arg).map(|()| 0),
            _ => Err(ENOTTY),
        }
    }

    /// ADD_DEVICE: the header first (its checks come before the rest is
    /// read, as in the original), then the whole block.
    fn add_device(&self, arg: usize) -> Result {
        let header = user::read_user(arg, MicDeviceDesc::SIZE)?;
        self.with(|card, st, i| {
            let mem = card.host_mem_parts(&st.blocks);
            let mut alloc = card.dma_alloc_parts(&st.blocks);
            let v = st.vdevs[i].as_mut().ok_or(EBADF)?;
            match v
                .vop
                .add(&mut st.host, card.shim(), &mem, &mut alloc, &header)
            {
                Err(VopError::ShortArgument) => {}
                other => return other.map_err(vop_err),
            }
            let desc = MicDeviceDesc::from_slice(&header).ok_or(EFAULT)?;
            let block = user::read_user(arg, crate::abi::desc_size(&desc))?;
            v.vop
                .add(&mut st.host, card.shim(), &mem, &mut alloc, &block)
                .map_err(vop_err)
        })
    }

    /// COPY_DESC: the iovecs are read first, then the core walks the ring.
    fn copy_desc(&self, arg: usize) -> Result {
        let cd = user::read_copy_desc(arg)?;
        let copied = self.with(|card, st, i| {
            let aperture = card.shim().aperture();
            let mut iov = user::Iovecs::read(&cd, &aperture)?;
            let mem = card.host_mem_parts(&st.blocks);
            let v = st.vdevs[i].as_mut().ok_or(EBADF)?;
            v.vop
                .copy_desc(
                    card.shim(),
                    &mem,
                    &aperture,
                    cd.vr_idx,
                    &mut iov,
                    cd.update_used != 0,
                )
                .map_err(vop_err)
        })?;
        user::write_out_len(arg, copied.out_len)
    }

    /// CONFIG_CHANGE: new config space in, then a bounded wait for the
    /// card's ack, unlocked (a timeout is not an error, as in the original).
    fn config_change(&self, arg: usize) -> Result {
        let len = self.with(|_, st, i| {
            let v = st.vdevs[i].as_ref().ok_or(EBADF)?;
            Ok(usize::from(v.vop.desc().config_len))
        })?;
        let config = user::read_user(arg, len)?;
        let wait = self.with(|card, st, i| {
            let mem = card.host_mem_parts(&st.blocks);
            let v = st.vdevs[i].as_mut().ok_or(EBADF)?;
            v.vop
                .config_change(card.shim(), &mem, &config)
                .map_err(vop_err)
        })?;
        self.wait_for_ack(wait);
        self.with(|card, st, i| {
            let mem = card.host_mem_parts(&st.blocks);
            let v = st.vdevs[i].as_mut().ok_or(EBADF)?;
            v.vop.finish_config_change(&mem).map_err(vop_err)
        })
    }

    /// Waits, unlocked, for the card's `guest_ack` (or the end of the budget).
    fn wait_for_ack(&self, wait: AckWait) {
        let start = shim::now_ms();
        // TIMEOUT: the core's AckTiming (100 polls of 100 ms) bounds the wait.
        while let AckPoll::Wait { ms } = wait.poll(
            self.card.device_page(),
            shim::now_ms().saturating_sub(start),
        ) {
            shim::msleep(ms);
        }
    }

    /// Read-only mappings of the pieces the core lays out: the device page
    /// at 0, then this file's ring blocks.
    pub(crate) fn mmap(&self, vma: &Vma) -> Result {
        let req = vma.info();
        if req.writable {
            return Err(EACCES);
        }
        let start = req.pgoff.checked_mul(4096).ok_or(EINVAL)?;
        let end = start.checked_add(req.len).ok_or(EINVAL)?;
        self.with(|card, st, i| {
            let v = st.vdevs[i].as_ref().ok_or(EBADF)?;
            match v.vop.state() {
                VopState::Added => {}
                VopState::Empty => return Err(vop_err(VopError::NotAdded)),
                VopState::Removed => return Err(vop_err(VopError::Removed)),
            }
            let mem = card.host_mem_parts(&st.blocks);
            let mut covered = start;
            for (at, host_off, len) in v.vop.mmap_layout() {
                let (at, piece_end) = (at as usize, at as usize + len);
                if piece_end <= start || at >= end {
                    continue;
                }
                // Pieces are mapped whole: the request must start and end
                // on piece boundaries.
                if at != covered || piece_end > end {
                    return Err(EINVAL);
                }
                mem.mmap_piece(vma, at - start, host_off, len)?;
                covered = piece_end;
            }
            if covered == end {
                Ok(())
            } else {
                Err(EINVAL)
            }
        })
    }

    /// Ready once per wake; an error when nothing is added or it was removed.
    pub(crate) fn poll(&self) -> PollState {
        let mut st = self.card.lock();
        let inner = &mut *st;
        let mem = self.card.host_mem_parts(&inner.blocks);
        let Some(v) = inner.vdevs.get_mut(self.index).and_then(Option::as_mut) else {
            return PollState::Error;
        };
        if inner.removed || v.vop.poll_error(&mem) {
            PollState::Error
        } else if core::mem::take(&mut v.woken) {
            PollState::Ready
        } else {
            PollState::None
        }
    }

    /// Close: the removal handshake (bounded wait, unlocked), then the
    /// device's rings and slot are freed.
    pub(crate) fn release(&self) {
        let wait = self
            .with(|card, st, i| {
                let mem = card.host_mem_parts(&st.blocks);
                Ok(st.vdevs[i]
                    .as_mut()
                    .and_then(|v| v.vop.begin_remove(card.shim(), &mem)))
            })
            .ok()
            .flatten();
        if let Some(wait) = wait {
            self.wait_for_ack(wait);
        }
        let mut st = self.card.lock();
        if !st.removed {
            let inner = &mut *st;
            let mem = self.card.host_mem_parts(&inner.blocks);
            let mut alloc = self.card.dma_alloc_parts(&inner.blocks);
            if let Some(v) = inner.vdevs[self.index].as_mut() {
                v.vop.finish_remove(&mut inner.host, &mem, &mut alloc);
            }
        }
        st.vdevs[self.index] = None;
    }
}
