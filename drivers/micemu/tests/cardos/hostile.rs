//! A hostile card, end to end: every `micemu inject` verb against the
//! virtio rings and the device page, through the micemu binary (its log
//! lines on stderr) and `micemu inject`, with libmic's `VirtioFile` as the
//! host backend (what mpssd is). Each test shows the defined outcome where
//! an operator sees it — the errno of COPY_DESC, debugfs `vdev_info` and
//! `dp`, micemu's log, the card's kernel log — and that the host driver,
//! the card's other devices and the other card keep working.

use std::io::IoSliceMut;
use std::time::{Duration, Instant};

use libmic::MicRoot;
use libmic::vdev::Wake;

use crate::host::{Fleet, WAIT};
use crate::socket::Client;

/// Card 0 with two consoles (hvc0 the victim, hvc1 the operator's) and
/// card 1 with one, all booted to their prompts.
struct Rig {
    fleet: Fleet,
    victim: Client,
    operator: Client,
    other: Client,
}

impl Rig {
    fn start(args: &[&str]) -> Rig {
        let fleet = Fleet::spawn(2, args);
        let root = MicRoot::new(fleet.dir.path());
        let mut victim = Client::console(&root, 0);
        let mut operator = Client::console(&root, 0);
        let mut other = Client::console(&root, 1);
        fleet.boot(0);
        fleet.boot(1);
        for c in [&mut victim, &mut operator, &mut other] {
            c.expect(&c.prompt());
        }
        Rig {
            fleet,
            victim,
            operator,
            other,
        }
    }

    fn inject(&self, words: &[&str]) {
        self.fleet.inject(0, words).unwrap();
    }

    fn vdev_info(&self) -> String {
        self.fleet.debug(0, "vdev_info")
    }

    /// Card 0's other console and card 1 answer.
    fn others_answer(&mut self) {
        assert_eq!(self.operator.run("echo same card"), "same card\r\n");
        assert_eq!(self.other.run("echo other card"), "other card\r\n");
    }

