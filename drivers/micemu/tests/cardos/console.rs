//! hvc0: a console added before boot or while the card runs, its shell,
//! its line discipline and its bounded output.

use libmic::MicState;

use crate::host::{Console, Fleet};

#[test]
fn a_console_added_before_boot_runs_a_shell() {
    let fleet = Fleet::start(1);
    let mut con = Console::add(&fleet, 0);
    fleet.boot(0);
    con.dev.wait_driver_ok();
    let banner = con.expect(&con.prompt());
    assert!(banner.contains("coprocessor mic0 (hvc0)"), "{banner:?}");
    let out = con.run("uname -a");
    assert_eq!(
        out,
        "Linux mic0 3.10.0-micemu #1 SMP Tue Nov 24 12:00:00 UTC 2026 k1om GNU/Linux\r\n"
    );
    let log = fleet.wait_log(0, "hvc0 registered");
    assert!(
        log.iter()
            .any(|l| l == "virtio_console virtio0: hvc0 registered (32 receive buffers)"),
        "{log:#?}"
    );
    // The command line the host wrote, and the kernel log of the card.
    assert!(
        con.run("cat /proc/cmdline")
            .contains("ifcfg=static;address,172.31.0.1")
    );
    let dmesg = con.run("dmesg");
    assert!(dmesg.contains("] Linux version 3.10.0-micemu"), "{dmesg}");
    assert!(dmesg.contains("] Run /sbin/init as init process\r\n"), "{dmesg}");
    assert!(con.run("uptime").contains(" up 0 min,  1 user"));
    assert_eq!(con.run("nonsense"), "sh: nonsense: not found\r\n");
}

#[test]
fn the_line_discipline_edits_interrupts_and_logs_out() {
    let fleet = Fleet::start(1);
    let mut con = Console::add(&fleet, 0);
    fleet.boot(0);
    con.expect(&con.prompt());
    // Backspace: "unamx" corrected to "uname", echoed with erases.
    con.dev.send(b"unamx\x7fe\r");
    let out = con.expect(&con.prompt());
    assert!(out.starts_with("unamx\x08 \x08e\r\nLinux\r\n"), "{out:?}");
    // ctrl-C drops the line; ctrl-D logs out to a fresh login.
    con.dev.send(b"echo never\x03");
    let out = con.expect(&con.prompt());
    assert_eq!(out, format!("echo never^C\r\n{}", con.prompt()));
    con.dev.send(b"\x04");
    let out = con.expect(&con.prompt());
    assert!(
        out.starts_with("logout\r\n\r\nIntel(R) Xeon Phi(TM) coprocessor mic0 (hvc0)"),
        "{out:?}"
    );
    // Escape sequences (arrow keys) and control bytes are swallowed,
    // never echoed.
    con.dev.send(b"echo \x1b[Aa\x1b[Db\x07\r");
    let out = con.expect(&con.prompt());
    assert_eq!(out, format!("echo ab\r\nab\r\n{}", con.prompt()));
}

#[test]
fn data_from_the_host_is_shown_escaped() {
    let fleet = Fleet::start(1);
    let mut con = Console::add(&fleet, 0);
    fleet.boot_with(0, " title=\u{1b}]0;pwned\u{7} clear=\u{1b}[2J");
    con.expect(&con.prompt());
    let out = con.run("cat /proc/cmdline");
    assert!(
        out.ends_with(" title=\\x1b]0;pwned\\x07 clear=\\x1b[2J\r\n"),
        "{out:?}"
    );
    assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");
}

#[test]
fn a_console_hot_added_to_a_running_card_gets_a_login() {
    let fleet = Fleet::start(2);
    fleet.boot(1);
    fleet.wait_log(1, libmic::OS_UP_MARKER);
    let mut con = Console::add(&fleet, 1);
    con.dev.wait_driver_ok();
    con.expect("coprocessor mic1 (hvc0)");
    con.expect(&con.prompt());
    assert!(con.run("uname -n").starts_with("mic1"));
    // A second console is hvc1, with its own shell.
    let mut second = Console::add(&fleet, 1);
    second.expect("coprocessor mic1 (hvc1)");
    second.expect(&second.prompt());
    assert_eq!(second.run("echo two"), "two\r\n");
    assert_eq!(con.run("echo one"), "one\r\n");
    assert_eq!(fleet.read(0, "state"), "offline\n");
}

#[test]
fn output_the_host_does_not_read_is_bounded_and_counted() {
    let fleet = Fleet::start(1);
    let mut con = Console::add(&fleet, 0);
    fleet.boot(0);
    con.expect(&con.prompt());
    // Large output arrives whole when the host reads it.
    let cpu = con.run("cat /proc/cpuinfo");
    assert_eq!(cpu.matches("processor\t: ").count(), 244);
    // The host stops reading: eight more are far more than the hold
    // buffer; the card drops the excess and says so.
    for _ in 0..8 {
        con.dev.send(b"cat /proc/cpuinfo\r");
    }
    fleet.wait_log(0, "the host is not reading the console");
    // The host reads again (and asks for a sign of life until it gets
    // one): what it finds held is bounded, and the shell still answers.
    let mut read = 0;
    let start = std::time::Instant::now();
    loop {
        let bytes = con.dev.drain(1);
        read += bytes.len();
        con.out.push_str(&String::from_utf8_lossy(&bytes));
        if con.out.contains("alive\r\n") {
            break;
        }
        assert!(start.elapsed() < crate::host::WAIT, "the shell never answered");
        con.dev.send(b"echo alive\r");
        con.dev.wait_wake(std::time::Duration::from_millis(20));
    }
    assert!(
        read < (256 << 10) + (64 << 10),
        "{read} bytes held for a host that did not read"
    );
    assert!(
        read < 8 * cpu.len() / 2,
        "{read} of {} bytes printed",
        8 * cpu.len()
    );
    assert_eq!(fleet.read(0, "state"), "online\n");
    fleet.wait_state(0, MicState::Online);
}

#[test]
fn seq_prints_as_fast_as_the_host_reads_and_loses_nothing() {
    let fleet = Fleet::start(1);
    let mut con = Console::add(&fleet, 0);
    fleet.boot(0);
    con.expect(&con.prompt());
    // Far more than the hold buffer: printed as the host reads it, every
    // line there, in order, then the prompt.
    let out = con.run("seq 200000");
    let lines: Vec<&str> = out.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), 200_000);
    assert!(
        lines.iter().zip(1u64..).all(|(l, n)| l.parse() == Ok(n)),
        "a line missing or out of order"
    );
    assert_eq!(con.run("seq 7 9"), "7\r\n8\r\n9\r\n");
    assert_eq!(con.run("seq"), "seq: usage: seq [FIRST] LAST\r\n");
    // ctrl-C stops one that would run for ever, and the shell answers.
    con.dev.send(b"seq 18446744073709551615\r");
    con.expect("\r\n100000\r\n");
    con.dev.send(b"\x03");
    con.expect(&format!("^C\r\n{}", con.prompt()));
    assert_eq!(con.run("echo after"), "after\r\n");
    assert!(
        !fleet.log(0).iter().any(|l| l.contains("not reading the console")),
        "output dropped"
    );
}
