//! Project automation behind `cargo xtask`: the checks CI runs ([`ci`]),
//! the bounded fuzzing runs ([`fuzz`]), the man pages and shell completions
//! generated from the tools' clap definitions ([`generate`]), and the
//! Rust-for-Linux tier ([`kernel`]).

use std::path::{Path, PathBuf};

pub mod bash_cards;
pub mod ci;
pub mod fuzz;
pub mod generate;
pub mod kernel;

/// The workspace root (the directory holding the root Cargo.toml).
#[must_use]
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}
