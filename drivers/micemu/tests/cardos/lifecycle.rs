//! The devices' lives: config changes, hot removal, the card resetting a
//! device, the card being reset under in-flight chains, orderly shutdowns
//! (devices removed before the status is reported) and panics (devices
//! left), and doorbells shared by many devices.

use std::time::{Duration, Instant};

use libmic::MicState;
use mic_core::abi::virtio::status;
use mic_core::handshake::AckPoll;
use mic_core::hw::Memory as _;
use micemu::Timing;
use micemu::hw::Side;

use crate::host::{Console, Dev, Disk, Fleet, WAIT, blk_block, booted, net_block};

/// Re-reads a handshake flag the card sets until it does (the host driver
/// polls it the same way), with our own deadline rather than its budget.
fn wait_acked(dev: &Dev, wait: &mic_core::handshake::AckWait) {
    let start = Instant::now();
    while wait.poll(dev.host_ram(), 0) != AckPoll::Acked {
        assert!(start.elapsed() < WAIT, "the card never acknowledged");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn host_mmio(fleet: &Fleet, card: u32) -> micemu::hw::MmioView<'_> {
    fleet.emu().cards[card as usize].regs.view(Side::Host)
}

#[test]
fn a_config_change_is_acknowledged_after_the_driver_saw_it() {
    let fleet = Fleet::start_with(1, Timing::FAST);
    let mut con = Console::add(&fleet, 0);
    fleet.boot(0);
    con.expect(&con.prompt());
    let mmio = host_mmio(&fleet, 0);
    let cfg = [80, 0, 25, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let wait = con
        .dev
        .file
        .device()
        .config_change(&mmio, con.dev.host_ram(), &cfg)
        .unwrap();
    wait_acked(&con.dev, &wait);
    // The driver's hook ran before the ack.
    assert!(
        fleet
            .log(0)
            .iter()
            .any(|l| l == "virtio_console virtio0: hvc0: config changed")
    );
    con.dev
        .file
        .device()
        .finish_config_change(con.dev.host_ram())
        .unwrap();
    // Through the ioctl path too (the wait inside it is bounded).
    con.dev.file.config_change(&cfg).unwrap();
    assert_eq!(con.run("echo still here"), "still here\r\n");
}

#[test]
fn hot_removal_while_the_card_runs() {
    let fleet = Fleet::start_with(1, Timing::FAST);
    let (mut con, [net]) = booted(&fleet, [net_block()]);
    assert!(con.run("ip addr").contains("eth0"));
    // What close(2) does first: ask the card to remove the device.
    let mmio = host_mmio(&fleet, 0);
    let wait = net.file.device().begin_remove(&mmio, net.host_ram()).unwrap();
    wait_acked(&net, &wait);
    // It had reached DRIVER_OK, so the card reset it before acknowledging,
    // and it marked the slot removed.
    assert_eq!(net.file.device().card_resets(), 1);
    assert!(net.file.poll_error());
    assert!(
        fleet
            .log(0)
            .iter()
            .any(|l| l == "virtio_net virtio1 eth0: removed")
    );
    assert!(!con.run("ip addr").contains("eth0"));
    net.file.close();
    // The slot is free again: a new network device comes up as eth0.
    let mut again = Dev::add(&fleet, 0, &net_block());
    again.wait_driver_ok();
    assert!(con.run("ip addr").contains("2: eth0:"));
    // Closing the console the shell runs on removes it too.
    con.dev.file.close();
    fleet.wait_log(0, "virtio_console virtio0: removed");
    assert_eq!(fleet.read(0, "state"), "online\n");
}

#[test]
fn the_card_resets_a_device_when_its_driver_is_unbound() {
    let fleet = Fleet::start(1);
    let (mut con, [mut net]) = booted(&fleet, [net_block()]);
    assert_eq!(
        con.run("echo virtio1 > /sys/bus/virtio/drivers/virtio_net/unbind"),
        ""
    );
    net.wait_until("the card's reset", |d| d.file.device().card_resets() == 1);
    assert_eq!(net.status(), 0);
    fleet.wait_log(0, "virtio_net virtio1 eth0: unbound");
    assert!(!con.run("ip addr").contains("eth0"));
    // Unbinding what is not bound, or from the wrong driver, is refused.
    assert_eq!(
        con.run("echo virtio1 > /sys/bus/virtio/drivers/virtio_net/unbind"),
        "sh: write error: No such device\r\n"
    );
    assert_eq!(
        con.run("echo virtio1 > /sys/bus/virtio/drivers/virtio_blk/bind"),
        "sh: write error: No such device\r\n"
    );
    // Bound again: the whole probe, DRIVER_OK, the address back.
    assert_eq!(
        con.run("echo virtio1 > /sys/bus/virtio/drivers/virtio_net/bind"),
        ""
    );
    net.wait_driver_ok();
    assert!(con.run("ip addr").contains("inet 172.31.0.1/24"));
}

#[test]
fn a_card_reset_with_chains_in_flight_then_a_fresh_boot() {
    let fleet = Fleet::start(1);
    let (mut con, [mut net, mut disk]) = booted(&fleet, [net_block(), blk_block(2048)]);
    // Chains in flight everywhere: receive buffers posted, console output
    // the host does not read, disk reads the host does not serve.
    con.dev.send(b"cat /proc/cpuinfo\r");
    con.dev.send(b"blk sha256\r");
    disk.wait_until("disk requests", |d| d.pending(0));
    con.dev.wait_until("console output", |d| d.pending(1));
    assert!(net.pending(0));
    fleet.write(0, "state", "reset");
    fleet.wait_state(0, MicState::Offline);
    // The host reset its side of every device; the devices stay added.
    for d in [&con.dev, &net, &disk] {
        assert_eq!(d.status(), 0);
        assert!(!d.file.poll_error());
    }
    // A fresh boot brings every device back, from scratch.
    fleet.boot(0);
    con.out.clear();
    con.dev.wait_driver_ok();
    net.wait_driver_ok();
    disk.wait_driver_ok();
    con.expect("coprocessor mic0 (hvc0)");
    con.expect(&con.prompt());
    let _disk = Disk::serve(disk, vec![0u8; 2048 * 512]);
    assert!(con.run("blk info").starts_with("vda: 2048 sectors"));
    assert!(con.run("uname -n").starts_with("mic0"));
}

/// Removal lines all come before the shutdown report in the card's log.
fn assert_removed_before(log: &[String], last: &str) {
    let end = log
        .iter()
        .position(|l| l == last)
        .unwrap_or_else(|| panic!("no {last:?} in {log:#?}"));
    for dev in [
        "virtio_console virtio0: removed",
        "virtio_net virtio1 eth0: removed",
        "virtio_blk virtio2: removed",
    ] {
        let at = log
            .iter()
            .position(|l| l == dev)
            .unwrap_or_else(|| panic!("no {dev:?} in {log:#?}"));
        assert!(at < end, "{dev:?} after {last:?}: {log:#?}");
    }
}

#[test]
fn an_orderly_poweroff_removes_every_device_before_reporting() {
    // Nobody reads the console: its drain waits out the (short) budget.
    let fleet = Fleet::start_with(1, Timing::FAST);
    let (mut con, [net, disk]) = booted(&fleet, [net_block(), blk_block(64)]);
    let disk = Disk::serve(disk, vec![0u8; 64 * 512]);
    con.dev.send(b"poweroff\r");
    con.expect("The system is going down NOW!");
    fleet.wait_shutdown_status(0, "poweroff");
    assert_eq!(fleet.read(0, "state"), "shutting_down\n");
    assert_removed_before(&fleet.log(0), "reboot: Power down");
    let disk = disk.stop();
    for d in [&con.dev, &net, &disk] {
        assert!(d.file.poll_error(), "device not removed");
        assert_eq!(d.file.device().card_resets(), 1);
    }
}

#[test]
fn the_host_asking_for_shutdown_gets_the_same_order() {
    // Nobody reads the console: its drain waits out the (short) budget.
    let fleet = Fleet::start_with(1, Timing::FAST);
    let (con, [_net, _disk]) = booted(&fleet, [net_block(), blk_block(64)]);
    fleet.write(0, "state", "shutdown");
    fleet.wait_shutdown_status(0, "poweroff");
    assert_removed_before(&fleet.log(0), "reboot: Power down");
    // The devices are gone with the OS (mpssd adds them again); reboot
    // from the shell reports its own status.
    assert!(con.dev.file.poll_error());
    fleet.write(0, "state", "reset");
    fleet.wait_state(0, MicState::Offline);
    let mut con = Console::add(&fleet, 0);
    fleet.boot(0);
    con.expect(&con.prompt());
    con.dev.send(b"reboot\r");
    fleet.wait_shutdown_status(0, "restart");
    assert!(fleet.log(0).iter().any(|l| l == "reboot: Restarting system"));
}

#[test]
fn a_panic_leaves_the_devices_as_they_are() {
    let fleet = Fleet::start(1);
    let (mut con, [net]) = booted(&fleet, [net_block()]);
    con.dev.send(b"echo c > /proc/sysrq-trigger\r");
    fleet.wait_shutdown_status(0, "crashed");
    let log = fleet.log(0);
    assert!(
        log.iter().any(|l| l == "sysrq: SysRq : Trigger a crash"),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| l == "Kernel panic - not syncing: sysrq triggered crash")
    );
    assert!(!log.iter().any(|l| l.ends_with(": removed")), "{log:#?}");
    for d in [&con.dev, &net] {
        assert!(!d.file.poll_error());
        assert_ne!(d.status() & status::DRIVER_OK, 0);
    }
}

#[test]
fn six_consoles_spread_over_the_doorbells_all_answer() {
    // Doorbells 0 and 1 are shutdown and config; the consoles get 2..=7,
    // and doorbell 7 shares its register with the bootstrap interrupt.
    let fleet = Fleet::start(1);
    let mut cons: Vec<Console> = (0..6).map(|_| Console::add(&fleet, 0)).collect();
    fleet.boot(0);
    for (i, c) in cons.iter_mut().enumerate() {
        c.expect(&format!("coprocessor mic0 (hvc{i})"));
        c.expect(&c.prompt());
    }
    for (i, c) in cons.iter_mut().enumerate().rev() {
        assert_eq!(c.run(&format!("echo console {i}")), format!("console {i}\r\n"));
    }
    assert!(
        fleet
            .log(0)
            .iter()
            .filter(|l| l.starts_with("Linux version"))
            .count()
            == 1
    );
}

#[test]
fn a_host_that_breaks_the_used_ring_gets_the_device_reset() {
    let fleet = Fleet::start(1);
    let (mut con, [mut net]) = booted(&fleet, [net_block()]);
    // A hostile host writes a used entry for a head the card never made
    // available into the card's receive ring (card memory it can reach
    // through the aperture), and rings the device's doorbell.
    let card = &fleet.emu().cards[0];
    let used = match net.file.device().rings().next().unwrap().used() {
        mic_core::host::vop::ring::UsedRing::Card(a) => a,
        other @ mic_core::host::vop::ring::UsedRing::Host(_) => panic!("used ring not re-homed: {other:?}"),
    };
    let idx = card.gddr.read_u16(used + 2).unwrap();
    let slot = u64::from(idx % 128);
    card.gddr.write_u32(used + 4 + 8 * slot, 200).unwrap();
    card.gddr.write_u32(used + 8 + 8 * slot, 1).unwrap();
    card.gddr.write_u16(used + 2, idx.wrapping_add(1)).unwrap();
    let db = net.file.device().ctrl(net.host_ram()).unwrap().h2c_vdev_db;
    mic_core::host::send_intr(&host_mmio(&fleet, 0), db as u8).unwrap();
    net.wait_until("the card's reset", |d| d.file.device().card_resets() == 1);
    let log = fleet.wait_log(0, "virtio_net virtio1 eth0: unbound");
    assert!(
        log.iter().any(|l| l
            == "virtio_net virtio1 eth0: the host broke the ring (host completed head 200, not in flight); \
                resetting the device"),
        "{log:#?}"
    );
    assert_eq!(net.status(), 0);
    // The rest of the card is unharmed.
    assert_eq!(con.run("echo fine"), "fine\r\n");
}

#[test]
fn a_doorbell_storm_on_one_card_does_not_starve_another() {
    let fleet = Fleet::start(2);
    let mut quiet = Console::add(&fleet, 1);
    let mut loud = Console::add(&fleet, 0);
    fleet.boot(0);
    fleet.boot(1);
    quiet.expect(&quiet.prompt());
    loud.expect(&loud.prompt());
    let db = loud
        .dev
        .file
        .device()
        .ctrl(loud.dev.host_ram())
        .unwrap()
        .h2c_vdev_db as u8;
    let mmio = host_mmio(&fleet, 0);
    for _ in 0..20_000 {
        mic_core::host::send_intr(&mmio, db).unwrap();
    }
    // Each of those doorbells costs card 0 a bounded look at its rings;
    // card 1's shell answers in between, and card 0's afterwards.
    assert_eq!(quiet.run("echo quiet"), "quiet\r\n");
    assert_eq!(loud.run("echo loud"), "loud\r\n");
}
