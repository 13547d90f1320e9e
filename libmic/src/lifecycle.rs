//! Lifecycle requests as operators mean them, shared by micctl, mictop and
//! mpssd: boot with the original micctrl defaults, idempotent shutdown and
//! reset, the waits between them (the card OS's final `shutdown_status`,
//! the end of a reset, "the card OS is up" judged from the card's own
//! kernel log), and the orderly way to offline that a reboot starts with.

use std::path::Path;
use std::time::{Duration, Instant};

use mic_core::abi::{BootMode, MicState, MicStatus};

use crate::card::Card;
use crate::error::{Error, Result};
use crate::klog::{CardLogFollower, panic_line, records};
use crate::root::DEFAULT_FIRMWARE;

/// The kernel log line after which the card OS counts as up: the card
/// kernel handing over to init, the last thing a boot prints.
pub use mic_core::card::OS_UP_MARKER;

/// How often the card log is re-read while waiting for the OS (the log has
/// no change notification, on real hardware either).
pub const LOG_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How often `shutdown_status` is re-read while waiting for the card OS to
/// report its shutdown (mpssd's poll; a state change wakes the wait at once).
pub const STATUS_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How long a reset of a `reset_failed` card may take. Such a card stays
/// `reset_failed` while the reset runs, and a second failure changes
/// nothing that could be noticed; the driver gives up within 45 s.
pub const RESET_FAILED_BUDGET: Duration = Duration::from_secs(60);

/// The command line mpssd writes for card `id`: its tuning flags and a
/// static address 172.31.`id`.1/24 (the host side is 172.31.`id`.254).
#[must_use]
pub fn default_cmdline(id: u32) -> String {
    cmdline_with_address(default_card_address(id))
}

/// The card's address mpssd configures by default: 172.31.`id`.1 (ids
/// past 255 wrap, as the original's `%d` in a dotted quad could not).
#[must_use]
pub fn default_card_address(id: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(172, 31, (id & 0xff) as u8, 1)
}

/// The prefix length of the card's link: mpssd's cmdline gives the card
/// netmask 255.255.255.0, and the host's end of the TAP gets the same /24.
pub const LINK_PREFIX_LEN: u8 = 24;

/// mpssd's command line with the card at `addr`/24: the original's tuning
/// flags and `ifcfg=static;address,A;netmask,255.255.255.0`.
#[must_use]
pub fn cmdline_with_address(addr: std::net::Ipv4Addr) -> String {
    let mask = std::net::Ipv4Addr::from(u32::MAX << (32 - LINK_PREFIX_LEN));
    format!(
        "clocksource=tsc highres=off nohz=off cpufreq_on;corec6_off;pc3_off;pc6_off \
         ifcfg=static;address,{addr};netmask,{mask}"
    )
}

/// The host's end of the link to a card at `card`/24: the same /24 with
/// host part 254 (172.31.N.1 → 172.31.N.254, as the original), or 1 when
/// the card itself is .254.
#[must_use]
pub fn host_address_for(card: std::net::Ipv4Addr) -> std::net::Ipv4Addr {
    let [a, b, c, d] = card.octets();
    std::net::Ipv4Addr::new(a, b, c, if d == 254 { 1 } else { 254 })
}

/// The host's end of card `id`'s link by default: 172.31.`id`.254.
#[must_use]
pub fn default_host_address(id: u32) -> std::net::Ipv4Addr {
    host_address_for(default_card_address(id))
}

/// What to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootRequest {
    pub bootmode: BootMode,
    /// Name under lib/firmware.
    pub firmware: String,
    /// Name under lib/firmware; `None` leaves the attribute as it is.
    pub ramdisk: Option<String>,
    /// `None`: keep the card's cmdline, or write [`default_cmdline`] if it
    /// has none.
    pub cmdline: Option<String>,
}

impl BootRequest {
    /// The original `micctrl -b`: linux, `mic/uos.img`, `mic/micN.image`.
    #[must_use]
    pub fn defaults_for(card: &Card) -> Self {
        Self {
            bootmode: BootMode::Linux,
            firmware: DEFAULT_FIRMWARE.to_owned(),
            ramdisk: Some(card.default_ramdisk()),
            cmdline: None,
        }
    }
}

/// What a lifecycle request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The request was made.
    Requested,
    /// Nothing to do: the card already was in this state.
    AlreadyInState(MicState),
}

/// How [`Card::reset_and_wait`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetEnd {
    /// The card was offline already; nothing was done.
    AlreadyOffline,
    /// The reset completed: the card is offline.
    Offline,
    /// The reset failed: the card's bootstrap did not come back
    /// (`reset_failed`).
    Failed,
}

/// A step of [`Card::stop`], for progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopStep {
    /// Asking the card OS to shut down.
    Shutdown,
    /// Waiting for the card OS to report its final `shutdown_status`.
    WaitShutdown,
    /// Resetting the card and waiting for `offline`.
    Reset,
}

