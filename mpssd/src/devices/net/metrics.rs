//! The net device's counters, shared between its worker thread (which
//! counts) and whoever reports them (status, Prometheus). "rx" and "tx"
//! are the card's: rx = TAP → card (its receive queue, vring 0), tx =
//! card → TAP (vring 1). Counters are monotonic over the life of the
//! [`NetStats`], which the owner keeps across device restarts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use super::hdr::TxDrop;

/// Where the device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum NetState {
    /// Not started, or stopped.
    Down = 0,
    /// Added; waiting for the card's driver (DRIVER_OK).
    Waiting = 1,
    /// The card's driver is up; frames move.
    Up = 2,
    /// The card broke a ring: nothing moves until it resets the device.
    Broken = 3,
    /// The card removed the device.
    Gone = 4,
    /// The worker stopped on an error (the TAP or `dev/micN` failed).
    Failed = 5,
}

impl NetState {
    /// As `DeviceStatus.state` says it (the words every backend uses):
    /// `down`, `waiting`, `up`, `gone` or `error`.
    #[must_use]
    pub fn summary(self) -> &'static str {
        match self {
            NetState::Down => "down",
            NetState::Waiting => "waiting",
            NetState::Up => "up",
            NetState::Gone => "gone",
            NetState::Broken | NetState::Failed => "error",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => NetState::Waiting,
            2 => NetState::Up,
            3 => NetState::Broken,
            4 => NetState::Gone,
            5 => NetState::Failed,
            _ => NetState::Down,
        }
    }
}

/// Declares the counters once: field, name in the status.
macro_rules! counters {
    ($($(#[$doc:meta])* $field:ident),* $(,)?) => {
        /// The counters.
        #[derive(Debug, Default)]
        pub struct NetStats {
            state: AtomicU8,
            $($(#[$doc])* pub $field: AtomicU64,)*
        }

        impl NetStats {
            /// Every counter by name, and `errors`: every frame dropped
            /// and every ring the card broke.
            #[must_use]
            pub fn snapshot(&self) -> BTreeMap<String, u64> {
                let mut m = BTreeMap::new();
                $(m.insert(stringify!($field).to_owned(), self.$field.load(Ordering::Relaxed));)*
                let errors = self.errors();
                m.insert("errors".to_owned(), errors);
                m
            }
        }
    };
}

counters! {
    /// Frames given to the card.
    rx_frames,
    /// Their bytes (headers not counted).
    rx_bytes,
    /// Frames longer than the card's buffer (the card got their start).
    rx_truncated,
    /// Times a frame from the TAP found no buffer posted: reading the TAP
    /// stopped until the card's next kick.
    rx_ring_full,
    /// Frames from the card written to the TAP.
    tx_frames,
    /// Their bytes (headers not counted).
    tx_bytes,
    /// Frames whose header was corrected before the TAP saw it.
    tx_sanitised,
    /// Dropped: shorter than the headers.
    tx_drop_short,
    /// Dropped: longer than 65550 bytes.
    tx_drop_long,
    /// Dropped: a partial checksum not negotiated or outside the frame.
    tx_drop_csum,
    /// Dropped: GSO fields not negotiated or inconsistent.
    tx_drop_gso,
    /// Dropped: the TAP refused the frame.
    tx_drop_tap,
    /// COPY_DESC refused because the card broke a ring.
    ring_errors,
    /// The card's doorbells seen.
    doorbells,
    /// Times the worker slept in poll().
    polls,
    /// Times the card's driver came up (DRIVER_OK).
    activations,
}

impl NetStats {
    /// The device's state.
    #[must_use]
    pub fn state(&self) -> NetState {
        NetState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub(super) fn set_state(&self, s: NetState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    /// Dropped frames of every kind and broken rings.
    #[must_use]
    pub fn errors(&self) -> u64 {
        [
            &self.tx_drop_short,
            &self.tx_drop_long,
            &self.tx_drop_csum,
            &self.tx_drop_gso,
            &self.tx_drop_tap,
            &self.ring_errors,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }

    /// Counts one frame of the card's refused for `why`.
    pub(super) fn dropped(&self, why: TxDrop) {
        let c = match why {
            TxDrop::Short => &self.tx_drop_short,
            TxDrop::Long => &self.tx_drop_long,
            TxDrop::CsumNotNegotiated | TxDrop::CsumOffsets => &self.tx_drop_csum,
            TxDrop::GsoNotNegotiated | TxDrop::GsoType | TxDrop::GsoInconsistent | TxDrop::GsoProtocol => {
                &self.tx_drop_gso
            }
        };
        bump(c, 1);
    }
}

/// Adds `n` to counter `c`.
pub(super) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_every_counter_and_sums_errors() {
        let s = NetStats::default();
        s.dropped(TxDrop::Short);
        s.dropped(TxDrop::GsoType);
        s.dropped(TxDrop::CsumOffsets);
        bump(&s.ring_errors, 2);
        bump(&s.rx_frames, 7);
        let m = s.snapshot();
        assert_eq!(m["tx_drop_short"], 1);
        assert_eq!(m["tx_drop_gso"], 1);
        assert_eq!(m["tx_drop_csum"], 1);
        assert_eq!(m["rx_frames"], 7);
        assert_eq!(m["errors"], 5);
        assert_eq!(m.len(), 17);
        assert_eq!(s.state(), NetState::Down);
        s.set_state(NetState::Broken);
        assert_eq!(s.state().summary(), "error");
    }
}
