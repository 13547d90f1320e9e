//! The one event loop that drives time: hardware side effects (reset,
//! bootstrap, doorbells) arrive as messages from the register file, timers
//! schedule the card's reset, the card OS's boot steps and the host driver's
//! reset polls. Nothing is handled re-entrantly from a register write, so no
//! card lock is ever taken twice; when nothing is due the loop blocks.
//!
//! A thread that holds no card lock may deliver the side effects of its
//! own register writes itself ([`Emulator::deliver_here`]): a `dev/micN`
//! connection ringing the card after a COPY_DESC runs the card's interrupt
//! handler, and the host interrupt the card answers with, in its own
//! thread, instead of waking the loop to do it (one thread wake-up less
//! each way of a doorbell round trip). The events are still queued and
//! handled one at a time after the write, each under the card's lock, as
//! the loop would; past [`LOCAL_MAX`] of them the rest go to the loop.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use mic_core::host::ResetPoll;
use mic_core::{post, regs};

use crate::card::{Card, CardState};
use crate::cardos::{OsTimer, Phase};
use crate::emu::{Emulator, spad2_ready};
use crate::fs::Tree;
use crate::hw::HwEvent;

/// Messages to the event loop.
#[derive(Debug)]
pub(crate) enum Msg {
    Hw(u32, HwEvent),
    At(Instant, u32, Timer),
    Stop,
}

/// Things that happen later. Each carries the hardware generation it was
/// scheduled in; a reset makes older timers void.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// The card finished its reset and the bootstrap is ready.
    HwResetDone { epoch: u64 },
    /// The host driver's next look at SPAD2 while resetting.
    HostResetPoll { epoch: u64 },
    /// The card OS's next boot step.
    BootStep { epoch: u64 },
    /// The card OS finishes an orderly power-off.
    Poweroff { epoch: u64 },
    /// One of the card OS's own timers (virtio handshakes, network stack).
    Os { epoch: u64, which: OsTimer },
}

/// Most hardware events one [`Emulator::deliver_here`] handles itself (a
/// doorbell, the card's answer, the host's interrupt are three); a chain
/// of events longer than this continues on the event loop.
const LOCAL_MAX: usize = 64;

thread_local! {
    /// Hardware events raised by this thread while it delivers its own.
    static LOCAL: RefCell<Option<VecDeque<(u32, HwEvent)>>> = const { RefCell::new(None) };
}

/// The register files' event sink: the events of a thread inside
/// [`Emulator::deliver_here`] wait for it, the others go to the loop.
pub(crate) fn raise(tx: &Sender<Msg>, card: u32, ev: HwEvent) {
    let kept = LOCAL.with(|l| l.borrow_mut().as_mut().map(|q| q.push_back((card, ev))).is_some());
    if !kept {
        let _ = tx.send(Msg::Hw(card, ev));
    }
}

/// Ends local delivery on this thread however `deliver_here` is left;
/// events still waiting go to the loop.
struct LocalGuard<'a>(&'a Sender<Msg>);

impl Drop for LocalGuard<'_> {
    fn drop(&mut self) {
        for (card, ev) in LOCAL.with(|l| l.borrow_mut().take()).into_iter().flatten() {
            let _ = self.0.send(Msg::Hw(card, ev));
        }
    }
}

/// Runs `writes`, then hands `handle` the events raised meanwhile on this
/// thread and the ones those raise in turn, in order, at most
/// [`LOCAL_MAX`]; the rest, and every event raised by a nested call, go to
/// the loop through `tx`.
fn deliver_local(tx: &Sender<Msg>, writes: impl FnOnce(), mut handle: impl FnMut(u32, HwEvent)) {
    let nested = LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        let nested = l.is_some();
        l.get_or_insert_with(VecDeque::new);
        nested
    });
    if nested {
        // Already delivering (cannot happen from a lock-free caller, but
        // stays correct): the outer call handles these too.
        writes();
        return;
    }
    // A chain longer than LOCAL_MAX (a card answering every doorbell with
    // one) carries on in the loop when the guard goes.
    let _guard = LocalGuard(tx);
    writes();
    for _ in 0..LOCAL_MAX {
        let Some((card, ev)) = LOCAL.with(|l| l.borrow_mut().as_mut().and_then(VecDeque::pop_front)) else {
            return;
        };
        handle(card, ev);
    }
}

impl Emulator {
    /// Runs `writes` (register writes by a thread holding no card lock),
    /// then handles in this thread the hardware events they raised and the
    /// ones those raised in turn, in order, each under its card's lock.
    pub(crate) fn deliver_here(&self, writes: impl FnOnce()) {
        deliver_local(&self.tx, writes, |card, ev| self.on_hw(card, ev));
    }

