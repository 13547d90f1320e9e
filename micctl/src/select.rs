//! Card selection: `mic0`, `0`, lists (`mic0,2`), ranges (`4-7`, `mic4-mic7`)
//! and `all`, across one or several arguments. No argument means all cards.

use std::collections::BTreeSet;

use libmic::root::parse_card_id;
use libmic::{Card, MicRoot};

use crate::UsageError;

/// Largest range accepted (`0-4294967295` would otherwise allocate forever).
const MAX_RANGE: u32 = 4096;

/// One parsed element of a selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    All,
    One(u32),
    Range(u32, u32),
}

/// A parsed selector: the union of its items.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selection {
    items: Vec<Item>,
}

impl Selection {
    /// Parses the CARDS arguments. Each argument may be a comma-separated
    /// list; an empty argument list selects all cards.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Self, UsageError> {
        let mut items = Vec::new();
        for arg in args {
            for word in arg.as_ref().split(',') {
                items.push(parse_item(word.trim())?);
            }
        }
        Ok(Self { items })
    }

    /// Whether the selection is "every card" (no argument, or `all`).
    #[must_use]
    pub fn is_all(&self) -> bool {
        self.items.is_empty() || self.items.contains(&Item::All)
    }

    /// Whether card `id` is selected (without looking at any root: for
    /// cards that need not be there, such as those of crash bundles).
    #[must_use]
    pub fn contains(&self, id: u32) -> bool {
        self.is_all()
            || self.items.iter().any(|i| match *i {
                Item::All => true,
                Item::One(x) => x == id,
                Item::Range(a, b) => (a..=b).contains(&id),
            })
    }

    /// The first card named that is not among `known` (a range counts
    /// every card in it), if any.
    #[must_use]
    pub fn ids_outside(&self, known: &[u32]) -> Option<u32> {
        if self.is_all() {
            return None;
        }
        self.items.iter().find_map(|i| match *i {
            Item::One(x) => (!known.contains(&x)).then_some(x),
            Item::Range(a, b) => (a..=b).find(|x| !known.contains(x)),
            Item::All => None,
        })
    }

    /// Resolves against the cards under `root`: sorted, without duplicates.
    /// A named card that does not exist is [`libmic::Error::NoSuchCard`]
    /// (with the list of known cards); so is an empty result.
    pub fn resolve(&self, root: &MicRoot) -> Result<Vec<Card>, libmic::Error> {
        let cards = root.cards()?;
        let known = || cards.iter().map(|c| c.name().to_owned()).collect::<Vec<_>>();
        if self.is_all() {
            if cards.is_empty() {
                return Err(libmic::Error::NoSuchCard {
                    name: "all".to_owned(),
                    known: Vec::new(),
                });
            }
            return Ok(cards);
        }
        let mut ids = BTreeSet::new();
        for item in &self.items {
            match *item {
                Item::One(id) => {
                    ids.insert(id);
                }
                Item::Range(a, b) => ids.extend(a..=b),
                Item::All => {}
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match cards.iter().find(|c| c.id() == id) {
                Some(c) => out.push(c.clone()),
                None => {
                    return Err(libmic::Error::NoSuchCard {
                        name: format!("mic{id}"),
                        known: known(),
                    });
                }
            }
        }
        Ok(out)
    }
}

fn parse_item(word: &str) -> Result<Item, UsageError> {
    let bad = |why: &str| {
        UsageError(format!(
            "bad card selector {}: {why} (use mic0, 0, mic0,2, 4-7 or all)",
            libmic::attrs::quote_value(word)
        ))
    };
    if word.is_empty() {
        return Err(bad("empty element"));
    }
    if word == "all" {
        return Ok(Item::All);
    }
    if let Some((a, b)) = word.split_once('-') {
        let (Some(a), Some(b)) = (parse_card_id(a), parse_card_id(b)) else {
            return Err(bad("a range is two card numbers joined by '-'"));
        };
        if a > b {
            return Err(bad("the range is reversed"));
        }
        if b - a >= MAX_RANGE {
            return Err(bad("the range is too large"));
        }
        return Ok(Item::Range(a, b));
    }
    parse_card_id(word)
        .map(Item::One)
        .ok_or_else(|| bad("not a card name or number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(s: &[&str]) -> Vec<Item> {
        Selection::parse(s).unwrap().items
    }

    #[test]
    fn parses() {
        assert_eq!(items(&[]), vec![]);
        assert_eq!(items(&["mic0"]), vec![Item::One(0)]);
        assert_eq!(items(&["3"]), vec![Item::One(3)]);
        assert_eq!(
            items(&["mic0,2,4-7", "mic9-mic10"]),
            vec![Item::One(0), Item::One(2), Item::Range(4, 7), Item::Range(9, 10)]
        );
        assert_eq!(items(&["all"]), vec![Item::All]);
        assert!(Selection::parse(&["all"]).unwrap().is_all());
        assert!(Selection::parse::<&str>(&[]).unwrap().is_all());
    }

    #[test]
    fn rejects() {
        for bad in [
            "", "mic", "7-4", "x", "mic-1", "1-", "-1", "0,,1", "0-100000", "mic1a", "+1", "mic01", "01-3",
        ] {
            let e = Selection::parse(&[bad]).unwrap_err();
            assert!(e.0.contains("bad card selector"), "{bad}: {e}");
        }
        assert!(Selection::parse(&["7-4"]).unwrap_err().0.contains("reversed"));
        let s = Selection::parse(&["mic1,4-6"]).unwrap();
        assert!(s.contains(1) && s.contains(5) && !s.contains(0) && !s.contains(7));
        assert_eq!(s.ids_outside(&[1, 4, 5, 6]), None);
        assert_eq!(s.ids_outside(&[1, 4, 6]), Some(5));
        assert!(Selection::parse::<&str>(&[]).unwrap().contains(99));
        let long = "m".repeat(5000);
        let e = Selection::parse(&[long.as_str()]).unwrap_err().0;
        assert!(e.len() < 200, "{e}");
    }
}
