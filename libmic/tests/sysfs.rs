//! The sysfs/debugfs client against fake roots made of plain files.
//!
//! Poll-based waits need a real sysfs or micemu (plain files do not support
//! `POLLPRI`); their timeout and re-read paths are unit-tested in `wait.rs`.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libmic::attrs::{Attr, DebugFile};
use libmic::{BootMode, Card, Error, MicRoot, MicState, MicStatus};
use tempfile::TempDir;

/// A root with `sys/class/mic/micN` for each id, every attribute filled in
/// as a freshly loaded driver shows it.
struct FakeRoot {
    dir: TempDir,
    root: MicRoot,
}

impl FakeRoot {
    fn new(ids: &[u32]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = MicRoot::new(dir.path());
        fs::create_dir_all(root.sysfs_class_dir()).unwrap();
        let me = Self { dir, root };
        for &id in ids {
            me.add_card(id);
        }
        me
    }

    fn add_card(&self, id: u32) -> Card {
        let card = self.root.card_by_id(id);
        fs::create_dir_all(card.sysfs_dir()).unwrap();
        fs::create_dir_all(card.debugfs_dir()).unwrap();
        for (attr, v) in [
            (Attr::Family, "x100\n"),
            (Attr::Stepping, "C0\n"),
            (Attr::State, "offline\n"),
            (Attr::ShutdownStatus, "nop\n"),
            (Attr::Cmdline, ""),
            (Attr::Firmware, ""),
            (Attr::Ramdisk, ""),
            (Attr::Bootmode, ""),
            (Attr::LogBufAddr, "(null)\n"),
            (Attr::LogBufLen, "(null)\n"),
            (Attr::Ipaddr, ""),
        ] {
            fs::write(card.attr_path(attr), v).unwrap();
        }
        for (f, v) in [
            (DebugFile::PostCode, "3C\n"),
            (DebugFile::Smpt, "MIC 0 |SMPT entry| SW DMA addr RefCount\n"),
            (DebugFile::Dp, "Bootparam: magic 0x4d4943\n"),
            (DebugFile::LogBuf, ""),
        ] {
            fs::write(card.debug_path(f), v).unwrap();
        }
        card
    }

    fn put(card: &Card, attr: Attr, v: &str) {
        fs::write(card.attr_path(attr), v).unwrap();
    }

    fn get(card: &Card, attr: Attr) -> String {
        fs::read_to_string(card.attr_path(attr)).unwrap()
    }
}

type Reader = fn(&Card) -> libmic::Result<()>;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn cards_sorted_numerically_and_only_mic_n() {
    let f = FakeRoot::new(&[10, 0, 2]);
    let class = f.root.sysfs_class_dir();
    for junk in ["scif", "mic", "micro", "mic1a", "mic-3", "mic+4"] {
        fs::create_dir(class.join(junk)).unwrap();
    }
    fs::write(class.join("mic_notes"), "").unwrap();
    let cards = f.root.cards().unwrap();
    let ids: Vec<u32> = cards.iter().map(Card::id).collect();
    assert_eq!(ids, [0, 2, 10]);
    let names: Vec<&str> = cards.iter().map(Card::name).collect();
    assert_eq!(names, ["mic0", "mic2", "mic10"]);
    assert_eq!(cards[2].sysfs_dir(), class.join("mic10"));
    assert_eq!(
        cards[2].debugfs_dir(),
        f.dir.path().join("sys/kernel/debug/mic_host/mic10")
    );
    assert_eq!(cards[2].dev_node(), f.dir.path().join("dev/mic10"));
}

