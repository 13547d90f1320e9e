//! What the host driver's sysfs and debugfs files show and accept, with the
//! original formats and errno values.

use mic_core::abi::BootMode;
use mic_core::devpage;
use mic_core::host::sysfs::{ParseHexError, parse_hex_u64};

use crate::cardos::ifcfg_address;
use crate::emu::{Attrs, Card, CardState};
use crate::fs::{Errno, FileSpec, Tree};

/// `/sys/class/mic/micN/` (3.13 set, plus the read-only `ipaddr`).
pub const SYSFS_FILES: &[FileSpec] = &[
    FileSpec {
        name: "family",
        mode: 0o444,
    },
    FileSpec {
        name: "stepping",
        mode: 0o444,
    },
    FileSpec {
        name: "state",
        mode: 0o644,
    },
    FileSpec {
        name: "shutdown_status",
        mode: 0o444,
    },
    FileSpec {
        name: "cmdline",
        mode: 0o644,
    },
    FileSpec {
        name: "firmware",
        mode: 0o644,
    },
    FileSpec {
        name: "ramdisk",
        mode: 0o644,
    },
    FileSpec {
        name: "bootmode",
        mode: 0o644,
    },
    FileSpec {
        name: "log_buf_addr",
        mode: 0o644,
    },
    FileSpec {
        name: "log_buf_len",
        mode: 0o644,
    },
    FileSpec {
        name: "ipaddr",
        mode: 0o444,
    },
];

/// `/sys/kernel/debug/mic_host/micN/`.
pub const DEBUGFS_FILES: &[FileSpec] = &[
    FileSpec {
        name: "log_buf",
        mode: 0o444,
    },
    FileSpec {
        name: "post_code",
        mode: 0o444,
    },
    FileSpec {
        name: "smpt",
        mode: 0o444,
    },
    FileSpec {
        name: "dp",
        mode: 0o444,
    },
    FileSpec {
        name: "soft_reset",
        mode: 0o444,
    },
];

/// The "show" side of every attribute except those with side effects
/// (`log_buf`, `soft_reset`), which the emulator handles itself.
pub fn show(card: &Card, st: &CardState, tree: Tree, name: &str) -> Result<Vec<u8>, Errno> {
    let line = |s: &str| Ok(format!("{s}\n").into_bytes());
    let opt = |s: &Option<String>| {
        Ok(s.as_ref()
            .map_or_else(Vec::new, |s| format!("{s}\n").into_bytes()))
    };
    match (tree, name) {
        (Tree::Sysfs, "family") => line(mic_core::host::sysfs::family(card.pci.device)),
        (Tree::Sysfs, "stepping") => line(mic_core::host::sysfs::stepping(card.pci.revision)),
        (Tree::Sysfs, "state") => line(st.host.state().as_str()),
        (Tree::Sysfs, "shutdown_status") => line(st.host.shutdown_status().as_str()),
        (Tree::Sysfs, "cmdline") => opt(&st.attrs.cmdline),
        (Tree::Sysfs, "firmware") => opt(&st.attrs.firmware),
        (Tree::Sysfs, "ramdisk") => opt(&st.attrs.ramdisk),
        (Tree::Sysfs, "bootmode") => opt(&st.attrs.bootmode),
        (Tree::Sysfs, "log_buf_addr") => line(&format_ptr(st.attrs.log_buf_addr)),
        (Tree::Sysfs, "log_buf_len") => line(&format_ptr(st.attrs.log_buf_len)),
        (Tree::Sysfs, "ipaddr") => Ok(st
            .attrs
            .cmdline
            .as_deref()
            .and_then(ifcfg_address)
            .map_or_else(Vec::new, |a| format!("{a}\n").into_bytes())),
        (Tree::Debugfs, "post_code") => {
            let chars = mic_core::regs::post_code_chars(card.regs.get(mic_core::regs::POSTCODE));
            Ok(format!("{}{}\n", chars[0] as char, chars[1] as char).into_bytes())
        }
        (Tree::Debugfs, "smpt") => Ok(smpt_dump(card, st).into_bytes()),
        (Tree::Debugfs, "dp") => Ok(dp_dump(card).into_bytes()),
        _ => Err(libc::ENOENT),
    }
}

