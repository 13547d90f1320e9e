//! End-to-end: the card OS's virtio devices against a live in-process
//! micemu, with `dev/micN` files as the host (what mpssd does): the console
//! and its shell, the network stack, the disk, and the devices' lives
//! (hot-plug, config change, removal, resets, shutdown, panic).

mod blk;
mod console;
mod host;
mod hostile;
mod lifecycle;
mod net;
mod socket;
