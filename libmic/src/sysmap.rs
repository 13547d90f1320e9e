//! The card kernel's `System.map`: where `__log_buf` and `log_buf_len` are,
//! so the host driver can find the card's log in card memory.

use std::collections::HashMap;
use std::path::Path;

use crate::card::Card;
use crate::error::{Error, HINT_OTHER, Result};

/// The symbol whose address goes to `log_buf_addr`.
pub const LOG_BUF_SYMBOL: &str = "__log_buf";
/// The symbol whose address goes to `log_buf_len`.
pub const LOG_BUF_LEN_SYMBOL: &str = "log_buf_len";

/// Symbols of a `System.map` (`<hex address> <type> <name> [module]` per line).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemMap {
    symbols: HashMap<String, u64>,
    text: String,
}

impl SystemMap {
    /// Parses a System.map. Lines that do not have the `address type name`
    /// shape are skipped; for duplicated names the first line wins.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let mut symbols = HashMap::new();
        for line in text.lines() {
            let mut words = line.split_ascii_whitespace();
            let (Some(addr), Some(ty), Some(name)) = (words.next(), words.next(), words.next()) else {
                continue;
            };
            if ty.len() != 1 || addr.len() > 16 || !addr.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            symbols.entry(name.to_owned()).or_insert(addr);
        }
        Self {
            symbols,
            text: text.to_owned(),
        }
    }

    /// The address of `name`, from a well-formed line.
    #[must_use]
    pub fn lookup(&self, name: &str) -> Option<u64> {
        self.symbols.get(name).copied()
    }

    /// Number of symbols parsed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// The original mpssd's rule: find the first occurrence of `name` in
    /// the text and take the 16 characters starting 19 before it (the
    /// address of an `ffffffff81e4c3a0 b __log_buf` line).
    ///
    /// Two safety checks the original lacked: the occurrence must be a whole
    /// word (so `log_buf_len` does not match inside `log_buf_len_lvl`) and
    /// the 16 characters must be hex; otherwise the next occurrence is tried.
    #[must_use]
    pub fn lookup_mpssd(&self, name: &str) -> Option<u64> {
        mpssd_rule(&self.text, name)
    }

    /// [`lookup`](Self::lookup), falling back to the mpssd rule.
    #[must_use]
    pub fn resolve(&self, name: &str) -> Option<u64> {
        self.lookup(name).or_else(|| self.lookup_mpssd(name))
    }

    /// `(address of __log_buf, address of log_buf_len)`, or the list of
    /// missing symbols.
    pub fn log_buf_symbols(&self) -> std::result::Result<(u64, u64), Vec<String>> {
        match (self.resolve(LOG_BUF_SYMBOL), self.resolve(LOG_BUF_LEN_SYMBOL)) {
            (Some(a), Some(l)) => Ok((a, l)),
            (a, l) => Err([(a, LOG_BUF_SYMBOL), (l, LOG_BUF_LEN_SYMBOL)]
                .into_iter()
                .filter(|(v, _)| v.is_none())
                .map(|(_, n)| n.to_owned())
                .collect()),
        }
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'$'
}

fn mpssd_rule(text: &str, name: &str) -> Option<u64> {
    if name.is_empty() {
        return None;
    }
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(off) = text.get(from..).and_then(|t| t.find(name)) {
        let at = from + off;
        from = at + name.len();
        let before_ok = at == 0 || !is_word_byte(bytes[at - 1]);
        let after_ok = bytes.get(from).is_none_or(|&b| !is_word_byte(b));
        if !(before_ok && after_ok) {
            continue;
        }
        let Some(hex) = at.checked_sub(19).and_then(|s| bytes.get(s..s + 16)) else {
            continue;
        };
        if hex.iter().all(u8::is_ascii_hexdigit) {
            return u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok();
        }
    }
    None
}

