//! Parsing and formatting helpers for the host sysfs attributes, so the
//! kernel module and the emulator accept and show exactly the same strings.

use crate::errno;

/// Strips exactly one trailing newline, as every string attribute's store does.
#[must_use]
pub fn strip_newline(s: &str) -> &str {
    s.strip_suffix('\n').unwrap_or(s)
}

/// A write to the `state` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateRequest {
    /// "boot"
    Boot,
    /// "reset"
    Reset,
    /// "shutdown"
    Shutdown,
}

/// Parses a `state` write ("boot", "reset", "shutdown", one trailing newline
/// tolerated); anything else is `None` (the store returns EINVAL).
#[must_use]
pub fn parse_state_request(s: &str) -> Option<StateRequest> {
    match strip_newline(s) {
        "boot" => Some(StateRequest::Boot),
        "reset" => Some(StateRequest::Reset),
        "shutdown" => Some(StateRequest::Shutdown),
        _ => None,
    }
}

/// Why a hex attribute write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseHexError {
    /// Nothing to parse.
    Empty,
    /// A character that is not a hex digit.
    InvalidDigit,
    /// More than 64 bits.
    Overflow,
}

impl ParseHexError {
    /// The errno (positive) the store returns, as the kernel's `kstrtoul`.
    #[must_use]
    pub const fn errno(self) -> i32 {
        match self {
            ParseHexError::Empty | ParseHexError::InvalidDigit => errno::EINVAL,
            ParseHexError::Overflow => errno::ERANGE,
        }
    }
}

impl core::fmt::Display for ParseHexError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ParseHexError::Empty => "empty number",
            ParseHexError::InvalidDigit => "invalid hex digit",
            ParseHexError::Overflow => "number too large",
        })
    }
}

impl core::error::Error for ParseHexError {}

/// Parses a `log_buf_addr`/`log_buf_len` write: hexadecimal, optional `0x`
/// or `0X` prefix, one trailing newline tolerated.
pub fn parse_hex_u64(s: &str) -> Result<u64, ParseHexError> {
    let s = strip_newline(s);
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
    if digits.is_empty() {
        return Err(ParseHexError::Empty);
    }
    let mut v: u64 = 0;
    for c in digits.chars() {
        let d = c.to_digit(16).ok_or(ParseHexError::InvalidDigit)?;
        v = v
            .checked_mul(16)
            .and_then(|v| v.checked_add(u64::from(d)))
            .ok_or(ParseHexError::Overflow)?;
    }
    Ok(v)
}

/// `__START_KERNEL_map` of the card kernel: card kernel virtual addresses
/// minus this are card physical addresses (aperture offsets).
pub const START_KERNEL_MAP: u64 = 0xFFFF_FFFF_8000_0000;

/// Converts a card kernel virtual address (`log_buf_addr`/`log_buf_len`)
/// into an aperture offset, or `None` if it is below the kernel map.
#[must_use]
pub fn kernel_vaddr_to_aperture(vaddr: u64) -> Option<u64> {
    vaddr.checked_sub(START_KERNEL_MAP)
}

/// The `family` attribute for a PCI device ID: "x100" for 0x2250..=0x225E.
#[must_use]
pub const fn family(device_id: u16) -> &'static str {
    match device_id {
        0x2250..=0x225E => "x100",
        _ => "Unknown",
    }
}

/// The `stepping` attribute for a PCI revision ID.
#[must_use]
pub const fn stepping(revision: u8) -> &'static str {
    match revision {
        0x00 => "A0",
        0x10 => "B0",
        0x11 => "B1",
        0x20 => "C0",
        _ => "??",
    }
}

/// A card's device name, `mic%d` as the driver names it (`"mic3"` → 3):
/// `mic`, then a decimal number without sign or leading zeros — the only
/// spelling a card's sysfs and debugfs directories have.
#[must_use]
pub fn parse_card_name(name: &str) -> Option<u32> {
    name.strip_prefix("mic").and_then(parse_card_number)
}

/// A card named by its device name or by its bare number (`"mic3"` or
/// `"3"`), each in [`parse_card_name`]'s canonical spelling.
#[must_use]
pub fn parse_card_id(s: &str) -> Option<u32> {
    parse_card_name(s).or_else(|| parse_card_number(s))
}

fn parse_card_number(s: &str) -> Option<u32> {
    let canonical = match s.as_bytes() {
        [] => false,
        [b'0'] => true,
        [first, rest @ ..] => (b'1'..=b'9').contains(first) && rest.iter().all(u8::is_ascii_digit),
    };
    if canonical { s.parse().ok() } else { None }
}

/// The `ipaddr` attribute: the address in the (last)
/// `ifcfg=static;address,A;...` option of `cmdline`, if any.
#[must_use]
pub fn ipaddr_from_cmdline(cmdline: &str) -> Option<&str> {
    ifcfg_option(cmdline, "address")
}

