//! What the end-to-end tests share.

#![allow(dead_code, reason = "each test binary uses its part")]

use std::path::Path;

use mictop::demo::mpssd::Mpssd;

/// An emulated fleet of `cards` at fast timing under `dir/root`.
pub(crate) fn fast_fleet(dir: &Path, cards: u32) -> micemu::Instance {
    micemu::Instance::start(
        &dir.join("root"),
        micemu::Config {
            cards,
            timing: micemu::Timing::FAST,
            ..Default::default()
        },
    )
    .expect("starting micemu (needs root and /dev/fuse)")
}

/// mpssd for the fleet under `root` (`cards` of them, each with a disk),
/// as the demo runs it: mictop's binary run as mpssd, in a network
/// namespace of its own. Ready (every card adopted) when this returns.
pub(crate) fn mpssd(root: &Path, cards: u32) -> Mpssd {
    mictop::demo::mpssd::prepare(root, cards, true).expect("mpssd's configuration");
    Mpssd::start(
        Path::new(env!("CARGO_BIN_EXE_mictop")),
        root,
        &root.join("mpssd.log"),
        true,
    )
    .expect("starting mpssd (needs root for its network namespace)")
}
