//! The reset sequence as a caller-timed state machine.
//!
//! The original slept inside the driver: 1 s settle after setting RGCR, then
//! up to 45 polls of SPAD2 bit 0, one second apart. Here the caller owns the
//! clock (a kernel delayed work item, the emulator's event loop, a test) and
//! calls [`ResetSeq::poll`] with the milliseconds elapsed since the reset
//! began; the answer says how long to wait before asking again.

use crate::hw::Mmio;
use crate::regs;

/// Settle time after setting RGCR before the first poll.
pub const RESET_SETTLE_MS: u64 = 1000;
/// Time between polls of SPAD2.
pub const RESET_PERIOD_MS: u64 = 1000;
/// Total polling budget (45 polls of 1 s).
pub const RESET_BUDGET_MS: u64 = 45_000;

/// The timing of a reset sequence; [`ResetTiming::ORIGINAL`] by default.
/// Tests and the emulator shrink it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetTiming {
    /// Wait after the reset before the first poll.
    pub settle_ms: u64,
    /// Wait between polls (0 is treated as 1).
    pub period_ms: u64,
    /// Polling budget after the settle time; `budget_ms / period_ms` polls
    /// (at least one) are made.
    pub budget_ms: u64,
}

impl ResetTiming {
    /// The original: 1 s settle, then 45 polls 1 s apart.
    pub const ORIGINAL: Self = Self {
        settle_ms: RESET_SETTLE_MS,
        period_ms: RESET_PERIOD_MS,
        budget_ms: RESET_BUDGET_MS,
    };

    /// Maximum number of polls.
    #[must_use]
    pub const fn max_checks(&self) -> u64 {
        let period = if self.period_ms == 0 { 1 } else { self.period_ms };
        let n = self.budget_ms / period;
        if n == 0 { 1 } else { n }
    }
}

impl Default for ResetTiming {
    fn default() -> Self {
        Self::ORIGINAL
    }
}

/// What the caller should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetPoll {
    /// Not ready yet: call `poll` again after `ms` milliseconds.
    Wait {
        /// Milliseconds to wait.
        ms: u64,
    },
    /// The bootstrap reported ready: call `finish_reset(true)`.
    Ready,
    /// The budget ran out: call `finish_reset(false)`.
    Failed,
}

/// A running reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetSeq {
    /// The timing in use (public so it can still be adjusted before the
    /// first poll).
    pub timing: ResetTiming,
    next_check_ms: u64,
    checks: u64,
    outcome: Option<ResetPoll>,
}

impl Default for ResetSeq {
    fn default() -> Self {
        Self::new()
    }
}

impl ResetSeq {
    /// A sequence with the original timing (1 s settle, 1 s period, 45 s).
    #[must_use]
    pub const fn new() -> Self {
        Self::with_timing(ResetTiming::ORIGINAL)
    }

    /// A sequence with custom timing.
    #[must_use]
    pub const fn with_timing(timing: ResetTiming) -> Self {
        Self {
            timing,
            next_check_ms: 0,
            checks: 0,
            outcome: None,
        }
    }