/// What [`Card::stop`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// The card's state and final `shutdown_status` when its OS had shut
    /// down, if it was online and asked to.
    pub shutdown: Option<(MicState, MicStatus)>,
    /// Whether the card was reset.
    pub reset: bool,
}

impl Card {
    /// Boots the card: System.map → `log_buf_addr`/`log_buf_len` (if `sysmap` is given
    /// and readable), cmdline, bootmode, firmware, ramdisk, then `boot`.
    /// An online card is left alone ([`Outcome::AlreadyInState`]).
    pub fn boot_with(&self, req: &BootRequest, sysmap: Option<&Path>) -> Result<Outcome> {
        if self.state()? == MicState::Online {
            return Ok(Outcome::AlreadyInState(MicState::Online));
        }
        if let Some(map) = sysmap {
            self.set_log_buf_from_sysmap(map)?;
        }
        match &req.cmdline {
            Some(c) => self.set_cmdline(c)?,
            None if self.cmdline()?.is_none() => self.set_cmdline(&default_cmdline(self.id()))?,
            None => {}
        }
        self.set_bootmode(req.bootmode)?;
        self.set_firmware(&req.firmware)?;
        if let Some(r) = &req.ramdisk {
            self.set_ramdisk(r)?;
        }
        self.boot()?;
        Ok(Outcome::Requested)
    }

    /// Asks the card OS to shut down. An offline card is left alone.
    ///
    /// The driver drops the request silently while the card's OS has not
    /// published its shutdown doorbell (early in a boot); the driver takes a
    /// request synchronously, so a card still online afterwards did not take
    /// it: [`Error::ShutdownIgnored`].
    pub fn request_shutdown(&self) -> Result<Outcome> {
        match self.state()? {
            MicState::Offline => Ok(Outcome::AlreadyInState(MicState::Offline)),
            MicState::ShuttingDown => Ok(Outcome::AlreadyInState(MicState::ShuttingDown)),
            _ => {
                self.shutdown()?;
                if self.state()? == MicState::Online {
                    return Err(Error::ShutdownIgnored {
                        card: self.name().to_owned(),
                    });
                }
                Ok(Outcome::Requested)
            }
        }
    }

    /// Resets the card. An offline card is left alone (the driver would
    /// ignore the request anyway).
    pub fn request_reset(&self) -> Result<Outcome> {
        if self.state()? == MicState::Offline {
            return Ok(Outcome::AlreadyInState(MicState::Offline));
        }
        self.reset()?;
        Ok(Outcome::Requested)
    }

    /// Waits until the card is online and its kernel log shows the OS up
    /// ([`OS_UP_MARKER`]). Ends early: with [`Error::CardCrashed`] as soon
    /// as the log shows the card kernel panicking (a card that panics before
    /// its driver is up cannot report it any other way), and with
    /// [`Error::Timeout`] (its `last_state` not `online`) if the card leaves
    /// `online`.
    pub fn wait_os_up(&self, timeout: Option<Duration>) -> Result<()> {
        let start = Instant::now();
        self.wait_for(|s| s == MicState::Online, timeout)?;
        let mut log = CardLogFollower::open(self)?;
        let mut nap = Duration::ZERO;
        loop {
            // The poll on `state` is the clock: a state change wakes the
            // read at once, else the log is looked at every interval.
            let entries = log.next(nap)?;
            if records(&entries).any(|r| r.text.contains(OS_UP_MARKER)) {
                return Ok(());
            }
            if let Some(line) = panic_line(&entries) {
                return Err(Error::CardCrashed {
                    card: self.name().to_owned(),
                    line,
                });
            }
            let left = timeout.map(|t| t.saturating_sub(start.elapsed()));
            if log.state() != MicState::Online || left.is_some_and(|l| l.is_zero()) {
                return Err(Error::Timeout {
                    card: self.name().to_owned(),
                    waited: start.elapsed(),
                    last_state: log.state(),
                });
            }
            nap = left.map_or(LOG_POLL_INTERVAL, |l| l.min(LOG_POLL_INTERVAL));
        }
    }

    /// Waits until the card OS has finished shutting down and returns the
    /// card's state and `shutdown_status` then: `shutdown_status` is no
    /// longer `nop` while the card is `shutting_down` (what mpssd waits for
    /// before resetting), or the card is `offline`/`reset_failed` (nothing
    /// left to wait for). Wakes on every `state` change and re-reads
    /// `shutdown_status` every [`STATUS_POLL_INTERVAL`]; [`Error::Timeout`]
    /// after `timeout`.
    pub fn wait_shutdown_status(&self, timeout: Option<Duration>) -> Result<(MicState, MicStatus)> {
        let start = Instant::now();
        let mut w = self.watch_state()?;
        loop {
            let state = w.current();
            let status = self.shutdown_status()?;
            let done = match state {
                MicState::Offline | MicState::ResetFailed => true,
                MicState::ShuttingDown => status != MicStatus::Nop,
                MicState::Online => false,
            };
            if done {
                return Ok((state, status));
            }
            let left = timeout.map(|t| t.saturating_sub(start.elapsed()));
            if left.is_some_and(|l| l.is_zero()) {
                return Err(Error::Timeout {
                    card: self.name().to_owned(),
                    waited: start.elapsed(),
                    last_state: state,
                });
            }
            let nap = left.map_or(STATUS_POLL_INTERVAL, |l| l.min(STATUS_POLL_INTERVAL));
            w.wait_change(Some(nap))?;
        }
    }

