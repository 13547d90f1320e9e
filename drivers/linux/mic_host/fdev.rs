// SPDX-License-Identifier: GPL-2.0-only

//! `/dev/micN`: every open file is one virtio device slot (original 3.13
//! semantics), with the three ioctls, a read-only mmap and poll.
//!
// TODO(virtio host): mic-core's host-side virtio code (`host::vop`: the
// ADD_DEVICE descriptor placement, the COPY_DESC ring walker and the
// CONFIG_CHANGE handshake) is not on main yet. Until it lands no device can
// be added, so COPY_DESC, CONFIG_CHANGE and mmap answer what the original
// answers for a slot without a device (EINVAL) and poll reports POLLERR.
// Expected API: `vop::Vdev::add(&mut HostDevice, dp: &impl Memory, desc: &[u8])`,
// `Vdev::copy_desc(&mut self, card: &impl Memory, iov, ...)`,
// `Vdev::config_change(..)`; ADD_DEVICE then stores the `Vdev` in `MicFile`.

use kernel::prelude::*;
use kernel::sync::Arc;

use crate::abi::{
    MIC_DP_SIZE, MIC_VIRTIO_ADD_DEVICE, MIC_VIRTIO_CONFIG_CHANGE, MIC_VIRTIO_COPY_DESC,
};
use crate::card::HostCard;
use crate::shim::{PollState, Vma};

/// One open file of `/dev/micN`.
pub(crate) struct MicFile {
    card: Arc<HostCard>,
    /// A virtio device was added through this file (never yet: see the TODO above).
    added: bool,
}

impl MicFile {
    pub(crate) fn open(card: Arc<HostCard>) -> Result<Self> {
        if card.lock().removed {
            return Err(ENODEV);
        }
        Ok(Self { card, added: false })
    }

    fn has_device(&self) -> Result {
        if self.card.lock().removed {
            return Err(ENODEV);
        }
        if self.added {
            Ok(())
        } else {
            Err(EINVAL)
        }
    }

    pub(crate) fn ioctl(&self, cmd: u32, _arg: usize) -> Result<isize> {
        match cmd {
            // No core API to add a device with yet (TODO above).
            MIC_VIRTIO_ADD_DEVICE => Err(EINVAL),
            MIC_VIRTIO_COPY_DESC | MIC_VIRTIO_CONFIG_CHANGE => self.has_device().map(|()| 0),
            _ => Err(ENOTTY),
        }
    }

    /// Read-only mappings only; offset 0 is the device page.
    pub(crate) fn mmap(&self, vma: &Vma) -> Result {
        let req = vma.info();
        if req.writable {
            return Err(EACCES);
        }
        self.has_device()?;
        if req.pgoff == 0 && req.len <= MIC_DP_SIZE {
            return self.card.shim().mmap_device_page(vma);
        }
        Err(EINVAL)
    }

    pub(crate) fn poll(&self) -> PollState {
        match self.has_device() {
            Ok(()) => PollState::None,
            Err(_) => PollState::Error,
        }
    }
}
