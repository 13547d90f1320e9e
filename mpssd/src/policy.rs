//! The crash policy, without I/O or clocks: what to do after a crash,
//! given the crashes before it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::CardConfig;

/// What to do with a card that just crashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Boot it again after this delay (`attempt`: crashes in the window).
    Reboot { delay: Duration, attempt: u32 },
    /// The policy says crashed cards stay down.
    StayDown,
    /// More than the limit within the window: leave it down.
    CrashLoop { crashes: u32 },
}

/// The recent crashes of one card.
#[derive(Debug, Clone, Default)]
pub struct CrashHistory {
    times: VecDeque<Instant>,
}

impl CrashHistory {
    /// Records a crash at `now` and decides.
    pub fn record(&mut self, now: Instant, cfg: &CardConfig) -> Decision {
        self.times.push_back(now);
        self.expire(now, cfg.crash_loop_window);
        // INVARIANT: bounded: entries older than the window are dropped and
        // there is never more than limit + 1 of them.
        while self.times.len() > cfg.crash_loop_limit as usize + 1 {
            self.times.pop_front();
        }
        let crashes = self.recent(now, cfg.crash_loop_window);
        if crashes > cfg.crash_loop_limit {
            return Decision::CrashLoop { crashes };
        }
        if !cfg.restart_on_crash {
            return Decision::StayDown;
        }
        Decision::Reboot {
            delay: backoff(cfg, crashes),
            attempt: crashes,
        }
    }

    /// Crashes within `window` of `now`.
    #[must_use]
    pub fn recent(&self, now: Instant, window: Duration) -> u32 {
        self.times
            .iter()
            .filter(|&&t| now.saturating_duration_since(t) <= window)
            .count() as u32
    }

    /// Forgets every crash (an operator booted the card by hand).
    pub fn clear(&mut self) {
        self.times.clear();
    }

    fn expire(&mut self, now: Instant, window: Duration) {
        while self
            .times
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) > window)
        {
            self.times.pop_front();
        }
    }
}

/// `crash_backoff · 2^(attempt-1)`, at most `crash_backoff_max`.
#[must_use]
pub fn backoff(cfg: &CardConfig, attempt: u32) -> Duration {
    let shift = attempt.saturating_sub(1).min(30);
    cfg.crash_backoff
        .saturating_mul(1u32 << shift)
        .min(cfg.crash_backoff_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(limit: u32, restart: bool) -> CardConfig {
        CardConfig {
            restart_on_crash: restart,
            crash_backoff: Duration::from_secs(1),
            crash_backoff_max: Duration::from_secs(5),
            crash_loop_limit: limit,
            crash_loop_window: Duration::from_secs(60),
            ..CardConfig::default()
        }
    }

    #[test]
    fn backoff_doubles_then_caps() {
        let c = cfg(10, true);
        let got: Vec<u64> = (1..=5).map(|a| backoff(&c, a).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 5, 5]);
        assert_eq!(backoff(&c, 0), Duration::from_secs(1));
        assert_eq!(backoff(&c, u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn crash_loop_after_limit_within_window() {
        let c = cfg(2, true);
        let t0 = Instant::now();
        let mut h = CrashHistory::default();
        assert_eq!(
            h.record(t0, &c),
            Decision::Reboot {
                delay: Duration::from_secs(1),
                attempt: 1
            }
        );
        assert_eq!(
            h.record(t0 + Duration::from_secs(1), &c),
            Decision::Reboot {
                delay: Duration::from_secs(2),
                attempt: 2
            }
        );
        assert_eq!(
            h.record(t0 + Duration::from_secs(2), &c),
            Decision::CrashLoop { crashes: 3 }
        );
    }

    #[test]
    fn old_crashes_expire() {
        let c = cfg(1, true);
        let t0 = Instant::now();
        let mut h = CrashHistory::default();
        h.record(t0, &c);
        let d = h.record(t0 + Duration::from_secs(61), &c);
        assert_eq!(
            d,
            Decision::Reboot {
                delay: Duration::from_secs(1),
                attempt: 1
            }
        );
        assert_eq!(h.recent(t0 + Duration::from_secs(61), Duration::from_secs(60)), 1);
        h.clear();
        assert_eq!(h.recent(t0, Duration::from_secs(60)), 0);
    }

    #[test]
    fn stay_down_policy_still_detects_loops() {
        let c = cfg(0, false);
        let mut h = CrashHistory::default();
        assert_eq!(h.record(Instant::now(), &c), Decision::CrashLoop { crashes: 1 });
        let c = cfg(3, false);
        let mut h = CrashHistory::default();
        assert_eq!(h.record(Instant::now(), &c), Decision::StayDown);
    }
}
