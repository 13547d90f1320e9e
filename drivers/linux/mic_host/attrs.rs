// SPDX-License-Identifier: GPL-2.0-only

//! The files of `/sys/class/mic/micN/` and `/sys/kernel/debug/mic_host/micN/`:
//! the tables the shim creates them from, and their show/store sides.
//!
//! Formats and errno are the core's (`mic_core::host::sysfs`), so they are
//! the ones micemu serves.
// TODO(attribute table): when mic-core's sysfs/debugfs attribute table lands
// on main, build `SYSFS`/`DEBUGFS` from it and take `format_ptr` and the
// `dp` dump from it instead of the local versions below.

use core::fmt::Write;

use kernel::c_str;
use kernel::prelude::*;
use kernel::sync::Arc;

use crate::abi::{BootMode, MicBootparam, MicState, MIC_DP_SIZE};
use crate::card::{core_err, HostCard};
use crate::devpage;
use crate::host::sysfs::{self, ParseHexError, StateRequest};
use crate::shim::{SeqFile, ShimAttr};

/// A sysfs attribute of a card; the discriminant is its index in [`SYSFS`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sysfs {
    Family,
    Stepping,
    State,
    ShutdownStatus,
    Cmdline,
    Firmware,
    Ramdisk,
    Bootmode,
    LogBufAddr,
    LogBufLen,
    Ipaddr,
}

impl Sysfs {
    const ALL: [Sysfs; 11] = [
        Sysfs::Family,
        Sysfs::Stepping,
        Sysfs::State,
        Sysfs::ShutdownStatus,
        Sysfs::Cmdline,
        Sysfs::Firmware,
        Sysfs::Ramdisk,
        Sysfs::Bootmode,
        Sysfs::LogBufAddr,
        Sysfs::LogBufLen,
        Sysfs::Ipaddr,
    ];

    /// The attribute at `index` of [`SYSFS`].
    pub(crate) fn from_index(index: u32) -> Option<Self> {
        Self::ALL.get(index as usize).copied()
    }
}

/// `/sys/class/mic/micN/`, in [`Sysfs`] order (the 3.13 set plus `ipaddr`).
pub(crate) static SYSFS: [ShimAttr; 11] = [
    ShimAttr::new(c_str!("family"), 0o444),
    ShimAttr::new(c_str!("stepping"), 0o444),
    ShimAttr::new(c_str!("state"), 0o644),
    ShimAttr::new(c_str!("shutdown_status"), 0o444),
    ShimAttr::new(c_str!("cmdline"), 0o644),
    ShimAttr::new(c_str!("firmware"), 0o644),
    ShimAttr::new(c_str!("ramdisk"), 0o644),
    ShimAttr::new(c_str!("bootmode"), 0o644),
    ShimAttr::new(c_str!("log_buf_addr"), 0o644),
    ShimAttr::new(c_str!("log_buf_len"), 0o644),
    ShimAttr::new(c_str!("ipaddr"), 0o444),
];

/// A debugfs file of a card; the discriminant is its index in [`DEBUGFS`].
#[derive(Clone, Copy)]
pub(crate) enum Debugfs {
    LogBuf,
    PostCode,
    Smpt,
    Dp,
    SoftReset,
}

impl Debugfs {
    const ALL: [Debugfs; 5] = [
        Debugfs::LogBuf,
        Debugfs::PostCode,
        Debugfs::Smpt,
        Debugfs::Dp,
        Debugfs::SoftReset,
    ];

    /// The file at `index` of [`DEBUGFS`].
    pub(crate) fn from_index(index: u32) -> Option<Self> {
        Self::ALL.get(index as usize).copied()
    }
}

/// `/sys/kernel/debug/mic_host/micN/`, in [`Debugfs`] order.
pub(crate) static DEBUGFS: [ShimAttr; 5] = [
    ShimAttr::new(c_str!("log_buf"), 0o444),
    ShimAttr::new(c_str!("post_code"), 0o444),
    ShimAttr::new(c_str!("smpt"), 0o444),
    ShimAttr::new(c_str!("dp"), 0o444),
    ShimAttr::new(c_str!("soft_reset"), 0o444),
];

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

