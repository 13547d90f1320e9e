//! `dev/micN` as the real character device of the host driver: the three
//! ioctls with their real numbers, `mmap`, `poll`.
//!
//! No X100 hardware exists any more, so this path is compiled and unit
//! tested for its argument encoding only; micemu serves the socket instead.

use std::fs::{File, OpenOptions};
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mic_core::abi::{MIC_VIRTIO_ADD_DEVICE, MIC_VIRTIO_CONFIG_CHANGE, MIC_VIRTIO_COPY_DESC, MicCopyDesc};

use super::map::Mapping;
use super::{VdevError, Wake, meaning, poll_ms};

#[derive(Debug)]
pub(super) struct CharFile {
    file: File,
    path: PathBuf,
    card: u32,
}

/// `struct mic_copy_desc` as the 64-bit kernel reads it.
#[repr(C)]
struct RawCopyDesc {
    iov: *mut libc::iovec,
    iovcnt: u32,
    vr_idx: u8,
    update_used: u8,
    out_len: u32,
}

const _: () = {
    assert!(std::mem::size_of::<RawCopyDesc>() == MicCopyDesc::SIZE);
    assert!(std::mem::offset_of!(RawCopyDesc, out_len) == mic_core::abi::CD_OUT_LEN);
};

impl CharFile {
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn open(path: &Path, card: u32) -> Result<Self, VdevError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| VdevError::Io {
                path: path.to_path_buf(),
                op: "open",
                source: e,
            })?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            card,
        })
    }

    fn check(&self, op: &'static str, rc: libc::c_int) -> Result<(), VdevError> {
        if rc < 0 {
            let errno = std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            return Err(VdevError::Driver {
                card: self.card,
                op,
                errno,
                meaning: meaning(op, errno),
            });
        }
        Ok(())
    }

    pub(super) fn add_device(&mut self, block: &[u8]) -> Result<(), VdevError> {
        // SAFETY: the driver reads `mic_desc_size` bytes of the block, which
        // is exactly what `block` holds; it is alive for the call.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::c_ulong::from(MIC_VIRTIO_ADD_DEVICE),
                block.as_ptr(),
            )
        };
        self.check("ADD_DEVICE", rc)
    }

    pub(super) fn config_change(&mut self, config: &[u8]) -> Result<(), VdevError> {
        // SAFETY: the driver reads `config_len` bytes; the caller passes the
        // device's whole config space, alive for the call.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::c_ulong::from(MIC_VIRTIO_CONFIG_CHANGE),
                config.as_ptr(),
            )
        };
        self.check("CONFIG_CHANGE", rc)
    }

    pub(super) fn copy_desc(
        &mut self,
        vr_idx: u8,
        bufs: &mut [IoSliceMut<'_>],
        update_used: bool,
    ) -> Result<u32, VdevError> {
        let mut iov: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let mut cd = RawCopyDesc {
            iov: iov.as_mut_ptr(),
            iovcnt: iov.len() as u32,
            vr_idx,
            update_used: u8::from(update_used),
            out_len: 0,
        };
        // SAFETY: `cd` and the iovecs it points to are alive for the call;
        // the iovecs cover the caller's exclusive buffers, which the driver
        // reads and writes within their lengths.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::c_ulong::from(MIC_VIRTIO_COPY_DESC),
                std::ptr::addr_of_mut!(cd),
            )
        };
        self.check("COPY_DESC", rc)?;
        Ok(cd.out_len)
    }

    pub(super) fn map(&mut self, len: usize) -> Result<Mapping, VdevError> {
        Mapping::whole(self.file.as_fd(), len).map_err(|e| VdevError::Io {
            path: self.path.clone(),
            op: "mmap",
            source: e,
        })
    }

    pub(super) fn wait(&mut self, timeout: Option<Duration>) -> Result<Wake, VdevError> {
        let mut pfd = [libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLIN | libc::POLLOUT,
            revents: 0,
        }];
        // TIMEOUT: the caller's.
        // SAFETY: one pollfd of a descriptor we own, for the call.
        let n = unsafe { libc::poll(pfd.as_mut_ptr(), 1, poll_ms(timeout)) };
        if n < 0 {
            return Err(VdevError::Io {
                path: self.path.clone(),
                op: "poll",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(if n == 0 {
            Wake::TimedOut
        } else if pfd[0].revents & (libc::POLLERR | libc::POLLHUP) != 0 {
            Wake::Gone
        } else {
            Wake::Doorbell
        })
    }

    pub(super) fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