    /// Resets the card ([`Card::request_reset`]) and waits for the reset to
    /// end: `offline` is [`ResetEnd::Offline`], `reset_failed`
    /// [`ResetEnd::Failed`]; [`Error::Timeout`] after `timeout`.
    ///
    /// A card that is `reset_failed` already stays so while the reset runs:
    /// for it, `reset_failed` counts as the end only after a state change,
    /// or once [`RESET_FAILED_BUDGET`] has passed with no change.
    pub fn reset_and_wait(&self, timeout: Option<Duration>) -> Result<ResetEnd> {
        let start = Instant::now();
        let mut w = self.watch_state()?;
        let initial = w.current();
        if let Outcome::AlreadyInState(_) = self.request_reset()? {
            return Ok(ResetEnd::AlreadyOffline);
        }
        let budget = (initial == MicState::ResetFailed).then_some(RESET_FAILED_BUDGET);
        let mut changed = false;
        loop {
            match w.current() {
                MicState::Offline => return Ok(ResetEnd::Offline),
                MicState::ResetFailed if changed || initial != MicState::ResetFailed => {
                    return Ok(ResetEnd::Failed);
                }
                _ => {}
            }
            let elapsed = start.elapsed();
            let left = timeout.map(|t| t.saturating_sub(elapsed));
            let budget_left = budget.map(|b| b.saturating_sub(elapsed));
            if budget_left.is_some_and(|b| b.is_zero() && left.is_none_or(|l| !l.is_zero())) {
                // The driver's reset budget passed and the card is still
                // reset_failed: it failed again.
                return Ok(ResetEnd::Failed);
            }
            let wait = match (left, budget_left) {
                (Some(l), Some(b)) => Some(l.min(b)),
                (l, b) => l.or(b),
            };
            if wait.is_some_and(|l| l.is_zero()) {
                return Err(Error::Timeout {
                    card: self.name().to_owned(),
                    waited: start.elapsed(),
                    last_state: w.current(),
                });
            }
            if w.wait_change(wait)?.is_some() {
                changed = true;
            }
        }
    }

    /// Takes the card to `offline` the orderly way, as a reboot starts: an
    /// online card is asked to shut down ([`Error::ShutdownIgnored`] if it
    /// stays online) and its OS is waited for
    /// ([`Card::wait_shutdown_status`]); then any card that is not offline
    /// (shut down, `shutting_down`, `reset_failed`) is reset and waited for
    /// ([`Error::ResetFailed`] if the reset fails). One `timeout` covers it
    /// all. `step` is told each step as it starts.
    pub fn stop(&self, timeout: Option<Duration>, mut step: impl FnMut(StopStep)) -> Result<Stopped> {
        let start = Instant::now();
        let left = || timeout.map(|t| t.saturating_sub(start.elapsed()));
        let mut shutdown = None;
        if self.state()? == MicState::Online {
            step(StopStep::Shutdown);
            self.request_shutdown()?;
            step(StopStep::WaitShutdown);
            shutdown = Some(self.wait_shutdown_status(left())?);
        }
        let mut reset = false;
        if self.state()? != MicState::Offline {
            step(StopStep::Reset);
            match self.reset_and_wait(left())? {
                ResetEnd::AlreadyOffline => {}
                ResetEnd::Offline => reset = true,
                ResetEnd::Failed => {
                    return Err(Error::ResetFailed {
                        card: self.name().to_owned(),
                    });
                }
            }
        }
        Ok(Stopped { shutdown, reset })
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn the_link_is_one_slash_24_with_the_host_at_254() {
        assert_eq!(default_card_address(3), Ipv4Addr::new(172, 31, 3, 1));
        assert_eq!(default_host_address(3), Ipv4Addr::new(172, 31, 3, 254));
        assert_eq!(default_host_address(256 + 7), Ipv4Addr::new(172, 31, 7, 254));
        assert_eq!(
            host_address_for(Ipv4Addr::new(10, 1, 2, 3)),
            Ipv4Addr::new(10, 1, 2, 254)
        );
        // A card at .254 leaves the host .1, never its own address.
        assert_eq!(
            host_address_for(Ipv4Addr::new(10, 1, 2, 254)),
            Ipv4Addr::new(10, 1, 2, 1)
        );
        assert!(default_cmdline(3).ends_with("ifcfg=static;address,172.31.3.1;netmask,255.255.255.0"));
    }
}
