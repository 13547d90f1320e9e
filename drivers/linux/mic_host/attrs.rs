// SPDX-License-Identifier: GPL-2.0-only

//! The files of `/sys/class/mic/micN/` and `/sys/kernel/debug/mic_host/micN/`:
//! mic-core's one table (`host::attrs`) gives their names, modes, show and
//! store rules and errno, so they are the files micemu serves.

use core::fmt::Write;

use kernel::prelude::*;
use kernel::sync::Arc;

use crate::abi::{MicState, MIC_DP_SIZE};
use crate::devpage;
use crate::host::attrs::{self, Attr, DebugFile, PercentP, StoreValue};
use crate::host::sysfs::{self, StateRequest};
use crate::hostcard::{core_err, HostCard};
use crate::shim::SeqFile;

/// The sysfs attribute at `index` of mic-core's table.
pub(crate) fn sysfs_file(index: u32) -> Option<Attr> {
    Attr::ALL.get(index as usize).copied()
}

/// The debugfs file at `index` of mic-core's table.
pub(crate) fn debugfs_file(index: u32) -> Option<DebugFile> {
    DebugFile::ALL.get(index as usize).copied()
}

/// A `fmt::Write` over the page sysfs hands to `show`.
pub(crate) struct PageWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> PageWriter<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, len: 0 }
    }

    /// Bytes written.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Write for PageWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(core::fmt::Error)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(core::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn line(w: &mut impl Write, s: &str) -> core::fmt::Result {
    writeln!(w, "{s}")
}

/// An optional string attribute: its value and a newline, or nothing.
fn opt_line(w: &mut impl Write, s: Option<&[u8]>) -> core::fmt::Result {
    match s {
        // Stores accept UTF-8 only, so nothing is lost here.
        Some(b) => writeln!(w, "{}", core::str::from_utf8(b).unwrap_or_default()),
        None => Ok(()),
    }
}

/// `show` of sysfs attribute `attr`.
pub(crate) fn show(card: &HostCard, attr: Attr, w: &mut PageWriter<'_>) -> core::fmt::Result {
    let st = card.lock();
    match attr {
        Attr::Family => line(w, sysfs::family(card.device_id())),
        Attr::Stepping => line(w, sysfs::stepping(card.revision())),
        Attr::State => line(w, st.host.state().as_str()),
        Attr::ShutdownStatus => line(w, st.host.shutdown_status().as_str()),
        Attr::Cmdline => opt_line(w, st.attrs.cmdline.as_deref()),
        Attr::Firmware => opt_line(w, st.attrs.firmware.as_deref()),
        Attr::Ramdisk => opt_line(w, st.attrs.ramdisk.as_deref()),
        Attr::Bootmode => opt_line(w, st.attrs.bootmode.map(|m| m.as_str().as_bytes())),
        Attr::LogBufAddr => writeln!(w, "{}", PercentP(st.attrs.log_buf_addr)),
        Attr::LogBufLen => writeln!(w, "{}", PercentP(st.attrs.log_buf_len)),
        Attr::Ipaddr => {
            let cmdline = st.attrs.cmdline.as_deref().unwrap_or_default();
            let addr = core::str::from_utf8(cmdline)
                .ok()
                .and_then(sysfs::ipaddr_from_cmdline);
            opt_line(w, addr.map(str::as_bytes))
        }
    }
}

/// `store` of sysfs attribute `attr`; `data` is what user space wrote.
pub(crate) fn store(card: &Arc<HostCard>, attr: Attr, data: &[u8]) -> Result {
    let value = attrs::parse_store(&attr.spec(), data).map_err(core_err)?;
    let owned = |s: &str| -> Result<KVec<u8>> {
        let mut v = KVec::new();
        v.extend_from_slice(s.as_bytes(), GFP_KERNEL)?;
        Ok(v)
    };
    match (attr, value) {
        (_, StoreValue::State(StateRequest::Boot)) => card.boot(),
        (_, StoreValue::State(StateRequest::Reset)) => card.reset(false).map(|_| ()),
        (_, StoreValue::State(StateRequest::Shutdown)) => card.shutdown(),
        (Attr::Cmdline, StoreValue::Text(s)) => {
            card.lock().attrs.cmdline = Some(owned(s)?);
            Ok(())
        }
        (Attr::Firmware, StoreValue::Text(s)) => {
            card.lock().attrs.firmware = Some(owned(s)?);
            Ok(())
        }
        (Attr::Ramdisk, StoreValue::Text(s)) => {
            card.lock().attrs.ramdisk = Some(owned(s)?);
            Ok(())
        }
        (_, StoreValue::BootMode(m)) => {
            card.lock().attrs.bootmode = Some(m);
            Ok(())
        }
        (Attr::LogBufAddr, StoreValue::Hex(v)) => {
            card.lock().attrs.log_buf_addr = v;
            Ok(())
        }
        (Attr::LogBufLen, StoreValue::Hex(v)) => {
            card.lock().attrs.log_buf_len = v;
            Ok(())
        }
        _ => Err(EACCES),
    }
}

/// `show` of debugfs file `file`.
pub(crate) fn debugfs_show(card: &Arc<HostCard>, file: DebugFile, s: &mut SeqFile) -> Result {
    match file {
        DebugFile::LogBuf => card.dump_log_buf(s),
        DebugFile::PostCode => {
            let [a, b] = crate::regs::post_code_chars(card.read_post_code());
            s.write(&[a, b, b'\n']);
            Ok(())
        }
        DebugFile::Smpt => {
            let st = card.lock();
            st.host.smpt().write_dump(card.id(), s).map_err(|_| EINVAL)
        }
        DebugFile::Dp => dp_dump(card, s),
        DebugFile::VdevInfo => {
            let st = card.lock();
            let mem = card.host_mem_parts(&st.blocks);
            for v in st.vdevs.iter().flatten() {
                v.vop.write_info(&mem, s).map_err(|_| EINVAL)?;
            }
            Ok(())
        }
        DebugFile::SoftReset => {
            // Reading it force-resets the card, as the original did.
            card.reset(true).map(|_| ())
        }
    }
}

/// The device page, dumped by mic-core (`devpage::write_dump`).
fn dp_dump(card: &HostCard, s: &mut SeqFile) -> Result {
    let mut page = KVec::from_elem(0u8, MIC_DP_SIZE, GFP_KERNEL)?;
    {
        let st = card.lock();
        if st.removed {
            return Err(ENODEV);
        }
        crate::hw::Memory::read(card.device_page(), 0, &mut page).map_err(|_| EIO)?;
    }
    devpage::write_dump(&page, s).map_err(|_| EINVAL)
}

/// Whether the card log may be read in `state` (the original printed it
/// only while the card OS runs or is shutting down).
pub(crate) fn log_readable(state: MicState) -> bool {
    matches!(state, MicState::Online | MicState::ShuttingDown)
}
