//! UTC timestamps without a calendar crate: crash bundle names (and their
//! reading back), mpssd's timelines, the tools' display of protocol times.

use std::time::{SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 of `(year, month, day)` (proleptic Gregorian);
/// the inverse of [`civil`].
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `(year, month, day)` of days since 1970-01-01 (proleptic Gregorian).
fn civil(days: i64) -> (i64, u32, u32) {
    // The era-based algorithm: 400-year eras of 146097 days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

struct Parts {
    y: i64,
    mo: u32,
    d: u32,
    h: u64,
    mi: u64,
    s: u64,
    ms: u32,
}

fn parts(t: SystemTime) -> Parts {
    let dur = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = dur.as_secs();
    let (y, mo, d) = civil((secs / 86_400) as i64);
    let rem = secs % 86_400;
    Parts {
        y,
        mo,
        d,
        h: rem / 3600,
        mi: rem % 3600 / 60,
        s: rem % 60,
        ms: dur.subsec_millis(),
    }
}

/// `20260101T120000.123Z`: sortable, usable in a file name.
#[must_use]
pub fn compact(t: SystemTime) -> String {
    let p = parts(t);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
        p.y, p.mo, p.d, p.h, p.mi, p.s, p.ms
    )
}

/// Reads back what [`compact`] wrote: Unix time in ms. `None` for
/// anything else (another shape, a month 13, a 25th hour, a year before
/// 1970).
#[must_use]
pub fn parse_compact(stamp: &str) -> Option<u64> {
    let bytes = stamp.as_bytes();
    if bytes.len() != 20 || bytes[8] != b'T' || bytes[15] != b'.' || bytes[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = stamp.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hour, min, sec, ms) = (num(9..11)?, num(11..13)?, num(13..15)?, num(16..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 59 {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    // A day past the month's end (Feb 30) comes back as another date.
    if civil(days) != (i64::from(year), month, day) || days < 0 {
        return None;
    }
    let secs = days as u64 * 86_400 + u64::from(hour) * 3600 + u64::from(min) * 60 + u64::from(sec);
    Some(secs * 1000 + u64::from(ms))
}

/// `2026-01-01T12:00:00.123Z` (RFC 3339).
#[must_use]
pub fn rfc3339(t: SystemTime) -> String {
    let p = parts(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        p.y, p.mo, p.d, p.h, p.mi, p.s, p.ms
    )
}

/// [`rfc3339`] of a Unix time in ms (the protocol's `*_ms` fields).
#[must_use]
pub fn rfc3339_ms(ms: u64) -> String {
    rfc3339(UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn known_instants() {
        let at = |s: u64, ms: u64| UNIX_EPOCH + Duration::from_millis(s * 1000 + ms);
        assert_eq!(rfc3339(at(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(at(951_782_400, 5)), "2000-02-29T00:00:00.005Z");
        assert_eq!(compact(at(1_700_000_000, 123)), "20231114T221320.123Z");
        assert_eq!(rfc3339(at(4_102_444_799, 999)), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn compact_reads_back() {
        for ms in [0, 5, 951_782_400_005, 1_700_000_000_123, 4_102_444_799_999] {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            assert_eq!(parse_compact(&compact(t)), Some(ms), "{}", compact(t));
        }
        for bad in [
            "",
            "20231114T221320.123",
            "20231114T221320.123ZZ",
            "2023111xT221320.123Z",
            "20231314T221320.123Z",
            "20230230T221320.123Z",
            "20231114T241320.123Z",
            "20231114T226020.123Z",
            "20231114 221320.123Z",
            "+0231114T221320.123Z",
            "19691231T235959.999Z",
        ] {
            assert_eq!(parse_compact(bad), None, "{bad}");
        }
    }
}
