//! What the card OS learns at boot from the host: the image, command line
//! and ramdisk in GDDR, checked as a suspicious kernel would, and the
//! network configuration on the command line.

use std::net::Ipv4Addr;

use mic_core::hw::{Memory, Mmio};
use mic_core::{bzimage, regs};

use super::CardHw;

/// What the boot learned from the host.
#[derive(Debug, Clone, Default)]
pub struct BootInfo {
    pub cmdline: String,
    pub image_size: u64,
    pub ramdisk: Option<(u64, u64)>,
    pub version: String,
}

/// Checks the image, command line and ramdisk the host placed in GDDR.
pub fn load<M: Mmio, P: Memory>(hw: &CardHw<M, P>) -> Result<BootInfo, &'static str> {
    let boot_addr = regs::spad2_boot_addr(hw.mmio.read32(regs::spad(regs::SPAD_DOWNLOAD_INFO)));
    let image_size = u64::from(hw.mmio.read32(regs::spad(regs::SPAD_IMAGE_SIZE)));
    if image_size < 0x1000 || !mic_core::hw::in_bounds(boot_addr, image_size, hw.memory) {
        return Err("image size out of range");
    }
    let header = bzimage::read_header(&hw.phys, boot_addr).map_err(|_| "not a bzImage")?;
    let version = (header.kernel_version != 0)
        .then(|| {
            let at = boot_addr + bzimage::KERNEL_VERSION_BASE as u64 + u64::from(header.kernel_version);
            read_cstr(&hw.phys, at, 256)
        })
        .flatten()
        .unwrap_or_else(|| "unknown".to_owned());
    let cmdline = read_cstr(&hw.phys, boot_addr + image_size, 2048).unwrap_or_default();
    let ramdisk = (header.ramdisk_size != 0)
        .then_some((u64::from(header.ramdisk_image), u64::from(header.ramdisk_size)));
    Ok(BootInfo {
        cmdline: cmdline.trim().to_owned(),
        image_size,
        ramdisk,
        version,
    })
}

/// A NUL-terminated string of at most `max` bytes at `addr`.
pub fn read_cstr(mem: &impl Memory, addr: u64, max: usize) -> Option<String> {
    let mut buf = vec![0u8; max];
    // Shrink the read until it fits (the string may sit near the end).
    let mut len = max;
    while len > 0 && mem.read(addr, &mut buf[..len]).is_err() {
        len /= 2;
    }
    let buf = &buf[..len];
    let end = buf.iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// The card address from `ifcfg=static;address,A;netmask,...` on a command
/// line: the same rule (the core's) as the host's `ipaddr` attribute.
#[must_use]
pub fn ifcfg_address(cmdline: &str) -> Option<Ipv4Addr> {
    mic_core::host::sysfs::ipaddr_from_cmdline(cmdline)?.parse().ok()
}

/// Why the command line's address cannot be configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IfcfgError {
    #[error("{0} is not a unicast address")]
    NotUnicast(Ipv4Addr),
    #[error("netmask {0:?} is not a contiguous IPv4 netmask")]
    BadNetmask(String),
}

/// eth0's address and prefix length from the command line: the address as
/// [`ifcfg_address`], the netmask from `netmask,M` (default /24, what mpssd
/// always writes). `Ok(None)` when there is no static address.
pub fn ifcfg(cmdline: &str) -> Result<Option<(Ipv4Addr, u8)>, IfcfgError> {
    let Some(addr) = ifcfg_address(cmdline) else {
        return Ok(None);
    };
    let prefix = match mic_core::host::sysfs::ifcfg_option(cmdline, "netmask") {
        None => 24,
        Some(m) => {
            let bad = || IfcfgError::BadNetmask(m.to_owned());
            let mask = u32::from(m.parse::<Ipv4Addr>().map_err(|_| bad())?);
            let len = mask.leading_ones();
            if mask.checked_shl(len).unwrap_or(0) != 0 || len == 0 {
                return Err(bad());
            }
            len as u8
        }
    };
    let broadcast = u32::from(addr) | (u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0));
    if addr.is_unspecified()
        || addr.is_multicast()
        || addr.is_broadcast()
        || (prefix < 31 && u32::from(addr) == broadcast)
    {
        return Err(IfcfgError::NotUnicast(addr));
    }
    Ok(Some((addr, prefix)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifcfg_address_is_parsed_from_the_mpssd_cmdline() {
        let c = "clocksource=tsc highres=off nohz=off cpufreq_on;corec6_off;pc3_off;pc6_off \
                 ifcfg=static;address,172.31.1.1;netmask,255.255.255.0";
        assert_eq!(ifcfg_address(c), Some("172.31.1.1".parse().unwrap()));
        assert_eq!(ifcfg(c), Ok(Some(("172.31.1.1".parse().unwrap(), 24))));
        assert_eq!(ifcfg_address("ifcfg=dhcp"), None);
        assert_eq!(ifcfg_address("ifcfg=static;address,999.1.1.1"), None);
        assert_eq!(ifcfg_address(""), None);
        assert_eq!(ifcfg(""), Ok(None));
    }

    #[test]
    fn netmasks_and_bad_addresses() {
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            ifcfg("ifcfg=static;address,10.1.2.3;netmask,255.255.0.0"),
            Ok(Some((a("10.1.2.3"), 16)))
        );
        assert_eq!(
            ifcfg("ifcfg=static;address,10.1.2.3"),
            Ok(Some((a("10.1.2.3"), 24)))
        );
        assert_eq!(
            ifcfg("ifcfg=static;address,10.1.2.3;netmask,255.0.255.0"),
            Err(IfcfgError::BadNetmask("255.0.255.0".into()))
        );
        assert!(ifcfg("ifcfg=static;address,10.1.2.3;netmask,0.0.0.0").is_err());
        assert!(ifcfg("ifcfg=static;address,10.1.2.3;netmask,x").is_err());
        assert_eq!(
            ifcfg("ifcfg=static;address,224.0.0.1"),
            Err(IfcfgError::NotUnicast(a("224.0.0.1")))
        );
        assert!(ifcfg("ifcfg=static;address,10.1.2.255;netmask,255.255.255.0").is_err());
        assert!(ifcfg("ifcfg=static;address,0.0.0.0").is_err());
        assert_eq!(
            ifcfg("ifcfg=static;address,10.1.2.3;netmask,255.255.255.255"),
            Ok(Some((a("10.1.2.3"), 32)))
        );
    }
}
