//! Lifecycle requests as operators mean them, shared by micctl, mictop and
//! mpssd: boot with the original micctrl defaults, idempotent shutdown and
//! reset, and "the card OS is up" judged from the card's own kernel log.

use std::path::Path;
use std::time::{Duration, Instant};

use mic_core::abi::{BootMode, MicState};

use crate::card::Card;
use crate::error::{Error, Result};
use crate::klog::LogFollower;
use crate::root::DEFAULT_FIRMWARE;

/// The kernel log line after which the card OS counts as up: the card
/// kernel handing over to init, the last thing a boot prints.
pub const OS_UP_MARKER: &str = "Run /sbin/init as init process";

/// How often the card log is re-read while waiting for the OS (the log has
/// no change notification, on real hardware either).
pub const LOG_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The command line mpssd writes for card `id`: its tuning flags and a
/// static address 172.31.`id`.1/24 (the host side is 172.31.`id`.254).
#[must_use]
pub fn default_cmdline(id: u32) -> String {
    format!(
        "clocksource=tsc highres=off nohz=off cpufreq_on;corec6_off;pc3_off;pc6_off \
         ifcfg=static;address,172.31.{id}.1;netmask,255.255.255.0"
    )
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
    pub fn request_shutdown(&self) -> Result<Outcome> {
        match self.state()? {
            MicState::Offline => Ok(Outcome::AlreadyInState(MicState::Offline)),
            MicState::ShuttingDown => Ok(Outcome::AlreadyInState(MicState::ShuttingDown)),
            _ => {
                self.shutdown()?;
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
    /// ([`OS_UP_MARKER`]). Fails early if the card leaves `online`.
    pub fn wait_os_up(&self, timeout: Option<Duration>) -> Result<()> {
        let start = Instant::now();
        self.wait_for(|s| s == MicState::Online, timeout)?;
        let mut watcher = self.watch_state()?;
        let mut follower = LogFollower::new();
        loop {
            let update = follower.update(&self.log_buf_raw()?);
            if update.records.iter().any(|r| r.text.contains(OS_UP_MARKER)) {
                return Ok(());
            }
            let left = timeout.map(|t| t.saturating_sub(start.elapsed()));
            if left.is_some_and(|l| l.is_zero()) {
                return Err(Error::Timeout {
                    card: self.name().to_owned(),
                    waited: start.elapsed(),
                    last_state: watcher.current(),
                });
            }
            // Sleep until the next log look, but wake at once on a state
            // change: the poll on `state` is the clock.
            let nap = left.map_or(LOG_POLL_INTERVAL, |l| l.min(LOG_POLL_INTERVAL));
            if let Some(s) = watcher.wait_change(Some(nap))? {
                if s != MicState::Online {
                    return Err(Error::Timeout {
                        card: self.name().to_owned(),
                        waited: start.elapsed(),
                        last_state: s,
                    });
                }
            }
        }
    }
}
