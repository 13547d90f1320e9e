// SPDX-License-Identifier: GPL-2.0-only

// The driver core in a kernel crate, `include!`d by each crate root here
// (mic_host, mic_card, kunit): one copy of each file, the same sources
// `cargo test -p mic-core` tests. Parts of it serve only the other side or
// the emulator, and its items are `pub` for those; `#[path]` is relative to
// this file.
#[allow(
    dead_code,
    unreachable_pub,
    unused_attributes,
    unused_imports,
    clippy::wrong_self_convention
)]
#[path = "../core/src/lib.rs"]
mod mic_core;
// The core refers to itself as `crate::...`; make those paths resolve in the
// including crate (so no glue module may share a name with a top-level core
// module: it would shadow it).
#[allow(unused_imports)]
use mic_core::*;