impl Card {
    /// mpssd's `set_log_buf_info`: reads the System.map at `path` (usually
    /// [`crate::MicRoot::system_map`]) and writes the address of `__log_buf`
    /// to `log_buf_addr` and that of `log_buf_len` to `log_buf_len`.
    /// Returns the two addresses.
    pub fn set_log_buf_from_sysmap(&self, path: &Path) -> Result<(u64, u64)> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e, HINT_OTHER))?;
        let map = SystemMap::parse(&String::from_utf8_lossy(&bytes));
        let (addr, len) = map.log_buf_symbols().map_err(|missing| Error::SystemMap {
            path: path.to_owned(),
            missing,
        })?;
        self.set_log_buf_addr(addr)?;
        self.set_log_buf_len(len)?;
        Ok((addr, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAP: &str = "\
ffffffff81000000 T _text
ffffffff81e4c3a0 b __log_buf
ffffffff81c4a2d0 d log_buf_len
ffffffff81c4a2d8 d log_buf_len_lvl
0000000000000000 A VDSO32_PRELINK
ffffffffa0000000 t foo\t[mod]
garbage line
";

    #[test]
    fn parses_and_looks_up() {
        let m = SystemMap::parse(MAP);
        assert_eq!(m.lookup("__log_buf"), Some(0xffffffff81e4c3a0));
        assert_eq!(m.lookup("log_buf_len"), Some(0xffffffff81c4a2d0));
        assert_eq!(m.lookup("VDSO32_PRELINK"), Some(0));
        assert_eq!(m.lookup("foo"), Some(0xffffffffa0000000));
        assert_eq!(m.lookup("garbage"), None);
        assert_eq!(m.lookup("nope"), None);
        assert_eq!(m.len(), 6);
        assert_eq!(m.log_buf_symbols(), Ok((0xffffffff81e4c3a0, 0xffffffff81c4a2d0)));
    }

    #[test]
    fn mpssd_rule_agrees_on_a_real_layout() {
        let m = SystemMap::parse(MAP);
        for sym in [LOG_BUF_SYMBOL, LOG_BUF_LEN_SYMBOL, "_text"] {
            assert_eq!(m.lookup_mpssd(sym), m.lookup(sym), "{sym}");
        }
    }

    #[test]
    fn mpssd_rule_needs_whole_words() {
        let text = "ffffffff81c4a2d8 d log_buf_len_lvl\nffffffff81c4a2d0 d log_buf_len\n";
        assert_eq!(mpssd_rule(text, "log_buf_len"), Some(0xffffffff81c4a2d0));
        assert_eq!(mpssd_rule("x __log_buf", "__log_buf"), None);
        assert_eq!(mpssd_rule("zzzzzzzzzzzzzzzz b __log_buf", "__log_buf"), None);
    }

    #[test]
    fn fallback_used_when_lines_are_odd() {
        // CR-only line endings: the line parser sees one line and only its
        // first symbol; the mpssd rule still finds the second.
        let m = SystemMap::parse("ffffffff81e4c3a0 b __log_buf\rffffffff81c4a2d0 d log_buf_len\r");
        assert_eq!(m.lookup("log_buf_len"), None);
        assert_eq!(m.log_buf_symbols(), Ok((0xffffffff81e4c3a0, 0xffffffff81c4a2d0)));
        // The rule is positional: a two-letter type column puts the address
        // 20 characters back, which it does not accept.
        let m = SystemMap::parse("ffffffff81c4a2d0 dd log_buf_len\n");
        assert_eq!(m.resolve("log_buf_len"), None);
    }

    #[test]
    fn a_duplicated_symbol_resolves_to_its_first_line() {
        // As the original mpssd's text search finds it first.
        let text = "ffffffff81e4c3a0 b __log_buf\nffffffff8200aaa0 b __log_buf\n\
                    ffffffff81c4a2d0 d log_buf_len\nffffffff81c4b000 d log_buf_len\n";
        let m = SystemMap::parse(text);
        assert_eq!(m.lookup(LOG_BUF_SYMBOL), Some(0xffffffff81e4c3a0));
        assert_eq!(m.lookup_mpssd(LOG_BUF_SYMBOL), Some(0xffffffff81e4c3a0));
        assert_eq!(m.log_buf_symbols(), Ok((0xffffffff81e4c3a0, 0xffffffff81c4a2d0)));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn missing_symbols_listed() {
        let m = SystemMap::parse("ffffffff81e4c3a0 b __log_buf\n");
        assert_eq!(m.log_buf_symbols(), Err(vec!["log_buf_len".to_owned()]));
        let m = SystemMap::parse("");
        assert!(m.is_empty());
        assert_eq!(
            m.log_buf_symbols(),
            Err(vec!["__log_buf".to_owned(), "log_buf_len".to_owned()])
        );
    }

    proptest! {
        #[test]
        fn never_panics(s in ".*", name in "[a-z_]{0,12}") {
            let m = SystemMap::parse(&s);
            let _ = m.resolve(&name);
        }

        #[test]
        fn round_trip(addr: u64, name in "[a-z_][a-z0-9_]{0,20}", ty in "[a-zA-Z]") {
            let text = format!("ffffffff81000000 T _text\n{addr:016x} {ty} {name}\n");
            let m = SystemMap::parse(&text);
            if name != "_text" {
                prop_assert_eq!(m.lookup(&name), Some(addr));
                prop_assert_eq!(m.lookup_mpssd(&name), Some(addr));
            }
        }
    }
}
