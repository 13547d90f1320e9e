//! Card disks end to end: micemu's card OS booted, mpssd as a real
//! process serving a raw image file; the card's own `blk` commands typed
//! through a broker client, the image checked on the host with
//! `sha256sum`.
//!
//! No sleeps: the shell's answers, the event stream and the control
//! socket's answers are what the tests wait for, bounded by `HANG`.

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::console::shell;
use common::{Daemon, Fleet, HANG, to_state, wait_event};
use libmic::mpssd::{AttachOptions, Console, ErrorCode, EventKind, SupervisorState as S};

/// 8 MiB: 16384 sectors.
const IMAGE: u64 = 8 << 20;
const SECTORS: u64 = IMAGE / 512;

fn image(dir: &Path, name: &str, byte: u8) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&p, vec![byte; IMAGE as usize]).unwrap();
    p
}

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

/// What `blk fill SEED` writes over the whole image, hashed on the host.
fn pattern_sha256(dir: &Path, seed: u64) -> String {
    let p = dir.join(format!("pattern-{seed}"));
    std::fs::write(&p, micemu::cardos::blk::fill_pattern(seed, 0, IMAGE as usize)).unwrap();
    let h = sha256sum(&p);
    std::fs::remove_file(&p).unwrap();
    h
}

/// The hex of the card's `blk sha256`.
fn card_sha256(c: &mut Console) -> String {
    let out = shell(c, "blk sha256");
    let line = out
        .lines()
        .find(|l| l.ends_with("  /dev/vda"))
        .unwrap_or_else(|| panic!("no checksum in {out:?}"));
    line[..64].to_owned()
}

fn boot(fleet: &Fleet, d: &Daemon) {
    let mut ev = d.events();
    fleet.boot(0);
    wait_event(&mut ev, "running", to_state(0, S::Running));
}

fn console(d: &Daemon) -> Console {
    d.client()
        .attach_console(0, &AttachOptions::read_write().named("block test"))
        .unwrap()
}

/// Waits for the card to have its disk (it probes it after DRIVER_OK of
/// the console, so the first prompt may come before).
fn disk_info(c: &mut Console) -> String {
    let start = std::time::Instant::now();
    loop {
        let info = shell(c, "blk info");
        if !info.contains("no such disk") && !info.contains("no disk") {
            return info;
        }
        assert!(start.elapsed() < HANG, "the card never saw its disk: {info}");
    }
}

#[test]
fn the_card_writes_its_disk_and_the_host_image_has_it_even_after_kill_9() {
    let fleet = Fleet::start(1);
    let dir = fleet.root().join("var/lib/mpss");
    let img = image(&dir, "mic0.img", 0);
    fleet.write_config("[cards.mic0.block]\nimage = \"var/lib/mpss/mic0.img\"\nserial = \"disk-0\"\n");
    let d = Daemon::start(fleet.root(), &[]);
    boot(&fleet, &d);
    let mut c = console(&d);
    let info = disk_info(&mut c);
    assert!(
        info.contains(&format!("vda: {SECTORS} sectors of 512 bytes")),
        "{info}"
    );
    assert!(info.contains("serial: disk-0"), "GET_ID: {info}");
    assert!(info.contains(" rw flush"), "{info}");
    // The card writes a pattern over the whole disk and flushes it.
    let out = shell(&mut c, "blk fill 42");
    assert!(
        out.contains("vda: wrote 8.00 MiB in ") && out.contains(", flushed"),
        "{out}"
    );
    let want = pattern_sha256(fleet.root(), 42);
    assert_eq!(sha256sum(&img), want, "the host's image is what the card wrote");
    assert_eq!(card_sha256(&mut c), want, "and what the card reads back");
    let blk = d.device_status(0, "block", |b| b.counters["flushes"] >= 1);
    assert_eq!(
        (blk.state.as_str(), blk.target.as_str()),
        ("up", img.to_str().unwrap())
    );
    assert_eq!(blk.counters["write_bytes"], IMAGE);
    assert_eq!(
        (blk.counters["io_errors"], blk.counters["malformed"]),
        (0, 0),
        "{blk:?}"
    );
    // A second pattern, acknowledged and flushed, then mpssd is killed.
    let out = shell(&mut c, "blk fill 7");
    assert!(out.contains(", flushed"), "{out}");
    drop(c);
    d.kill9();
    let want = pattern_sha256(fleet.root(), 7);
    assert_eq!(sha256sum(&img), want, "nothing acknowledged was lost with mpssd");
    // A new mpssd adopts the running card and gives it its disk again.
    let d = Daemon::start(fleet.root(), &[]);
    let st = d.client().card_status(0).unwrap();
    assert_eq!((st.supervisor, st.adopted), (S::Running, true));
    let mut c = console(&d);
    disk_info(&mut c);
    assert_eq!(card_sha256(&mut c), want, "the card reads what it wrote before");
    assert_eq!(fleet.os_up_count(0), 1, "never rebooted");
    drop(c);
    assert_eq!(d.stop(), 0);
}