    pub(crate) fn schedule(&self, after: Duration, card: u32, t: Timer) {
        let _ = self.tx.send(Msg::At(Instant::now() + after, card, t));
    }

    pub(crate) fn event_loop(&self, rx: &Receiver<Msg>) {
        let mut timers: BinaryHeap<Reverse<(Instant, u32, Timer)>> = BinaryHeap::new();
        loop {
            let msg = match timers.peek() {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(Reverse((at, _, _))) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            };
            match msg {
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Msg::Hw(card, ev)) => self.on_hw(card, ev),
                Ok(Msg::At(at, card, t)) => timers.push(Reverse((at, card, t))),
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            while let Some(Reverse((at, card, t))) = timers.peek().copied() {
                if at > now {
                    break;
                }
                timers.pop();
                self.on_timer(card, t);
            }
        }
    }

    fn on_hw(&self, id: u32, ev: HwEvent) {
        let Some(card) = self.card(id) else { return };
        let mut st = card.lock();
        let hw = card.card_hw(self.config.memory);
        match ev {
            HwEvent::Reset => {
                st.epoch += 1;
                st.os.power_cycle();
                // The bootstrap initialises GDDR before it reports ready:
                // no log of the previous OS can be mistaken for the next's.
                if let Err(e) = card.gddr.scrub() {
                    log::warn!("mic{id}: scrubbing GDDR: {e}");
                }
                card.regs.set(regs::POSTCODE, post::register_value(post::RESET));
                if st.fail_next_reset {
                    st.fail_next_reset = false;
                } else {
                    self.schedule(self.timing().reset, id, Timer::HwResetDone { epoch: st.epoch });
                }
            }
            // APICICR7 is both the bootstrap's register and doorbell 7's:
            // once an OS runs, the send bit there is a doorbell.
            HwEvent::Bootstrap if st.os.phase() != Phase::Off => self.card_doorbell(id, &mut st, &hw, 7),
            HwEvent::Bootstrap => {
                if let Some(next) = st.os.bootstrap(&hw, self.timing().boot) {
                    self.schedule(next, id, Timer::BootStep { epoch: st.epoch });
                }
            }
            HwEvent::CardDoorbell(db) => self.card_doorbell(id, &mut st, &hw, db),
            HwEvent::HostDoorbell(_) => self.host_interrupt(card, &mut st),
        }
        self.arm_os(id, &mut st);
    }

    fn card_doorbell<M: mic_core::hw::Mmio, P: mic_core::hw::Memory>(
        &self,
        id: u32,
        st: &mut CardState,
        hw: &crate::cardos::CardHw<M, P>,
        db: u8,
    ) {
        if st.os.doorbell(hw, db) {
            self.schedule(self.timing().boot / 10, id, Timer::Poweroff { epoch: st.epoch });
        }
    }

    /// Schedules the timers the card OS asked for, in this generation.
    pub(crate) fn arm_os(&self, id: u32, st: &mut CardState) {
        for (after, which) in st.os.take_wakeups() {
            self.schedule(
                after,
                id,
                Timer::Os {
                    epoch: st.epoch,
                    which,
                },
            );
        }
    }

    /// The host driver's interrupt handler: ack the causes, then each
    /// doorbell's bottom half (shutdown, and the virtio devices on it; the
    /// first virtio devices share doorbell 0 with shutdown).
    fn host_interrupt(&self, card: &Card, st: &mut CardState) {
        let causes = mic_core::host::ack_interrupt(&card.host_mmio());
        let dbs = mic_core::host::doorbell::doorbells_in(causes);
        for db in (0..mic_core::host::doorbell::HOST_DOORBELLS).filter(|d| dbs & (1 << d) != 0) {
            crate::dev::doorbell(card, &st.vdevs, db);
        }
        if causes & (1 << st.host.c2h_shutdown_db()) != 0 {
            // A status byte outside the enum is the card's garbage:
            // ignored, as the original ignores unknown values.
            if let Ok(Some(report)) = st.host.handle_shutdown_interrupt(&card.host_ram) {
                self.hub.notify(card.id, Tree::Sysfs, "shutdown_status");
                if report.transition.is_some() {
                    self.state_changed(card.id, st);
                }
            }
        }
    }