/// The value of `key` (`address`, `netmask`, ...) in the (last)
/// `ifcfg=static;KEY,VALUE;...` option of `cmdline`, if any: the one rule
/// for the host's `ipaddr` and the card's eth0 configuration.
#[must_use]
pub fn ifcfg_option<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    // As with any kernel parameter given twice, the last `ifcfg=` wins.
    let cfg = cmdline
        .split_ascii_whitespace()
        .filter_map(|w| w.strip_prefix("ifcfg="))
        .next_back()?;
    let mut parts = cfg.split(';');
    if parts.next()? != "static" {
        return None;
    }
    parts
        .find_map(|p| p.strip_prefix(key).and_then(|v| v.strip_prefix(',')))
        .and_then(|a| a.split(',').next())
        .filter(|a| !a.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_requests() {
        assert_eq!(parse_state_request("boot"), Some(StateRequest::Boot));
        assert_eq!(parse_state_request("reset\n"), Some(StateRequest::Reset));
        assert_eq!(parse_state_request("shutdown"), Some(StateRequest::Shutdown));
        assert_eq!(parse_state_request("boot\n\n"), None);
        assert_eq!(parse_state_request("suspend"), None);
        assert_eq!(parse_state_request(""), None);
        assert_eq!(strip_newline("a\n\n"), "a\n");
    }

    #[test]
    fn hex() {
        assert_eq!(parse_hex_u64("ffffffff81e3c6e0"), Ok(0xFFFF_FFFF_81E3_C6E0));
        assert_eq!(parse_hex_u64("0xABC\n"), Ok(0xABC));
        assert_eq!(parse_hex_u64("0X10"), Ok(16));
        assert_eq!(parse_hex_u64("0"), Ok(0));
        assert_eq!(parse_hex_u64(""), Err(ParseHexError::Empty));
        assert_eq!(parse_hex_u64("0x"), Err(ParseHexError::Empty));
        assert_eq!(parse_hex_u64("xyz"), Err(ParseHexError::InvalidDigit));
        assert_eq!(parse_hex_u64("12 "), Err(ParseHexError::InvalidDigit));
        assert_eq!(parse_hex_u64("-1"), Err(ParseHexError::InvalidDigit));
        assert_eq!(parse_hex_u64("1ffffffffffffffff"), Err(ParseHexError::Overflow));
        assert_eq!(ParseHexError::InvalidDigit.errno(), errno::EINVAL);
        assert_eq!(ParseHexError::Overflow.errno(), errno::ERANGE);
    }

    #[test]
    fn addresses_and_ids() {
        assert_eq!(kernel_vaddr_to_aperture(0xFFFF_FFFF_81E3_C6E0), Some(0x1E3_C6E0));
        assert_eq!(kernel_vaddr_to_aperture(0x1000), None);
        assert_eq!(family(0x2250), "x100");
        assert_eq!(family(0x225E), "x100");
        assert_eq!(family(0x225F), "Unknown");
        assert_eq!(stepping(0x11), "B1");
        assert_eq!(stepping(0x20), "C0");
        assert_eq!(stepping(0x30), "??");
    }

    #[test]
    fn card_names() {
        assert_eq!(parse_card_name("mic0"), Some(0));
        assert_eq!(parse_card_name("mic10"), Some(10));
        assert_eq!(parse_card_name("mic4294967295"), Some(u32::MAX));
        for bad in [
            "mic",
            "mic+1",
            "mic-1",
            "mic01",
            "mic00",
            "mic1a",
            "micro",
            "mic 1",
            "1",
            "+1",
            "MIC1",
            "mic4294967296",
            "mic99999999999",
        ] {
            assert_eq!(parse_card_name(bad), None, "{bad}");
        }
        assert_eq!(parse_card_id("mic7"), Some(7));
        assert_eq!(parse_card_id("7"), Some(7));
        assert_eq!(parse_card_id("0"), Some(0));
        for bad in ["+1", "01", "", "-0", " 1", "mic01", "mic+1"] {
            assert_eq!(parse_card_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn ipaddr() {
        let c = "clocksource=tsc highres=off nohz=off cpufreq_on;corec6_off;pc3_off;pc6_off \
                 ifcfg=static;address,172.31.1.1;netmask,255.255.255.0";
        assert_eq!(ipaddr_from_cmdline(c), Some("172.31.1.1"));
        assert_eq!(ipaddr_from_cmdline("quiet"), None);
        assert_eq!(ipaddr_from_cmdline("ifcfg=dhcp"), None);
        assert_eq!(ipaddr_from_cmdline("ifcfg=static;netmask,1;address,"), None);
        assert_eq!(
            ipaddr_from_cmdline("ifcfg=static;address,1.1.1.1 ifcfg=static;address,2.2.2.2"),
            Some("2.2.2.2")
        );
        assert_eq!(
            ipaddr_from_cmdline("ifcfg=static;address,10.0.0.2,extra"),
            Some("10.0.0.2")
        );
        let c = "ifcfg=static;address,172.31.1.1;netmask,255.255.0.0";
        assert_eq!(ifcfg_option(c, "netmask"), Some("255.255.0.0"));
        assert_eq!(ifcfg_option(c, "gateway"), None);
        assert_eq!(ifcfg_option("ifcfg=static;addressx,1.2.3.4", "address"), None);
    }
}