/// mpssd maps the image: a file that shrinks under it must cost the card
/// an I/O error per request that falls off the end, never the daemon
/// (SIGBUS), and the disk works again where (and once) the file has the
/// bytes.
#[test]
fn an_image_that_shrinks_under_the_card_gives_io_errors_not_a_dead_daemon() {
    let fleet = Fleet::start(1);
    let dir = fleet.root().join("var/lib/mpss");
    let img = image(&dir, "mic0.img", 0x11);
    fleet.write_config("[cards.mic0.block]\nimage = \"var/lib/mpss/mic0.img\"\n");
    let d = Daemon::start(fleet.root(), &[]);
    boot(&fleet, &d);
    let mut c = console(&d);
    disk_info(&mut c);
    // Both ends touched through the mapping first.
    assert!(shell(&mut c, "blk read 8192 1").contains("11 11 11 11"));
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.set_len(1 << 20).unwrap();
    let out = shell(&mut c, "blk read 8192 1");
    assert!(out.contains("read of sector 8192: I/O error"), "{out}");
    let out = shell(&mut c, "blk write 8200 gone");
    assert!(out.contains("write of sector 8200: I/O error"), "{out}");
    // The daemon is alive, counted the errors, and the disk is still up.
    let blk = d.device_status(0, "block", |b| b.counters["io_errors"] >= 2);
    assert_eq!(blk.state, "up", "{blk:?}");
    assert_eq!(blk.counters["io_errors"], 2, "{blk:?}");
    // What the file still has reads and writes as before.
    assert!(shell(&mut c, "blk read 100 1").contains("11 11 11 11"));
    assert!(shell(&mut c, "blk write 100 kept").contains("wrote 4 bytes"));
    // The file grows back (zeros): the card reads the file as it is now,
    // not a page left over from the fault.
    f.set_len(IMAGE).unwrap();
    let out = shell(&mut c, "blk read 8192 1");
    assert!(out.contains("00 00 00 00") && !out.contains("error"), "{out}");
    assert!(shell(&mut c, "blk write 8200 back").contains("wrote 4 bytes"));
    let data = std::fs::read(&img).unwrap();
    assert!(data[100 * 512..].starts_with(b"kept"));
    assert!(data[8200 * 512..].starts_with(b"back"));
    drop(c);
    assert_eq!(d.stop(), 0);
}

#[test]
fn read_only_disks_and_hot_swaps() {
    let fleet = Fleet::start(1);
    let dir = fleet.root().join("var/lib/mpss");
    let img_a = image(&dir, "a.img", b'A');
    let img_b = image(&dir, "b.img", b'B');
    let cimg = image(&dir, "c.img", b'C');
    fleet.write_config("[cards.mic0.block]\nimage = \"var/lib/mpss/a.img\"\nread_only = true\n");
    let d = Daemon::start(fleet.root(), &[]);
    boot(&fleet, &d);
    let mut c = console(&d);
    let info = disk_info(&mut c);
    assert!(info.contains(" ro flush"), "VIRTIO_BLK_F_RO: {info}");
    assert!(
        info.contains("serial: a.img"),
        "the default serial is the file's name: {info}"
    );
    assert!(shell(&mut c, "blk read 0 1").contains("41 41 41 41"));
    assert!(shell(&mut c, "blk write 0 nope").contains("vda is read-only"));
    assert_eq!(sha256sum(&img_a), sha256sum(&image(fleet.root(), "ref-a", b'A')));
    // Swapped through the control socket: the card sees its disk go and
    // come back on the new image (read-only still: the configuration's).
    let mut ev = d.events();
    let swapped = d.client().block_swap(0, Some(img_b.to_str().unwrap())).unwrap();
    assert_eq!(
        (
            swapped.path.as_deref(),
            swapped.read_only,
            swapped.sectors,
            swapped.added
        ),
        (img_b.to_str(), true, SECTORS, true)
    );
    wait_event(
        &mut ev,
        "the disk back",
        |e| matches!(&e.kind, EventKind::DevicesAdded { devices } if devices == &["block"]),
    );
    let start = std::time::Instant::now();
    while !shell(&mut c, "blk read 0 1").contains("42 42 42 42") {
        assert!(start.elapsed() < HANG, "the card never read the new image");
    }
    // A swap to what cannot be opened is refused; the disk stays.
    let err = d.client().block_swap(0, Some("/nonexistent/x.img")).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::DeviceError));
    let msg = err.to_string();
    assert!(
        msg.contains(
            "the new image is refused; the disk stays as it was: opening /nonexistent/x.img: No such file"
        ),
        "{msg}"
    );
    assert!(shell(&mut c, "blk read 0 1").contains("42 42 42 42"));
    // A configuration change swaps too (and forgets the swap's path): now
    // read-write, on c.img.
    fleet.write_config("[cards.mic0.block]\nimage = \"var/lib/mpss/c.img\"\n");
    let start = std::time::Instant::now();
    loop {
        let info = shell(&mut c, "blk info");
        if info.contains(" rw flush") && shell(&mut c, "blk read 0 1").contains("43 43 43 43") {
            break;
        }
        assert!(
            start.elapsed() < HANG,
            "the configuration's image never came: {info}"
        );
    }
    assert!(shell(&mut c, "blk write 0 swapped-in").contains("wrote 10 bytes"));
    assert!(std::fs::read(&cimg).unwrap().starts_with(b"swapped-in\0"));
    drop(c);
    assert_eq!(d.stop(), 0);
}