    fn on_timer(&self, id: u32, t: Timer) {
        let Some(card) = self.card(id) else { return };
        let mut st = card.lock();
        let hw = card.card_hw(self.config.memory);
        match t {
            Timer::HwResetDone { epoch } if epoch == st.epoch => {
                card.regs
                    .set(regs::spad(regs::SPAD_DOWNLOAD_INFO), spad2_ready(id));
                card.regs.set(regs::POSTCODE, post::register_value(post::READY));
            }
            Timer::BootStep { epoch } if epoch == st.epoch => {
                let next = st.os.step(&hw, self.timing().boot);
                if matches!(st.os.phase(), Phase::Booting(_)) {
                    self.schedule(next, id, Timer::BootStep { epoch });
                }
            }
            Timer::Poweroff { epoch } if epoch == st.epoch => st.os.finish_poweroff(&hw),
            Timer::Os { epoch, which } if epoch == st.epoch => st.os.timer(&hw, which),
            Timer::HostResetPoll { .. } => self.poll_reset(card, &mut st),
            _ => {}
        }
        self.arm_os(id, &mut st);
    }

    /// One step of the host driver's reset sequence.
    fn poll_reset(&self, card: &Card, st: &mut CardState) {
        let Some(progress) = &mut st.reset else { return };
        let elapsed = progress.started.elapsed();
        match progress.seq.poll(&card.host_mmio(), duration_ms(elapsed)) {
            ResetPoll::Wait { ms } => {
                self.schedule(
                    Duration::from_millis(ms),
                    card.id,
                    Timer::HostResetPoll { epoch: st.epoch },
                );
            }
            outcome @ (ResetPoll::Ready | ResetPoll::Failed) => {
                let ok = outcome == ResetPoll::Ready;
                let progress = st.reset.take();
                if st.host.finish_reset(ok).is_some() {
                    self.state_changed(card.id, st);
                }
                if let Some(done) = progress.and_then(|p| p.boot) {
                    if ok {
                        self.boot(card, st, done);
                    } else {
                        done.err(libc::EINVAL);
                    }
                }
            }
        }
    }
}

pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(rx: &Receiver<Msg>) -> Vec<(u32, HwEvent)> {
        rx.try_iter()
            .filter_map(|m| match m {
                Msg::Hw(c, e) => Some((c, e)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_thread_delivering_its_own_events_handles_them_in_order_and_bounded() {
        let (tx, rx) = std::sync::mpsc::channel();
        // Outside: to the loop.
        raise(&tx, 0, HwEvent::Reset);
        assert_eq!(sent(&rx), [(0, HwEvent::Reset)]);
        // Inside: handled here, after the writes, in order; an event a
        // handler raises comes after the ones before it.
        let mut seen = Vec::new();
        deliver_local(
            &tx,
            || {
                raise(&tx, 1, HwEvent::CardDoorbell(2));
                raise(&tx, 1, HwEvent::CardDoorbell(3));
            },
            |c, e| {
                if e == HwEvent::CardDoorbell(2) {
                    raise(&tx, c, HwEvent::HostDoorbell(0));
                }
                seen.push((c, e));
            },
        );
        assert_eq!(
            seen,
            [
                (1, HwEvent::CardDoorbell(2)),
                (1, HwEvent::CardDoorbell(3)),
                (1, HwEvent::HostDoorbell(0)),
            ]
        );
        assert!(sent(&rx).is_empty(), "nothing went to the loop");
        // Done: the thread's events go to the loop again.
        raise(&tx, 0, HwEvent::Bootstrap);
        assert_eq!(sent(&rx), [(0, HwEvent::Bootstrap)]);
        // A handler answering every event with another: LOCAL_MAX handled
        // here, the one left to the loop, and the call returns.
        let mut n = 0;
        deliver_local(
            &tx,
            || raise(&tx, 0, HwEvent::HostDoorbell(1)),
            |c, e| {
                n += 1;
                raise(&tx, c, e);
            },
        );
        assert_eq!(n, LOCAL_MAX);
        assert_eq!(sent(&rx), [(0, HwEvent::HostDoorbell(1))]);
    }

    #[test]
    fn a_handler_that_panics_leaves_the_thread_sending_to_the_loop() {
        let (tx, rx) = std::sync::mpsc::channel();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            deliver_local(
                &tx,
                || {
                    raise(&tx, 0, HwEvent::CardDoorbell(1));
                    raise(&tx, 0, HwEvent::CardDoorbell(2));
                },
                |_, _| panic!("handler"),
            );
        }));
        assert!(r.is_err());
        // The event not handled went to the loop; later ones go there too.
        raise(&tx, 0, HwEvent::Reset);
        assert_eq!(sent(&rx), [(0, HwEvent::CardDoorbell(2)), (0, HwEvent::Reset)]);
    }
}
