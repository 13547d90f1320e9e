//! What the end-to-end tests share.

use std::path::Path;

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