#[test]
fn the_originals_conf_file_and_sigusr1() {
    let fleet = Fleet::start(1);
    let dir = fleet.root().join("srv");
    let one = image(&dir, "one.img", 1);
    let two = image(&dir, "two.img", 2);
    let conf = fleet.root().join("etc/mpss/mpssd000.conf");
    std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
    std::fs::write(
        &conf,
        format!("# the original's\nVIRTBLK_BACKEND={}\n", one.display()),
    )
    .unwrap();
    let d = Daemon::start(fleet.root(), &[]);
    d.wait_log(&format!("mic0: disk {} (16384 sectors, from ", one.display()));
    boot(&fleet, &d);
    let mut c = console(&d);
    disk_info(&mut c);
    assert!(shell(&mut c, "blk read 0 1").contains("01 01 01 01"));
    // The file names another image; SIGUSR1 re-reads it, as the original.
    std::fs::write(&conf, format!("VIRTBLK_BACKEND={}\n", two.display())).unwrap();
    let mut ev = d.events();
    d.signal(nix::sys::signal::Signal::SIGUSR1);
    wait_event(
        &mut ev,
        "the disk back",
        |e| matches!(&e.kind, EventKind::DevicesAdded { devices } if devices == &["block"]),
    );
    let start = std::time::Instant::now();
    while !shell(&mut c, "blk read 0 1").contains("02 02 02 02") {
        assert!(start.elapsed() < HANG, "the card never read the new image");
    }
    let st = d.client().card_status(0).unwrap();
    let blk = st.devices.iter().find(|x| x.kind == "block").unwrap();
    assert_eq!(blk.target, two.to_str().unwrap());
    drop(c);
    assert_eq!(d.stop(), 0);
}

/// Where [`emulator_process`] serves its card.
const EMU_ROOT: &str = "MPSSD_TEST_EMULATOR_ROOT";

/// The emulator of [`acknowledged_writes_survive_kill_9_of_micemu`], run
/// by it as a process of its own (this test binary again) so that it can
/// be killed: one card under `$MPSSD_TEST_EMULATOR_ROOT`, until killed.
#[test]
#[ignore = "the emulator process of acknowledged_writes_survive_kill_9_of_micemu, run by it"]
fn emulator_process() {
    let root = std::env::var_os(EMU_ROOT).expect("run by acknowledged_writes_survive_kill_9_of_micemu");
    let _inst = micemu::Instance::start(
        Path::new(&root),
        micemu::Config {
            cards: 1,
            timing: micemu::Timing::FAST,
            memory: 1 << 30,
            ..Default::default()
        },
    )
    .unwrap();
    println!("micemu-ready");
    loop {
        std::thread::park();
    }
}

/// Unmounts what a killed emulator left mounted under `root`.
fn unmount_under(root: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for m in mounts.lines().filter_map(|l| l.split(' ').nth(4)) {
        if Path::new(m).starts_with(root) {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

#[test]
fn acknowledged_writes_survive_kill_9_of_micemu() {
    let root = tempfile::tempdir().unwrap();
    let images = tempfile::tempdir().unwrap();
    let mut emu = Emulator(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "emulator_process",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(EMU_ROOT, root.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
        root.path().to_owned(),
    );
    // TIMEOUT: the child's own (it panics, so its stdout closes, if it
    // cannot start). libtest puts the line after its "test … ".
    let ready = BufReader::new(emu.0.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .any(|l| l.ends_with("micemu-ready"));
    assert!(ready, "the emulator process did not start");
    let img = image(images.path(), "mic0.img", 0);
    let cfg = root.path().join("etc/mpss/mpssd.toml");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    std::fs::write(
        &cfg,
        format!("[cards.mic0.block]\nimage = \"{}\"\n", img.display()),
    )
    .unwrap();
    let d = Daemon::start(root.path(), &[]);
    let mut ev = d.events();
    let mic = libmic::MicRoot::new(root.path());
    let card = mic.card_by_id(0);
    card.boot_with(&libmic::BootRequest::defaults_for(&card), Some(&mic.system_map()))
        .unwrap();
    card.wait_os_up(Some(HANG)).unwrap();
    wait_event(&mut ev, "running", to_state(0, S::Running));
    let mut c = console(&d);
    disk_info(&mut c);
    let out = shell(&mut c, "blk fill 5");
    assert!(out.contains(", flushed"), "{out}");
    // The emulator dies the hard way, with the card and its rings.
    emu.kill9();
    assert_eq!(
        sha256sum(&img),
        pattern_sha256(images.path(), 5),
        "what the card was told is written is in the image"
    );
    drop(c);
    d.kill9();
}

/// The emulator process: killed (and what it mounted unmounted) when
/// dropped, also if the test fails.
struct Emulator(std::process::Child, PathBuf);

impl Emulator {
    fn kill9(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.0.wait();
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.kill9();
        unmount_under(&self.1);
    }
}