/// The kernel's `%p` of the 3.13 era: 16 zero-padded hex digits, or
/// "(null)" right-aligned in the same width.
fn format_ptr(w: &mut impl Write, v: u64) -> core::fmt::Result {
    if v == 0 {
        writeln!(w, "{:>16}", "(null)")
    } else {
        writeln!(w, "{v:016x}")
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
pub(crate) fn show(card: &HostCard, attr: Sysfs, w: &mut PageWriter<'_>) -> core::fmt::Result {
    let st = card.lock();
    match attr {
        Sysfs::Family => line(w, sysfs::family(card.device_id())),
        Sysfs::Stepping => line(w, sysfs::stepping(card.revision())),
        Sysfs::State => line(w, st.host.state().as_str()),
        Sysfs::ShutdownStatus => line(w, st.host.shutdown_status().as_str()),
        Sysfs::Cmdline => opt_line(w, st.attrs.cmdline.as_deref()),
        Sysfs::Firmware => opt_line(w, st.attrs.firmware.as_deref()),
        Sysfs::Ramdisk => opt_line(w, st.attrs.ramdisk.as_deref()),
        Sysfs::Bootmode => opt_line(w, st.attrs.bootmode.map(|m| m.as_str().as_bytes())),
        Sysfs::LogBufAddr => format_ptr(w, st.attrs.log_buf_addr),
        Sysfs::LogBufLen => format_ptr(w, st.attrs.log_buf_len),
        Sysfs::Ipaddr => {
            let cmdline = st.attrs.cmdline.as_deref().unwrap_or_default();
            let addr = core::str::from_utf8(cmdline)
                .ok()
                .and_then(sysfs::ipaddr_from_cmdline);
            opt_line(w, addr.map(str::as_bytes))
        }
    }
}

/// `store` of sysfs attribute `attr`; `data` is what user space wrote.
pub(crate) fn store(card: &Arc<HostCard>, attr: Sysfs, data: &[u8]) -> Result {
    let text = core::str::from_utf8(data).map_err(|_| EINVAL)?;
    if attr == Sysfs::State {
        let req = sysfs::parse_state_request(text).ok_or(EINVAL)?;
        return match req {
            StateRequest::Boot => card.boot(),
            StateRequest::Reset => card.reset(false).map(|_| ()),
            StateRequest::Shutdown => card.shutdown(),
        };
    }
    let value = sysfs::strip_newline(text).as_bytes();
    let owned = || -> Result<KVec<u8>> {
        let mut v = KVec::new();
        v.extend_from_slice(value, GFP_KERNEL).map_err(|_| ENOMEM)?;
        Ok(v)
    };
    let hex = |s| sysfs::parse_hex_u64(s).map_err(|e: ParseHexError| core_err(e.errno()));
    match attr {
        Sysfs::Cmdline => card.lock().attrs.cmdline = Some(owned()?),
        Sysfs::Firmware => card.lock().attrs.firmware = Some(owned()?),
        Sysfs::Ramdisk => card.lock().attrs.ramdisk = Some(owned()?),
        Sysfs::Bootmode => {
            let mode = BootMode::from_sysfs(sysfs::strip_newline(text)).ok_or(EINVAL)?;
            card.lock().attrs.bootmode = Some(mode);
        }
        Sysfs::LogBufAddr => card.lock().attrs.log_buf_addr = hex(text)?,
        Sysfs::LogBufLen => card.lock().attrs.log_buf_len = hex(text)?,
        _ => return Err(EACCES),
    }
    Ok(())
}

/// `show` of debugfs file `file`.
pub(crate) fn debugfs_show(card: &Arc<HostCard>, file: Debugfs, s: &mut SeqFile) -> Result {
    match file {
        Debugfs::LogBuf => card.dump_log_buf(s),
        Debugfs::PostCode => {
            let [a, b] = crate::regs::post_code_chars(card.read_post_code());
            s.write(&[a, b, b'\n']);
            Ok(())
        }
        Debugfs::Smpt => {
            let st = card.lock();
            st.host.smpt().write_dump(card.id(), s).map_err(|_| EINVAL)
        }
        Debugfs::Dp => dp_dump(card, s),
        Debugfs::SoftReset => {
            // Reading it force-resets the card, as the original did.
            card.reset(true).map(|_| ())
        }
    }
}

/// The device page: the bootparam fields, then one line per descriptor.
fn dp_dump(card: &HostCard, s: &mut SeqFile) -> Result {
    let mut page = KVec::from_elem(0u8, MIC_DP_SIZE, GFP_KERNEL)?;
    {
        let st = card.lock();
        if st.removed {
            return Err(ENODEV);
        }
        crate::hw::Memory::read(card.device_page(), 0, &mut page).map_err(|_| EIO)?;
    }
    let Some(bp) = MicBootparam::from_slice(&page) else {
        return Ok(());
    };
    let fmt = |r: core::fmt::Result| r.map_err(|_| EINVAL);
    fmt(writeln!(s, "Bootparam: magic {:#x}", bp.magic))?;
    fmt(writeln!(
        s,
        "Bootparam: h2c_shutdown_db {}",
        bp.h2c_shutdown_db
    ))?;
    fmt(writeln!(s, "Bootparam: h2c_config_db {}", bp.h2c_config_db))?;
    fmt(writeln!(
        s,
        "Bootparam: c2h_shutdown_db {}",
        bp.c2h_shutdown_db
    ))?;
    fmt(writeln!(
        s,
        "Bootparam: shutdown_status {}",
        bp.shutdown_status
    ))?;
    fmt(writeln!(s, "Bootparam: shutdown_card {}", bp.shutdown_card))?;
    for item in devpage::walk(&page) {
        match item {
            Ok(d) => fmt(writeln!(
                s,
                "Device type {} num_vq {} feature_len {} config_len {} status {:#x} at offset {:#x}",
                d.desc.ty, d.desc.num_vq, d.desc.feature_len, d.desc.config_len, d.desc.status, d.offset
            ))?,
            Err(e) => fmt(writeln!(s, "malformed descriptor: {e:?}"))?,
        }
    }
    Ok(())
}

/// Whether the card log may be read in `state` (the original printed it
/// only while the card OS runs or is shutting down).
pub(crate) fn log_readable(state: MicState) -> bool {
    matches!(state, MicState::Online | MicState::ShuttingDown)
}
