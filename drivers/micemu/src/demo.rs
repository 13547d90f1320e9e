//! `micemu --demo`: boot every card the way `micctrl -b` and mpssd did
//! (System.map → log_buf_addr/len, an mpssd-style cmdline, bootmode,
//! firmware, ramdisk, then `boot`), through the mounted sysfs like any other
//! tool, and print state changes and card kernel log lines as they come.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use libmic::klog::LogFollower;
use libmic::{BootRequest, MicRoot, wait_any};

/// How often the card logs are looked at (they have no change notification).
const LOG_INTERVAL: Duration = Duration::from_millis(200);

static STOPPING: AtomicBool = AtomicBool::new(false);

/// Tells the demo client the emulator is going away: the errors its reads
/// get from the unmounted tree from now on are expected, not news.
pub fn stop() {
    STOPPING.store(true, Ordering::SeqCst);
}

/// Starts the demo client on its own thread.
pub fn spawn(root: &Path) -> std::io::Result<()> {
    let root = MicRoot::new(root);
    std::thread::Builder::new()
        .name("demo".into())
        .spawn(move || {
            if let Err(e) = demo(&root) {
                if !STOPPING.load(Ordering::SeqCst) {
                    eprintln!("micemu demo: {e}");
                }
            }
        })
        .map(drop)
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
            let update = follower.update(&raw);
            if update.lost {
                println!(
                    "{}: (log records were overwritten before they could be read)",
                    card.name()
                );
            }
            for rec in update.records {
                println!("{}: {}", card.name(), rec.dmesg_line());
            }
        }
    }
}
