//! Intel MIC X100 driver logic shared by the Rust-for-Linux modules, `micemu`
//! and the host tests.
//!
//! `no_std`, no `alloc`, no dependencies, no `unsafe`: everything here talks to
//! hardware only through the traits in [`hw`], so the same files compile into
//! a kernel module and into ordinary unit tests.
#![no_std]
#![forbid(unsafe_code)]

pub mod abi;
pub mod hw;
pub mod printk;