#[test]
fn empty_class_dir_means_no_cards() {
    let f = FakeRoot::new(&[]);
    assert!(f.root.cards().unwrap().is_empty());
    match f.root.card("0") {
        Err(Error::NoSuchCard { known, .. }) => assert!(known.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn select_by_name_or_number() {
    let f = FakeRoot::new(&[0, 2, 10]);
    assert_eq!(f.root.card("mic2").unwrap().id(), 2);
    assert_eq!(f.root.card("10").unwrap().name(), "mic10");
    assert_eq!(f.root.select(None).unwrap().len(), 3);
    assert_eq!(f.root.select(Some("mic0")).unwrap()[0].id(), 0);
    for bad in ["mic3", "3", "banana", "", "mic", "-1", "mic02x"] {
        match f.root.card(bad) {
            Err(e @ Error::NoSuchCard { .. }) => {
                let Error::NoSuchCard { name, known } = &e else {
                    unreachable!()
                };
                assert_eq!(name, bad);
                assert_eq!(known, &["mic0", "mic2", "mic10"]);
                assert!(e.to_string().contains("known cards: mic0, mic2, mic10"), "{e}");
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[test]
fn driver_absent() {
    let dir = tempfile::tempdir().unwrap();
    let root = MicRoot::new(dir.path());
    let e = root.cards().unwrap_err();
    match &e {
        Error::DriverAbsent { looked_in } => {
            assert_eq!(looked_in, &dir.path().join("sys/class/mic"));
        }
        other => panic!("{other:?}"),
    }
    let msg = e.to_string();
    assert!(msg.contains("mic_host driver is not loaded"), "{msg}");
    assert!(msg.contains("micemu --root DIR"), "{msg}");
    assert!(matches!(root.card("mic0"), Err(Error::DriverAbsent { .. })));
}

#[test]
fn root_from_flag() {
    let r = MicRoot::from_env_or(Some(PathBuf::from("/some/where")));
    assert_eq!(r.path(), Path::new("/some/where"));
    assert_eq!(r.firmware_dir(), Path::new("/some/where/lib/firmware"));
    assert_eq!(
        r.system_map(),
        Path::new("/some/where/lib/firmware/mic/System.map")
    );
}

#[test]
fn typed_readers_fresh_card() {
    let f = FakeRoot::new(&[0]);
    let c = f.root.card("mic0").unwrap();
    assert_eq!(c.state().unwrap(), MicState::Offline);
    assert_eq!(c.shutdown_status().unwrap(), MicStatus::Nop);
    assert_eq!(c.family().unwrap(), "x100");
    assert_eq!(c.stepping().unwrap(), "C0");
    assert_eq!(c.cmdline().unwrap(), None);
    assert_eq!(c.firmware().unwrap(), None);
    assert_eq!(c.ramdisk().unwrap(), None);
    assert_eq!(c.bootmode().unwrap(), None);
    assert_eq!(c.log_buf_addr().unwrap(), None);
    assert_eq!(c.log_buf_len().unwrap(), None);
    assert_eq!(c.ipaddr().unwrap(), None);
    let info = c.info().unwrap();
    assert_eq!(info.state, MicState::Offline);
    assert_eq!(info.shutdown_status, Some(MicStatus::Nop));
    assert!(info.problems.is_empty(), "{:?}", info.problems);
}

#[test]
fn typed_readers_configured_card() {
    let f = FakeRoot::new(&[1]);
    let c = f.root.card("1").unwrap();
    let cmdline = "clocksource=tsc highres=off nohz=off cpufreq_on;corec6_off;pc3_off;pc6_off \
                   ifcfg=static;address,172.31.1.1;netmask,255.255.255.0";
    FakeRoot::put(&c, Attr::State, "online\n");
    FakeRoot::put(&c, Attr::ShutdownStatus, "poweroff\n");
    FakeRoot::put(&c, Attr::Cmdline, &format!("{cmdline}\n"));
    FakeRoot::put(&c, Attr::Firmware, "mic/uos.img\n");
    FakeRoot::put(&c, Attr::Ramdisk, "mic/mic1.image\n");
    FakeRoot::put(&c, Attr::Bootmode, "linux\n");
    FakeRoot::put(&c, Attr::LogBufAddr, "ffffffff81e4c3a0\n");
    FakeRoot::put(&c, Attr::LogBufLen, "0xffffffff81c4a2d0\n");
    FakeRoot::put(&c, Attr::Ipaddr, "172.31.1.1\n");

    let info = c.info().unwrap();
    assert_eq!(info.id, 1);
    assert_eq!(info.name, "mic1");
    assert_eq!(info.state, MicState::Online);
    assert_eq!(info.shutdown_status, Some(MicStatus::PowerOff));
    assert_eq!(info.family.as_deref(), Some("x100"));
    assert_eq!(info.stepping.as_deref(), Some("C0"));
    assert_eq!(info.cmdline.as_deref(), Some(cmdline));
    assert_eq!(info.firmware.as_deref(), Some("mic/uos.img"));
    assert_eq!(info.ramdisk.as_deref(), Some("mic/mic1.image"));
    assert_eq!(info.bootmode, Some(BootMode::Linux));
    assert_eq!(info.log_buf_addr, Some(0xffffffff81e4c3a0));
    assert_eq!(info.log_buf_len, Some(0xffffffff81c4a2d0));
    assert_eq!(info.ipaddr, Some(Ipv4Addr::new(172, 31, 1, 1)));
    assert!(info.problems.is_empty(), "{:?}", info.problems);

    FakeRoot::put(&c, Attr::Bootmode, "elf\n");
    assert_eq!(c.bootmode().unwrap(), Some(BootMode::Elf));
    FakeRoot::put(&c, Attr::LogBufAddr, "0000000000000000\n");
    assert_eq!(c.log_buf_addr().unwrap(), None);
}

#[test]
fn ipaddr_falls_back_to_cmdline_on_a_3_13_kernel() {
    let f = FakeRoot::new(&[0]);
    let c = f.root.card("0").unwrap();
    fs::remove_file(c.attr_path(Attr::Ipaddr)).unwrap();
    assert_eq!(c.ipaddr().unwrap(), None);
    FakeRoot::put(
        &c,
        Attr::Cmdline,
        "quiet ifcfg=static;address,172.31.0.1;netmask,255.255.255.0\n",
    );
    assert_eq!(c.ipaddr().unwrap(), Some(Ipv4Addr::new(172, 31, 0, 1)));
    let info = c.info().unwrap();
    assert_eq!(info.ipaddr, Some(Ipv4Addr::new(172, 31, 0, 1)));
    assert!(info.problems.is_empty());
}

#[test]
fn bad_contents_are_parse_errors_not_panics() {
    let f = FakeRoot::new(&[0]);
    let c = f.root.card("0").unwrap();
    let cases: [(Attr, &str, Reader); 6] = [
        (Attr::State, "banana\n", |c| c.state().map(drop)),
        (Attr::ShutdownStatus, "exploded\n", |c| {
            c.shutdown_status().map(drop)
        }),
        (Attr::Bootmode, "bsd\n", |c| c.bootmode().map(drop)),
        (Attr::LogBufAddr, "banana\n", |c| c.log_buf_addr().map(drop)),
        (Attr::LogBufLen, "0x\n", |c| c.log_buf_len().map(drop)),
        (Attr::Ipaddr, "300.1.1.1\n", |c| c.ipaddr().map(drop)),
    ];
    for (attr, bad, read) in cases {
        let good = FakeRoot::get(&c, attr);
        FakeRoot::put(&c, attr, bad);
        match read(&c) {
            Err(e @ Error::Parse { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(attr.file_name()), "{msg}");
                assert!(msg.contains("unexpected contents"), "{msg}");
            }
            other => panic!("{attr}: {other:?}"),
        }
        FakeRoot::put(&c, attr, &good);
    }
    // Invalid UTF-8 and huge hostile contents: an error with a short message.
    fs::write(c.attr_path(Attr::State), b"\xff\xfe\x00").unwrap();
    assert!(matches!(c.state(), Err(Error::Parse { .. })));
    FakeRoot::put(&c, Attr::State, &"x".repeat(10_000));
    let msg = c.state().unwrap_err().to_string();
    assert!(msg.len() < 300, "{}", msg.len());
}

#[test]
fn info_survives_broken_optional_attributes() {
    let f = FakeRoot::new(&[0]);
    let c = f.root.card("0").unwrap();
    fs::remove_file(c.attr_path(Attr::Firmware)).unwrap();
    FakeRoot::put(&c, Attr::Bootmode, "bsd\n");
    FakeRoot::put(&c, Attr::ShutdownStatus, "???\n");
    let info = c.info().unwrap();
    assert_eq!(info.state, MicState::Offline);
    assert_eq!(info.firmware, None);
    assert_eq!(info.bootmode, None);
    assert_eq!(info.shutdown_status, None);
    assert_eq!(info.family.as_deref(), Some("x100"));
    let attrs: Vec<Attr> = info.problems.iter().map(|(a, _)| *a).collect();
    assert_eq!(attrs, [Attr::ShutdownStatus, Attr::Firmware, Attr::Bootmode]);

    // state is the one attribute a snapshot cannot do without.
    FakeRoot::put(&c, Attr::State, "banana\n");
    assert!(matches!(c.info(), Err(Error::Parse { .. })));
    fs::remove_file(c.attr_path(Attr::State)).unwrap();
    let e = c.info().unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
}

#[test]
fn writes_land_verbatim() {
    let f = FakeRoot::new(&[0]);
    let c = f.root.card("mic0").unwrap();
    c.set_bootmode(BootMode::Linux).unwrap();
    assert_eq!(FakeRoot::get(&c, Attr::Bootmode), "linux");
    c.set_bootmode(BootMode::Elf).unwrap();
    assert_eq!(FakeRoot::get(&c, Attr::Bootmode), "elf");
    c.set_firmware("mic/uos.img").unwrap();
    assert_eq!(FakeRoot::get(&c, Attr::Firmware), "mic/uos.img");
    c.set_ramdisk(&c.default_ramdisk()).unwrap();
    assert_eq!(FakeRoot::get(&c, Attr::Ramdisk), "mic/mic0.image");
    c.set_cmdline("quiet ifcfg=static;address,172.31.0.1;netmask,255.255.255.0")
        .unwrap();
    assert_eq!(
        FakeRoot::get(&c, Attr::Cmdline),
        "quiet ifcfg=static;address,172.31.0.1;netmask,255.255.255.0"
    );
    // An empty value clears: sysfs ignores zero-length writes, so "\n".
    c.set_cmdline("").unwrap();
    assert_eq!(FakeRoot::get(&c, Attr::Cmdline), "\n");
    assert_eq!(c.cmdline().unwrap(), None);
    c.set_log_buf_addr(0xffffffff81e4c3a0).unwrap();
    assert_eq!(FakeRoot::get(&c, Attr::LogBufAddr), "ffffffff81e4c3a0");
    assert_eq!(c.log_buf_addr().unwrap(), Some(0xffffffff81e4c3a0));
    c.set_log_buf_len(0x1234).unwrap();
    assert_eq!(FakeRoot::get(&c, Attr::LogBufLen), "1234");

    // state held "offline\n": each write replaces it whole.
    c.boot().unwrap();
    assert_eq!(FakeRoot::get(&c, Attr::State), "boot");
    c.shutdown().unwrap();
    assert_eq!(FakeRoot::get(&c, Attr::State), "shutdown");
    c.reset().unwrap();
    assert_eq!(FakeRoot::get(&c, Attr::State), "reset");
}

#[test]
fn invalid_values_refused_before_the_driver() {
    let f = FakeRoot::new(&[0]);
    let c = f.root.card("0").unwrap();
    for bad in ["a\nb", "a\0b", &"x".repeat(2001)] {
        assert!(
            matches!(
                c.set_cmdline(bad),
                Err(Error::InvalidValue {
                    attr: Attr::Cmdline,
                    ..
                })
            ),
            "{bad:?}"
        );
    }
    assert_eq!(FakeRoot::get(&c, Attr::Cmdline), "");
}

#[test]
fn firmware_names_may_not_escape() {
    let f = FakeRoot::new(&[0]);
    let c = f.root.card("0").unwrap();
    assert_eq!(
        f.root.resolve_firmware("mic/uos.img").unwrap(),
        f.dir.path().join("lib/firmware/mic/uos.img")
    );
    for bad in ["../../etc/shadow", "/etc/shadow", "mic/../../x", "", ".."] {
        assert!(
            matches!(f.root.resolve_firmware(bad), Err(Error::BadFirmwareName { .. })),
            "{bad:?}"
        );
        assert!(matches!(c.set_firmware(bad), Err(Error::BadFirmwareName { .. })));
        assert!(matches!(c.set_ramdisk(bad), Err(Error::BadFirmwareName { .. })));
    }
    assert_eq!(FakeRoot::get(&c, Attr::Firmware), "");
    assert_eq!(FakeRoot::get(&c, Attr::Ramdisk), "");
}

#[test]
fn driver_errno_becomes_rejected_with_meaning() {
    // /dev/full fails every write with ENOSPC: a stand-in for a driver
    // store method returning an error.
    let f = FakeRoot::new(&[0]);
    let c = f.root.card("0").unwrap();
    for attr in [Attr::State, Attr::Cmdline] {
        fs::remove_file(c.attr_path(attr)).unwrap();
        std::os::unix::fs::symlink("/dev/full", c.attr_path(attr)).unwrap();
    }
    match c.boot() {
        Err(
            e @ Error::Rejected {
                attr: Attr::State,
                errno: libc::ENOSPC,
                ..
            },
        ) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with("mic0: writing \"boot\" to state was rejected: "),
                "{msg}"
            );
            assert!(msg.contains("memory aperture"), "{msg}");
            assert!(msg.ends_with("(ENOSPC)"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    match c.set_cmdline("quiet") {
        Err(Error::Rejected {
            card,
            attr: Attr::Cmdline,
            value,
            meaning,
            ..
        }) => {
            assert_eq!(card, "mic0");
            assert_eq!(value, "quiet");
            assert_eq!(meaning, "no space left on device");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn permission_denied_has_a_hint() {
    use std::os::unix::fs::PermissionsExt as _;
    if is_root() {
        // root bypasses file modes; nothing to observe (the errno mapping
        // itself is unit-tested in error.rs).
        return;
    }
    let fake = FakeRoot::new(&[0]);
    let card = fake.root.card("0").unwrap();
    let state = card.attr_path(Attr::State);
    fs::set_permissions(&state, fs::Permissions::from_mode(0o444)).unwrap();
    match card.boot() {
        Err(e @ Error::PermissionDenied { .. }) => {
            assert!(e.to_string().contains("run as root"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    let post = card.debug_path(DebugFile::PostCode);
    fs::set_permissions(&post, fs::Permissions::from_mode(0o000)).unwrap();
    match card.post_code() {
        Err(e @ Error::PermissionDenied { .. }) => {
            assert!(e.to_string().contains("debugfs"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn debugfs_readers() {
    let f = FakeRoot::new(&[0]);
    let c = f.root.card("0").unwrap();
    assert_eq!(c.post_code().unwrap().as_deref(), Some("3C"));
    fs::write(c.debug_path(DebugFile::PostCode), b"\x01\xff").unwrap();
    assert_eq!(c.post_code().unwrap().as_deref(), Some("\\x01\\xff"));
    fs::write(c.debug_path(DebugFile::PostCode), "").unwrap();
    assert_eq!(c.post_code().unwrap(), None);
    assert!(c.smpt_raw().unwrap().starts_with("MIC 0 |SMPT entry|"));
    assert!(c.dp_raw().unwrap().starts_with("Bootparam"));
    assert_eq!(c.smpt().unwrap(), libmic::SmptSummary::default());
    assert_eq!(c.dp().unwrap().field("magic"), Some("0x4d4943"));
    fs::write(c.debug_path(DebugFile::Dp), b"Bootparam: magic \x1b[31m\xff\n").unwrap();
    assert_eq!(c.dp().unwrap().field("magic"), Some("\\x1b[31m\u{fffd}"));
    assert!(c.log_buf_raw().unwrap().is_empty());
    fs::write(c.debug_path(DebugFile::LogBuf), b"\x00\x01log\xff").unwrap();
    assert_eq!(c.log_buf_raw().unwrap(), b"\x00\x01log\xff");
}

#[test]
fn debugfs_absent() {
    let f = FakeRoot::new(&[0]);
    let c = f.root.card("0").unwrap();
    fs::remove_dir_all(f.root.debugfs_dir()).unwrap();
    let e = c.post_code().unwrap_err();
    assert!(matches!(e, Error::DebugfsAbsent { .. }), "{e:?}");
    assert!(e.to_string().contains("debugfs is not mounted"), "{e}");
}

const SYSTEM_MAP: &str = "\
ffffffff81000000 T _text
ffffffff81c4a2d0 d log_buf_len
ffffffff81c4a2d8 d log_buf_len_lvl
ffffffff81e4c3a0 b __log_buf
";

#[test]
fn log_buf_from_system_map() {
    let f = FakeRoot::new(&[0]);
    let c = f.root.card("0").unwrap();
    let map = f.root.system_map();
    fs::create_dir_all(map.parent().unwrap()).unwrap();
    fs::write(&map, SYSTEM_MAP).unwrap();
    assert_eq!(
        c.set_log_buf_from_sysmap(&map).unwrap(),
        (0xffffffff81e4c3a0, 0xffffffff81c4a2d0)
    );
    assert_eq!(FakeRoot::get(&c, Attr::LogBufAddr), "ffffffff81e4c3a0");
    assert_eq!(FakeRoot::get(&c, Attr::LogBufLen), "ffffffff81c4a2d0");
}

#[test]
fn system_map_missing_symbol() {
    let f = FakeRoot::new(&[0]);
    let c = f.root.card("0").unwrap();
    let map = f.dir.path().join("System.map");
    fs::write(&map, "ffffffff81e4c3a0 b __log_buf\n").unwrap();
    match c.set_log_buf_from_sysmap(&map) {
        Err(e @ Error::SystemMap { .. }) => {
            let Error::SystemMap { path, missing } = &e else {
                unreachable!()
            };
            assert_eq!(path, &map);
            assert_eq!(missing, &["log_buf_len"]);
            assert!(e.to_string().contains("log_buf_len not found"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // Nothing written on failure.
    assert_eq!(FakeRoot::get(&c, Attr::LogBufAddr), "(null)\n");

    let e = c.set_log_buf_from_sysmap(&f.dir.path().join("nope")).unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
}

#[test]
fn lifecycle_waits_end_at_once_when_there_is_nothing_to_wait_for() {
    let f = FakeRoot::new(&[0]);
    let c = f.root.card("0").unwrap();
    // Offline: nothing to reset, nothing to wait for.
    assert_eq!(
        c.reset_and_wait(Some(Duration::ZERO)).unwrap(),
        libmic::ResetEnd::AlreadyOffline
    );
    assert_eq!(
        c.wait_shutdown_status(Some(Duration::ZERO)).unwrap(),
        (MicState::Offline, MicStatus::Nop)
    );
    let stopped = c
        .stop(Some(Duration::ZERO), |s| panic!("no step expected, got {s:?}"))
        .unwrap();
    assert_eq!(
        stopped,
        libmic::Stopped {
            shutdown: None,
            reset: false
        }
    );
    // The card OS reported its shutdown.
    FakeRoot::put(&c, Attr::State, "shutting_down\n");
    FakeRoot::put(&c, Attr::ShutdownStatus, "halted\n");
    assert_eq!(
        c.wait_shutdown_status(None).unwrap(),
        (MicState::ShuttingDown, MicStatus::Halted)
    );
}

#[test]
fn shutdown_status_wait_times_out() {
    let f = FakeRoot::new(&[0]);
    let c = f.root.card("0").unwrap();
    FakeRoot::put(&c, Attr::State, "shutting_down\n");
    let e = c
        .wait_shutdown_status(Some(Duration::from_millis(120)))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Timeout {
                last_state: MicState::ShuttingDown,
                ..
            }
        ),
        "{e:?}"
    );
}
