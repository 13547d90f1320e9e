//! The sysfs and debugfs backend: what each file of the driver core's table
//! ([`mic_core::host::attrs`]) shows and what a store does, with the
//! original formats and errno values.

use mic_core::abi::MIC_DP_SIZE;
use mic_core::host::attrs::{self, Attr, DEBUGFS_FILES, DebugFile, PercentP, SYSFS_FILES, StoreValue};
use mic_core::hw::Memory;

use crate::card::{Attrs, Card, CardState};
use crate::cardos::ifcfg_address;
use crate::emu::Emulator;
use crate::fs::{Backend, Errno, FileSpec, Tree, WriteDone};

impl Backend for Emulator {
    fn card_count(&self) -> u32 {
        self.config.cards
    }

    fn files(&self, tree: Tree) -> &'static [FileSpec] {
        match tree {
            Tree::Sysfs => &SYSFS_FILES,
            Tree::Debugfs => &DEBUGFS_FILES,
        }
    }

    fn read(&self, id: u32, tree: Tree, name: &str) -> Result<Vec<u8>, Errno> {
        let card = self.card(id).ok_or(libc::ENODEV)?;
        match tree {
            Tree::Sysfs => show_attr(card, &card.lock(), Attr::from_name(name).ok_or(libc::ENOENT)?),
            Tree::Debugfs => match DebugFile::from_name(name).ok_or(libc::ENOENT)? {
                DebugFile::LogBuf => Ok(Emulator::read_log_buf(card)),
                DebugFile::SoftReset => {
                    self.soft_reset(card);
                    Ok(Vec::new())
                }
                f => Ok(show_debug(card, &card.lock(), f).into_bytes()),
            },
        }
    }

    fn write(&self, id: u32, tree: Tree, name: &str, data: &[u8], done: WriteDone) {
        let Some(card) = self.card(id) else {
            return done.err(libc::ENODEV);
        };
        let spec = match tree {
            Tree::Sysfs => Attr::from_name(name).map(Attr::spec),
            Tree::Debugfs => DebugFile::from_name(name).map(DebugFile::spec),
        };
        let Some(spec) = spec else {
            return done.err(libc::ENOENT);
        };
        match attrs::parse_store(&spec, data) {
            Err(e) => done.err(e),
            Ok(StoreValue::State(req)) => self.write_state(card, req, done),
            Ok(value) => match store(&mut card.lock().attrs, name, value) {
                Ok(()) => done.ok(),
                Err(e) => done.err(e),
            },
        }
    }
}

/// What a sysfs attribute shows.
fn show_attr(card: &Card, st: &CardState, attr: Attr) -> Result<Vec<u8>, Errno> {
    let line = |s: &dyn std::fmt::Display| Ok(format!("{s}\n").into_bytes());
    let stored = |s: &Option<String>| {
        Ok(s.as_ref()
            .map_or_else(Vec::new, |s| format!("{s}\n").into_bytes()))
    };
    match attr {
        Attr::Family => line(&mic_core::host::sysfs::family(card.pci.device)),
        Attr::Stepping => line(&mic_core::host::sysfs::stepping(card.pci.revision)),
        Attr::State => line(&st.host.state().as_str()),
        Attr::ShutdownStatus => line(&st.host.shutdown_status().as_str()),
        Attr::Cmdline => stored(&st.attrs.cmdline),
        Attr::Firmware => stored(&st.attrs.firmware),
        Attr::Ramdisk => stored(&st.attrs.ramdisk),
        Attr::Bootmode => stored(&st.attrs.bootmode),
        Attr::LogBufAddr => line(&PercentP(st.attrs.log_buf_addr)),
        Attr::LogBufLen => line(&PercentP(st.attrs.log_buf_len)),
        Attr::Ipaddr => Ok(st
            .attrs
            .cmdline
            .as_deref()
            .and_then(ifcfg_address)
            .map_or_else(Vec::new, |a| format!("{a}\n").into_bytes())),
    }
}

/// What a debugfs file without side effects shows.
fn show_debug(card: &Card, st: &CardState, file: DebugFile) -> String {
    match file {
        DebugFile::PostCode => {
            let chars = mic_core::post::from_register(card.regs.get(mic_core::regs::POSTCODE));
            format!("{}{}\n", chars[0] as char, chars[1] as char)
        }
        DebugFile::Smpt => {
            let mut out = String::new();
            let _ = st.host.smpt().write_dump(card.id, &mut out);
            out
        }
        DebugFile::Dp => dp_dump(card),
        DebugFile::VdevInfo => crate::dev::info(card, &st.vdevs),
        DebugFile::LogBuf | DebugFile::SoftReset => String::new(),
    }
}

/// A store that passed its file's rule (`state` is the emulator's).
fn store(attrs: &mut Attrs, name: &str, value: StoreValue<'_>) -> Result<(), Errno> {
    match (Attr::from_name(name), value) {
        (Some(Attr::Cmdline), StoreValue::Text(v)) => attrs.cmdline = Some(v.to_owned()),
        (Some(Attr::Firmware), StoreValue::Text(v)) => attrs.firmware = Some(v.to_owned()),
        (Some(Attr::Ramdisk), StoreValue::Text(v)) => attrs.ramdisk = Some(v.to_owned()),
        (Some(Attr::Bootmode), StoreValue::BootMode(m)) => attrs.bootmode = Some(m.as_str().to_owned()),
        (Some(Attr::LogBufAddr), StoreValue::Hex(v)) => attrs.log_buf_addr = v,
        (Some(Attr::LogBufLen), StoreValue::Hex(v)) => attrs.log_buf_len = v,
        _ => return Err(libc::EACCES),
    }
    Ok(())
}

fn dp_dump(card: &Card) -> String {
    let mut page = vec![0u8; MIC_DP_SIZE];
    if card.host_ram.read(0, &mut page).is_err() {
        return String::new();
    }
    let mut out = String::new();
    let _ = mic_core::devpage::write_dump(&page, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(a: &mut Attrs, name: &str, data: &[u8]) -> Result<(), Errno> {
        let spec = Attr::from_name(name).ok_or(libc::ENOENT)?.spec();
        store(a, name, attrs::parse_store(&spec, data)?)
    }

    #[test]
    fn stores_follow_the_original() {
        let mut a = Attrs::default();
        put(&mut a, "cmdline", b"quiet\n").unwrap();
        assert_eq!(a.cmdline.as_deref(), Some("quiet"));
        put(&mut a, "firmware", b"mic/uos.img\n\n").unwrap();
        assert_eq!(a.firmware.as_deref(), Some("mic/uos.img\n"));
        assert_eq!(put(&mut a, "bootmode", b"windows\n"), Err(libc::EINVAL));
        put(&mut a, "bootmode", b"elf\n").unwrap();
        assert_eq!(a.bootmode.as_deref(), Some("elf"));
        assert_eq!(put(&mut a, "log_buf_addr", b"nothex"), Err(libc::EINVAL));
        put(&mut a, "log_buf_len", b"ffffffff81a1b2c0\n").unwrap();
        assert_eq!(a.log_buf_len, 0xffff_ffff_81a1_b2c0);
        assert_eq!(put(&mut a, "family", b"x"), Err(libc::EACCES));
    }
}
