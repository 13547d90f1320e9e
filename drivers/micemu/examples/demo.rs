//! `cargo run -p micemu --example demo [-- --cards N]`: an emulated fleet
//! under a temporary root, booted the way `micctrl -b` and mpssd did
//! (System.map → log_buf_addr/len, an mpssd-style cmdline, bootmode,
//! firmware, ramdisk, then `boot`) through the mounted sysfs like any other
//! tool, printing state changes and card kernel log lines as they come.
//! Ctrl-C stops it and unmounts.

use std::time::Duration;

use libmic::klog::{LogEntry, LogFollower};
use libmic::{BootRequest, MicRoot, wait_any};
use micemu::{Config, Instance, Timing};
use nix::sys::signal::{SigSet, Signal};

/// How often the card logs are looked at (they have no change notification).
const LOG_INTERVAL: Duration = Duration::from_millis(200);

fn main() -> anyhow::Result<()> {
    let cards = std::env::args()
        .skip_while(|a| a != "--cards")
        .nth(1)
        .map_or(Ok(4), |n| n.parse::<u32>())?;
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block()?;
    let dir = tempfile::tempdir()?;
    let config = Config {
        cards,
        timing: Timing::REALISTIC,
        ..Config::default()
    };
    let instance = Instance::start(dir.path(), config)?;
    println!("micemu demo: {cards} cards under {}", dir.path().display());
    let root = MicRoot::new(instance.root());
    std::thread::spawn(move || {
        if let Err(e) = demo(&root) {
            eprintln!("micemu demo: {e}");
        }
    });
    signals.wait()?;
    instance.stop()
}

fn demo(root: &MicRoot) -> libmic::Result<()> {
    let cards = root.cards()?;
    let sysmap = root.system_map();
    let mut watchers = cards
        .iter()
        .map(libmic::Card::watch_state)
        .collect::<libmic::Result<Vec<_>>>()?;
    for card in &cards {
        card.boot_with(&BootRequest::defaults_for(card), Some(&sysmap))?;
        println!("{}: boot requested", card.name());
    }
    let mut followers: Vec<LogFollower> = cards.iter().map(|_| LogFollower::new()).collect();
    loop {
        for i in wait_any(&mut watchers, Some(LOG_INTERVAL))? {
            let w = &watchers[i];
            println!("{}: state {}", w.card_name(), w.current().as_str());
        }
        for (card, follower) in cards.iter().zip(&mut followers) {
            let raw = card.log_buf_raw()?;
            for entry in follower.update(&raw) {
                match entry {
                    LogEntry::Record(rec) => println!("{}: {}", card.name(), rec.dmesg_line()),
                    LogEntry::Lost(lost) => println!("{}: ({})", card.name(), lost.describe()),
                    LogEntry::Reset => {}
                }
            }
        }
    }
}
