//! Bounded, caller-timed waits for a flag the other side sets or clears in
//! shared memory: the host waiting for the card's `guest_ack`, the card
//! waiting for the host to clear `used_address_updated` or to set
//! `host_ack`. The original polls every 100 ms for at most 10 s; the caller
//! owns time (a kernel work item sleeps, micemu schedules a timer), the
//! driver core only says whether to look again.

use crate::hw::Memory;

/// Poll period and budget of a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckTiming {
    /// Poll period.
    pub period_ms: u64,
    /// Total budget.
    pub budget_ms: u64,
}

impl AckTiming {
    /// The original driver's timing: 100 polls of 100 ms.
    pub const ORIGINAL: AckTiming = AckTiming {
        period_ms: 100,
        budget_ms: 10_000,
    };
}

/// What a poll found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckPoll {
    /// Not yet: look again after this many milliseconds.
    Wait {
        /// Delay.
        ms: u64,
    },
    /// The other side answered.
    Acked,
    /// The budget ran out.
    TimedOut,
}

/// What the flag must become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Non-zero.
    Set,
    /// Zero.
    Clear,
}

/// A wait for the byte at `addr` to be set or cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckWait {
    addr: u64,
    until: Until,
    timing: AckTiming,
}

impl AckWait {
    /// A wait for the byte at `addr` (in the memory later passed to
    /// [`AckWait::poll`]).
    #[must_use]
    pub const fn new(addr: u64, until: Until, timing: AckTiming) -> Self {
        Self { addr, until, timing }
    }

    /// Looks at the flag, `elapsed_ms` after the request. An unreadable
    /// flag counts as not answered.
    pub fn poll(&self, mem: &impl Memory, elapsed_ms: u64) -> AckPoll {
        let answered = mem.read_u8(self.addr).is_ok_and(|v| match self.until {
            Until::Set => v != 0,
            Until::Clear => v == 0,
        });
        if answered {
            AckPoll::Acked
        } else if elapsed_ms >= self.timing.budget_ms {
            AckPoll::TimedOut
        } else {
            AckPoll::Wait {
                ms: self.timing.period_ms.min(self.timing.budget_ms - elapsed_ms),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeMem;

    #[test]
    fn set_and_clear_with_a_budget() {
        let m = FakeMem::new(8);
        let set = AckWait::new(3, Until::Set, AckTiming::ORIGINAL);
        let clear = AckWait::new(3, Until::Clear, AckTiming::ORIGINAL);
        assert_eq!(set.poll(&m, 0), AckPoll::Wait { ms: 100 });
        assert_eq!(clear.poll(&m, 0), AckPoll::Acked);
        assert_eq!(set.poll(&m, 9_990), AckPoll::Wait { ms: 10 });
        assert_eq!(set.poll(&m, 10_000), AckPoll::TimedOut);
        m.write_u8(3, 1).unwrap();
        assert_eq!(set.poll(&m, 10_000), AckPoll::Acked);
        assert_eq!(clear.poll(&m, 50), AckPoll::Wait { ms: 100 });
        let outside = AckWait::new(99, Until::Clear, AckTiming::ORIGINAL);
        assert_eq!(outside.poll(&m, 20_000), AckPoll::TimedOut);
    }
}