/// The "store" side of the plain attributes (`state` is the emulator's).
pub fn store(attrs: &mut Attrs, tree: Tree, name: &str, data: &[u8]) -> Result<(), Errno> {
    if tree != Tree::Sysfs {
        return Err(libc::EACCES);
    }
    let text = std::str::from_utf8(data).map_err(|_| libc::EINVAL)?;
    // The original strips exactly one trailing newline.
    let value = text.strip_suffix('\n').unwrap_or(text);
    match name {
        "cmdline" => attrs.cmdline = Some(value.to_owned()),
        "firmware" => attrs.firmware = Some(value.to_owned()),
        "ramdisk" => attrs.ramdisk = Some(value.to_owned()),
        "bootmode" => {
            BootMode::from_sysfs(value).ok_or(libc::EINVAL)?;
            attrs.bootmode = Some(value.to_owned());
        }
        "log_buf_addr" => attrs.log_buf_addr = parse_hex_u64(text).map_err(ParseHexError::errno)?,
        "log_buf_len" => attrs.log_buf_len = parse_hex_u64(text).map_err(ParseHexError::errno)?,
        _ => return Err(libc::EACCES),
    }
    Ok(())
}

/// The kernel's `%p` of that era: 16 zero-padded hex digits, or "(null)"
/// right-aligned in the same width.
#[must_use]
pub fn format_ptr(v: u64) -> String {
    if v == 0 {
        format!("{:>16}", "(null)")
    } else {
        format!("{v:016x}")
    }
}

fn smpt_dump(card: &Card, st: &CardState) -> String {
    let mut out = String::new();
    let _ = st.host.smpt().write_dump(card.id, &mut out);
    out
}

fn dp_dump(card: &Card) -> String {
    use std::fmt::Write as _;
    let mut page = vec![0u8; mic_core::abi::MIC_DP_SIZE];
    if mic_core::hw::Memory::read(&card.host_ram, 0, &mut page).is_err() {
        return String::new();
    }
    let Some(bp) = mic_core::abi::MicBootparam::from_slice(&page) else {
        return String::new();
    };
    let mut out = String::new();
    let _ = writeln!(out, "Bootparam: magic {:#x}", bp.magic);
    let _ = writeln!(out, "Bootparam: h2c_shutdown_db {}", bp.h2c_shutdown_db);
    let _ = writeln!(out, "Bootparam: h2c_config_db {}", bp.h2c_config_db);
    let _ = writeln!(out, "Bootparam: c2h_shutdown_db {}", bp.c2h_shutdown_db);
    let _ = writeln!(out, "Bootparam: shutdown_status {}", bp.shutdown_status);
    let _ = writeln!(out, "Bootparam: shutdown_card {}", bp.shutdown_card);
    for item in devpage::walk(&page) {
        match item {
            Ok(d) => {
                let _ = writeln!(
                    out,
                    "Device type {} num_vq {} feature_len {} config_len {} status {:#x} at offset {:#x}",
                    d.desc.ty, d.desc.num_vq, d.desc.feature_len, d.desc.config_len, d.desc.status, d.offset
                );
            }
            Err(e) => {
                let _ = writeln!(out, "malformed descriptor: {e:?}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_print_like_percent_p() {
        assert_eq!(format_ptr(0), "          (null)");
        assert_eq!(format_ptr(0xffff_ffff_81c3_d560), "ffffffff81c3d560");
    }

    #[test]
    fn stores_follow_the_original() {
        let mut a = Attrs::default();
        store(&mut a, Tree::Sysfs, "cmdline", b"quiet\n").unwrap();
        assert_eq!(a.cmdline.as_deref(), Some("quiet"));
        store(&mut a, Tree::Sysfs, "firmware", b"mic/uos.img\n\n").unwrap();
        assert_eq!(a.firmware.as_deref(), Some("mic/uos.img\n"));
        assert_eq!(
            store(&mut a, Tree::Sysfs, "bootmode", b"windows\n"),
            Err(libc::EINVAL)
        );
        store(&mut a, Tree::Sysfs, "bootmode", b"elf\n").unwrap();
        assert_eq!(
            store(&mut a, Tree::Sysfs, "log_buf_addr", b"nothex"),
            Err(libc::EINVAL)
        );
        assert_eq!(store(&mut a, Tree::Sysfs, "family", b"x"), Err(libc::EACCES));
    }
}