    /// Advances the sequence; `elapsed_ms` is the time since the reset began.
    /// Once `Ready` or `Failed` is returned, every later call returns it too.
    pub fn poll(&mut self, mmio: &impl Mmio, elapsed_ms: u64) -> ResetPoll {
        if let Some(done) = self.outcome {
            return done;
        }
        let t = self.timing;
        if elapsed_ms < t.settle_ms {
            return ResetPoll::Wait {
                ms: t.settle_ms - elapsed_ms,
            };
        }
        if regs::spad2_ready(mmio.read32(regs::spad(regs::SPAD_DOWNLOAD_INFO))) {
            self.outcome = Some(ResetPoll::Ready);
            return ResetPoll::Ready;
        }
        if elapsed_ms < self.next_check_ms {
            // Early call: ready was checked, but it does not use up a poll.
            return ResetPoll::Wait {
                ms: self.next_check_ms - elapsed_ms,
            };
        }
        self.checks += 1;
        if self.checks >= t.max_checks() {
            self.outcome = Some(ResetPoll::Failed);
            return ResetPoll::Failed;
        }
        let period = t.period_ms.max(1);
        self.next_check_ms = elapsed_ms.saturating_add(period);
        ResetPoll::Wait { ms: period }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeMmio;

    fn timing(settle_ms: u64, period_ms: u64, budget_ms: u64) -> ResetTiming {
        ResetTiming {
            settle_ms,
            period_ms,
            budget_ms,
        }
    }

    fn drive(seq: &mut ResetSeq, mmio: &FakeMmio, ready_at: Option<u64>) -> (ResetPoll, u64, u32) {
        let mut t = 0;
        let mut polls = 0;
        loop {
            if ready_at.is_some_and(|r| t >= r) {
                mmio.set(regs::spad(2), 1);
            }
            polls += 1;
            match seq.poll(mmio, t) {
                ResetPoll::Wait { ms } => t += ms,
                done => return (done, t, polls),
            }
        }
    }

    #[test]
    fn original_timing_fails_after_45_polls() {
        let mmio = FakeMmio::new();
        let mut seq = ResetSeq::new();
        let (r, t, polls) = drive(&mut seq, &mmio, None);
        assert_eq!(r, ResetPoll::Failed);
        // Settle call + 45 polls at t = 1 s .. 45 s.
        assert_eq!(polls, 46);
        assert_eq!(t, 45_000);
        assert_eq!(mmio.reads.borrow().len(), 45);
        assert_eq!(seq.poll(&mmio, 99_999), ResetPoll::Failed);
    }

    #[test]
    fn ready_during_polling() {
        let mmio = FakeMmio::new();
        let mut seq = ResetSeq::new();
        assert_eq!(seq.poll(&mmio, 0), ResetPoll::Wait { ms: 1000 });
        assert!(mmio.reads.borrow().is_empty());
        assert_eq!(seq.poll(&mmio, 400), ResetPoll::Wait { ms: 600 });
        let (r, t, _) = drive(&mut seq, &mmio, Some(5_000));
        assert_eq!(r, ResetPoll::Ready);
        assert_eq!(t, 5_000);
        mmio.set(regs::spad(2), 0);
        assert_eq!(seq.poll(&mmio, 6_000), ResetPoll::Ready);
    }

    #[test]
    fn early_polls_do_not_consume_budget() {
        let mmio = FakeMmio::new();
        let mut seq = ResetSeq::with_timing(timing(10, 10, 30));
        assert_eq!(seq.timing.max_checks(), 3);
        assert_eq!(seq.poll(&mmio, 10), ResetPoll::Wait { ms: 10 });
        assert_eq!(seq.poll(&mmio, 11), ResetPoll::Wait { ms: 9 });
        assert_eq!(seq.poll(&mmio, 12), ResetPoll::Wait { ms: 8 });
        assert_eq!(seq.poll(&mmio, 20), ResetPoll::Wait { ms: 10 });
        assert_eq!(seq.poll(&mmio, 35), ResetPoll::Failed);
    }

    #[test]
    fn degenerate_timing() {
        let mmio = FakeMmio::new();
        let mut seq = ResetSeq::with_timing(timing(0, 0, 0));
        assert_eq!(seq.timing.max_checks(), 1);
        assert_eq!(seq.poll(&mmio, 0), ResetPoll::Failed);
        let mut seq = ResetSeq::with_timing(timing(0, 0, 5));
        assert_eq!(seq.timing.max_checks(), 5);
        assert_eq!(seq.poll(&mmio, 0), ResetPoll::Wait { ms: 1 });
        mmio.set(regs::spad(2), 1);
        assert_eq!(seq.poll(&mmio, 0), ResetPoll::Ready);
        assert_eq!(ResetSeq::default(), ResetSeq::new());
        assert_eq!(ResetTiming::default(), ResetTiming::ORIGINAL);
        assert_eq!(ResetTiming::ORIGINAL.max_checks(), 45);
    }
}