    /// The operator unbinds virtio0 (the victim) from its own console and
    /// waits for the card's reset of it to end.
    fn unbind_victim(&mut self) {
        let n = self.unbound();
        assert_eq!(self.operator.run(&format!("echo virtio0 > {SYS}/unbind")), "");
        let start = Instant::now();
        // The card log has no notification: re-read until a deadline.
        while self.unbound() == n {
            assert!(start.elapsed() < WAIT, "virtio0 never unbound");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn unbound(&self) -> usize {
        let log = self.fleet.log(0);
        log.iter()
            .filter(|l| *l == "virtio_console virtio0: unbound")
            .count()
    }

    /// The operator binds virtio0 again: the card probes it afresh, and
    /// the victim gets a new login.
    fn bind_victim(&mut self) {
        assert_eq!(self.operator.run(&format!("echo virtio0 > {SYS}/bind")), "");
        self.victim.out.clear();
        self.victim.expect("coprocessor mic0 (hvc0)");
        self.victim.expect(&self.victim.prompt());
    }

    /// Both: the card resets the device and probes it afresh.
    fn rebind_victim(&mut self) {
        self.unbind_victim();
        self.bind_victim();
    }
}

/// The console driver's sysfs directory on the card.
const SYS: &str = "/sys/bus/virtio/drivers/virtio_console";

/// One COPY_DESC of `data` into the victim's receive ring (typing): the
/// bytes moved, or the errno.
fn type_bytes(c: &mut Client, data: &[u8]) -> Result<u32, i32> {
    let mut buf = data.to_vec();
    c.file
        .copy_desc(0, &mut [IoSliceMut::new(&mut buf)], true)
        .map_err(|e| e.errno().unwrap_or_else(|| panic!("not a driver error: {e}")))
}

/// The card log line that records an injection on virtio0.
fn injected(fleet: &Fleet, what: &str) -> String {
    let log = fleet.wait_log(0, what);
    log.into_iter()
        .find(|l| l.starts_with("virtio_console virtio0: injected: ") && l.contains(what))
        .unwrap_or_else(|| panic!("no injection record with {what:?}"))
}

/// A ring the card breaks: the first COPY_DESC fails with the walker's
/// errno, every later one with EIO, vdev_info and micemu's log say why,
/// and the ring works again once the card resets the device.
fn a_broken_ring(verb: &str, errno: i32, reason: &str) {
    let mut rig = Rig::start(&[]);
    rig.inject(&[verb, "hvc0"]);
    injected(&rig.fleet, "vq 0: ");
    assert_eq!(type_bytes(&mut rig.victim, b"x"), Err(errno), "{verb}");
    assert_eq!(
        type_bytes(&mut rig.victim, b"x"),
        Err(libc::EIO),
        "{verb}: broken"
    );
    let info = rig.vdev_info();
    let victim = info.split("VDEV ").nth(1).unwrap();
    assert!(victim.contains(" BROKEN\n"), "{info}");
    let why = victim.lines().find(|l| l.starts_with("  broken: ")).unwrap();
    assert!(why.contains(reason), "{info}");
    assert!(
        victim.contains("  vring 0: num 128 ") && victim.contains(" errors 1\n"),
        "{info}"
    );
    assert_eq!(info.matches("BROKEN").count(), 1, "only the victim: {info}");
    let line = rig.fleet.wait_stderr("mic0: virtio console: vring 0: ");
    assert!(
        line.starts_with("micemu: warning: ") && line.contains(reason),
        "{line}"
    );
    // Logged once, not once per refused copy.
    assert_eq!(
        rig.fleet
            .stderr()
            .iter()
            .filter(|l| l.contains("vring 0: "))
            .count(),
        1
    );
    rig.others_answer();
    rig.rebind_victim();
    assert_eq!(rig.victim.run("echo back"), "back\r\n");
    let info = rig.vdev_info();
    assert!(!info.contains("BROKEN"), "{info}");
    assert!(
        info.starts_with("VDEV type 3 (console) state UP") && info.contains(" resets 1 "),
        "{info}"
    );
}

#[test]
fn a_descriptor_loop_is_eloop_then_eio_until_the_card_resets_the_device() {
    a_broken_ring("vring-loop", libc::ELOOP, "descriptor loop");
}

#[test]
fn a_buffer_outside_card_memory_is_einval() {
    a_broken_ring("vring-outside", libc::EINVAL, "outside card memory");
}

#[test]
fn a_chain_longer_than_4_gib_is_einval() {
    // The card has 8 GiB (micemu's default), so each 2 GiB buffer is inside
    // it: what is refused is the total.
    a_broken_ring("vring-huge", libc::EINVAL, "chain longer than 4 GiB");
}

#[test]
fn an_avail_index_jump_is_einval() {
    a_broken_ring("vring-jump", libc::EINVAL, "card moved avail index to");
}

#[test]
fn a_double_submission_is_served_twice_and_the_card_resets_the_device() {
    let mut rig = Rig::start(&[]);
    // Output the host has not read yet: the card's transmit ring waits.
    rig.victim.type_line("echo hi");
    rig.victim.wait_until("console output", |c| c.map.pending(1));
    rig.inject(&["vring-double", "hvc0", "1"]);
    let line = injected(&rig.fleet, "vq 1: chain ");
    let head: u32 = line
        .split("chain ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    // The host cannot tell a resubmission from a reuse: it serves the
    // chain twice, and the newest output arrives twice.
    let prompt = rig.victim.prompt();
    let first = rig.victim.expect(&prompt);
    assert!(first.starts_with("echo hi\r\nhi\r\n"), "{first:?}");
    let again = rig.victim.expect(&prompt);
    assert!(first.ends_with(&again), "{again:?} is not the tail of {first:?}");
    // The card's driver catches the second completion and resets the
    // device; the host acknowledges the reset.
    let log = rig.fleet.wait_log(0, "virtio_console virtio0: unbound");
    let broke = format!(
        "virtio_console virtio0: the host broke the ring (host completed head {head}, not in flight); resetting the device"
    );
    assert!(log.contains(&broke), "{log:#?}");
    assert!(rig.vdev_info().contains(" resets 1 "), "{}", rig.vdev_info());
    assert!(!rig.vdev_info().contains("BROKEN"));
    rig.others_answer();
    // Unbound by its driver; bound again, it works.
    rig.bind_victim();
    assert_eq!(rig.victim.run("echo back"), "back\r\n");
}

#[test]
fn a_doorbell_storm_is_coalesced_and_starves_nobody() {
    let mut rig = Rig::start(&[]);
    rig.inject(&["doorbell-storm", "hvc0", "200000"]);
    injected(&rig.fleet, "rang the host's doorbell 200000 times");
    // The file wakes (poll's POLLIN), with nothing new to copy.
    let start = Instant::now();
    loop {
        // TIMEOUT: a bound on one wait; the loop's own bound is WAIT.
        if rig.victim.file.wait(Some(Duration::from_millis(20))).unwrap() == Wake::Doorbell {
            break;
        }
        assert!(start.elapsed() < WAIT, "no wake-up for the storm");
    }
    assert!(!rig.victim.map.pending(1));
    // The interrupt cause bit coalesced the storm before the bottom half:
    // it ran a handful of times, not 200000.
    let info = rig.vdev_info();
    let doorbells: u64 = info
        .split(" doorbells ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(doorbells < 1000, "{info}");
    assert!(!info.contains("BROKEN"), "{info}");
    assert_eq!(rig.victim.run("echo after the storm"), "after the storm\r\n");
    rig.others_answer();
}

#[test]
fn vqconfig_rewritten_after_activation_changes_nothing_on_the_host() {
    let mut rig = Rig::start(&[]);
    let rings = |info: &str| -> Vec<String> {
        info.lines()
            .filter(|l| l.starts_with("  vring"))
            .map(|l| l.split(" chains ").next().unwrap().to_owned())
            .collect()
    };
    let before = rings(&rig.vdev_info());
    rig.inject(&["vqconfig-change", "hvc0"]);
    injected(&rig.fleet, "2 vqconfigs rewritten");
    // The device page shows what the card wrote ...
    // (the dump's walk of the page stops at the descriptor it refuses)
    let dp = rig.fleet.debug(0, "dp");
    assert!(
        dp.contains("bad device descriptor at 0x10: vq 0 num 256 > 128"),
        "{dp}"
    );
    // ... the host works from its snapshot: same sizes, same used rings.
    assert_eq!(rings(&rig.vdev_info()), before);
    let cpu = rig.victim.run("cat /proc/cpuinfo");
    assert_eq!(cpu.matches("processor\t: ").count(), 244);
    // The card's own driver refuses its garbage at the next probe.
    rig.unbind_victim();
    assert_eq!(rig.operator.run(&format!("echo virtio0 > {SYS}/bind")), "");
    rig.fleet
        .wait_log(0, "virtio_console virtio0: probe failed: vq 0: bad ring size 256");
    rig.others_answer();
}

#[test]
fn a_used_ring_outside_card_memory_is_refused_at_activation() {
    // A short handshake budget: the card's wait for the host runs it out.
    let mut rig = Rig::start(&["--ack-ms", "1000"]);
    rig.inject(&["used-outside", "hvc0"]);
    let line = injected(&rig.fleet, "virtqueue 0's used ring goes outside");
    assert!(line.contains("at the next probe"), "{line}");
    let refused = rig
        .fleet
        .wait_stderr("mic0: virtio console: refused the card's used rings");
    assert!(refused.contains("outside card memory"), "{refused}");
    let info = rig.vdev_info();
    let victim = info.split("VDEV ").nth(1).unwrap();
    assert!(
        victim.contains(" BROKEN\n  broken: buffer 0x406 bytes at 0x8"),
        "{info}"
    );
    assert!(victim.contains("outside card memory"), "{info}");
    // The card's driver gives up when its budget runs out.
    let log = rig.fleet.wait_log(
        0,
        "virtio_console virtio0: the host did not take the used rings (-19)",
    );
    assert!(
        log.iter()
            .any(|l| l.ends_with("its descriptor table in host memory")),
        "{log:#?}"
    );
    // Every ring of the device: EIO until the card resets it.
    assert_eq!(type_bytes(&mut rig.victim, b"x"), Err(libc::EIO));
    rig.others_answer();
    // Binding it again resets the failed device first.
    assert_eq!(rig.operator.run(&format!("echo virtio0 > {SYS}/bind")), "");
    rig.victim.out.clear();
    rig.victim.expect(&rig.victim.prompt());
    assert_eq!(rig.victim.run("echo back"), "back\r\n");
    assert!(!rig.vdev_info().contains("BROKEN"), "{}", rig.vdev_info());
}

#[test]
fn a_config_change_never_acknowledged_costs_the_bounded_wait() {
    let budget = Duration::from_secs(1);
    let mut rig = Rig::start(&["--ack-ms", "1000"]);
    rig.inject(&["config-no-ack", "hvc0"]);
    injected(
        &rig.fleet,
        "config changes and removal requests are no longer acknowledged",
    );
    let start = Instant::now();
    rig.victim
        .file
        .config_change(&[80, 0, 25, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        .unwrap();
    let took = start.elapsed();
    assert!(took >= budget, "returned after {took:?}, before the budget");
    assert!(took < WAIT, "{took:?}");
    let line = rig
        .fleet
        .wait_stderr("mic0: config change not acknowledged by the card");
    assert!(line.starts_with("micemu: warning: "), "{line}");
    assert!(!rig.fleet.log(0).iter().any(|l| l.contains("config changed")));
    // The device itself goes on.
    assert_eq!(rig.victim.run("echo still"), "still\r\n");
    // Closing the file: the removal is not acknowledged either; the host
    // removes the device after the same bound.
    let Rig {
        fleet,
        victim,
        mut operator,
        mut other,
    } = rig;
    let start = Instant::now();
    drop(victim);
    fleet.wait_stderr("mic0: device removal not acknowledged by the card");
    assert!(start.elapsed() >= budget);
    // The next config doorbell (a new console) shows the card its device
    // gone; the new one comes up in its place.
    let mut again = Client::console(&MicRoot::new(fleet.dir.path()), 0);
    again.expect(&again.prompt());
    fleet.wait_log(0, "virtio_console virtio0: gone from the device page");
    assert_eq!(again.run("echo new"), "new\r\n");
    assert_eq!(operator.run("echo same card"), "same card\r\n");
    assert_eq!(other.run("echo other card"), "other card\r\n");
}

#[test]
fn garbage_over_the_device_page_leaves_the_host_on_its_own_record() {
    let mut rig = Rig::start(&[]);
    let record = |info: &str| -> Vec<String> {
        info.lines()
            .map(|l| {
                let l = l.split(" in ").next().unwrap();
                l.split(" last_avail").next().unwrap().to_owned()
            })
            .collect()
    };
    let before = record(&rig.vdev_info());
    let dp_before = rig.fleet.debug(0, "dp");
    rig.inject(&["garbage-dp", "hvc0"]);
    injected(&rig.fleet, "random bytes over its descriptor and control block");
    // debugfs still reads (the dump walks what is there, bounded) and
    // shows the damage; the host's own record of its devices is intact.
    let dp = rig.fleet.debug(0, "dp");
    assert_ne!(dp, dp_before);
    assert!(dp.starts_with("Bootparam: magic "), "{dp}");
    let after = record(&rig.vdev_info());
    assert_eq!(after.len(), before.len());
    assert_eq!(
        after[0].split(" state ").next(),
        before[0].split(" state ").next()
    );
    assert!(
        after
            .iter()
            .filter(|l| l.starts_with("  vring"))
            .all(|l| l.contains(" num 128"))
    );
    // Whatever the garbage says, a copy on the victim answers at once (a
    // byte moved, or an errno).
    let _ = type_bytes(&mut rig.victim, b"x");
    rig.others_answer();
    // Over the whole page, bootparam included: card 1 and the host driver
    // go on, and card 0 resets and boots again.
    rig.fleet.inject(0, &["garbage-dp"]).unwrap();
    rig.fleet
        .wait_log(0, "mic_card: injected: 4096 random bytes over the device page");
    assert_eq!(rig.other.run("echo other card"), "other card\r\n");
    assert!(rig.fleet.debug(0, "dp").starts_with("Bootparam: magic "));
    rig.fleet.write(0, "state", "reset");
    rig.fleet.wait_state(0, libmic::MicState::Offline);
    rig.fleet.boot(0);
    rig.fleet.wait_log(0, libmic::OS_UP_MARKER);
    assert_eq!(rig.fleet.read(0, "state"), "online\n");
}

#[test]
fn bad_requests_are_refused_with_a_reason() {
    let fleet = Fleet::spawn(1, &[]);
    let err = fleet.inject(0, &["vring-loop", "hvc0"]).unwrap_err();
    assert!(err.contains("no card OS is running"), "{err}");
    let err = fleet.inject(0, &["vring-loop", "sda"]).unwrap_err();
    assert!(
        err.contains("\"sda\" is not a virtio device: DEV is virtioN"),
        "{err}"
    );
    let err = fleet.inject(0, &["vring-jump", "hvc0", "9"]).unwrap_err();
    assert!(err.contains("\"9\" is not a virtqueue (0-3)"), "{err}");
    let root = MicRoot::new(fleet.dir.path());
    let mut con = Client::console(&root, 0);
    fleet.boot(0);
    con.expect(&con.prompt());
    let err = fleet.inject(0, &["vring-loop", "eth0"]).unwrap_err();
    assert!(err.contains("mic0: no virtio device eth0"), "{err}");
    let err = fleet.inject(0, &["vring-loop", "hvc0", "3"]).unwrap_err();
    assert!(err.contains("virtio0 has no virtqueue 3"), "{err}");
    let err = fleet.inject(0, &["vring-double", "hvc0", "1"]).unwrap_err();
    assert!(err.contains("no chain waits for the host"), "{err}");
}
