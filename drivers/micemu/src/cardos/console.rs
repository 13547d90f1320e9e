//! virtio-console on the card (`hvc0`): vq 0 is the card's receive queue
//! (the host writes what is typed into buffers the card keeps posted), vq 1
//! its transmit queue (the card offers what it prints in readable
//! buffers). Input goes through the line discipline to the shell.
//!
//! Output is chunked into [`TX_BUFS`] buffers of [`TX_BUF`] bytes in GDDR;
//! while all of them are with the host, what is printed waits in a hold
//! buffer of [`HOLD`] bytes, and what does not fit is dropped and counted
//! (a host that never reads the console cannot make the card grow).

use std::collections::VecDeque;
use std::fmt::Write as _;

use mic_core::abi::virtio::{VirtioConsoleConfig, console_features, feature};
use mic_core::card::virtio::VirtioError;
use mic_core::card::vring::Buf;
use mic_core::hw::{Memory, Mmio};

use super::memmap::{Arena, Region};
use super::tty::{Tty, onlcr};
use super::virtio::{Io, ProbeError};

/// Receive buffers kept posted.
pub const RX_BUFS: u32 = 32;
/// Bytes per receive buffer.
pub const RX_BUF: u32 = 512;
/// Transmit buffers.
pub const TX_BUFS: u32 = 16;
/// Bytes per transmit buffer.
pub const TX_BUF: u32 = 512;
/// Output held while the host does not drain the transmit queue.
pub const HOLD: usize = 256 << 10;

/// The features the card's driver takes when offered: the size, as
/// Linux's virtio_console does (a config change then tells the tty its
/// window).
#[must_use]
pub fn wanted_features() -> u32 {
    feature(console_features::SIZE)
}

/// The shell's view of its console.
#[derive(Debug, Default)]
pub struct ShellState {
    /// The login banner and first prompt were printed.
    pub started: bool,
    /// A command runs on (ping, disk I/O).
    pub busy: bool,
    /// Lines typed while busy.
    pub queued: VecDeque<String>,
    /// A running `seq`: the next number and the last.
    pub seq: Option<(u64, u64)>,
}

/// Lines typed ahead while a command runs, at most.
pub const TYPE_AHEAD: usize = 16;

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsoleStats {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub dropped: u64,
}

/// The driver of one virtio-console device.
#[derive(Debug)]
pub struct Console {
    name: String,
    rx: Region,
    tx: Region,
    tx_free: Vec<u32>,
    hold: VecDeque<u8>,
    /// Dropping since the hold buffer filled (logged once per episode).
    dropping: bool,
    tty: Tty,
    pub shell: ShellState,
    stats: ConsoleStats,
}

impl Console {
    /// Allocates the buffers; `name` is `hvc0`, ...
    pub fn new(arena: &mut Arena, name: String) -> Result<(Self, Vec<Region>), ProbeError> {
        let rx = arena
            .alloc(u64::from(RX_BUFS * RX_BUF))
            .ok_or(ProbeError::NoMemory)?;
        let Some(tx) = arena.alloc(u64::from(TX_BUFS * TX_BUF)) else {
            arena.free(rx);
            return Err(ProbeError::NoMemory);
        };
        Ok((
            Self {
                name,
                rx,
                tx,
                tx_free: (0..TX_BUFS).rev().collect(),
                hold: VecDeque::new(),
                dropping: false,
                tty: Tty::default(),
                shell: ShellState::default(),
                stats: ConsoleStats::default(),
            },
            vec![rx, tx],
        ))
    }

    /// `hvcN`.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> ConsoleStats {
        self.stats
    }

    fn rx_buf(&self, i: u32) -> Buf {
        Buf {
            addr: self.rx.at(u64::from(i * RX_BUF)),
            len: RX_BUF,
            write: true,
        }
    }

    /// Posts every receive buffer.
    pub fn start<M: Mmio, P: Memory>(&mut self, io: &mut Io<'_, M, P>) -> Result<(), VirtioError> {
        for i in 0..RX_BUFS {
            io.add(0, &[self.rx_buf(i)], i)?;
        }
        io.log(
            6,
            &format!("{} registered ({RX_BUFS} receive buffers)", self.name),
        );
        Ok(())
    }

    /// A config change: the console's size, when the host offers it.
    pub fn config_changed<M: Mmio, P: Memory>(&mut self, io: &mut Io<'_, M, P>) {
        if io.vdev.features() & feature(console_features::SIZE) == 0 {
            io.log(6, &format!("{}: config changed", self.name));
            return;
        }
        let mut raw = [0u8; VirtioConsoleConfig::SIZE];
        let n = usize::from(io.vdev.desc().config_len).min(raw.len());
        if io.vdev.read_config(&io.hw.phys, 0, &mut raw[..n]).is_ok() {
            let c = VirtioConsoleConfig::from_bytes(&raw);
            let (cols, rows) = (c.cols, c.rows);
            io.log(6, &format!("{}: console size {cols}x{rows}", self.name));
        }
    }

    /// Reaps what the host consumed and received (at most `budget` of
    /// each), feeds input to the line discipline, sends held output.
    /// Returns whether more was waiting.
    pub fn service<M: Mmio, P: Memory>(
        &mut self,
        io: &mut Io<'_, M, P>,
        budget: usize,
    ) -> Result<bool, VirtioError> {
        let mut more = io.reap(1, budget, |_, used| {
            self.tx_free.push(used.token);
            Ok(())
        })?;
        let mut buf = vec![0u8; RX_BUF as usize];
        let (mut echo, mut events) = (Vec::new(), Vec::new());
        more |= io.reap(0, budget, |io, used| {
            // pop_used bounds the length by the buffer's size.
            let len = used.len.min(RX_BUF) as usize;
            let at = self.rx_buf(used.token);
            io.hw.phys.read(at.addr, &mut buf[..len])?;
            io.add(0, &[at], used.token)?;
            self.stats.rx_bytes += len as u64;
            self.tty.feed(&buf[..len], &mut echo, &mut events);
            Ok(())
        })?;
        self.write_raw(&echo);
        for e in events {
            io.sink.input.push((io.index, e));
        }
        self.flush(io)?;
        Ok(more)
    }

    /// Prints `text` (`\n` becomes `\r\n`).
    pub fn write(&mut self, text: &str) {
        self.write_raw(&onlcr(text));
    }

    fn write_raw(&mut self, bytes: &[u8]) {
        let room = HOLD.saturating_sub(self.hold.len());
        let take = bytes.len().min(room);
        self.hold.extend(&bytes[..take]);
        let lost = bytes.len() - take;
        if lost > 0 {
            self.stats.dropped += lost as u64;
            self.dropping = true;
        }
    }

    /// Prints more of a running `seq` while the hold buffer is under half
    /// full (so nothing of it is ever dropped); whether it printed its last
    /// number now.
    pub fn pump(&mut self) -> bool {
        let Some((next, last)) = &mut self.shell.seq else {
            return false;
        };
        let mut line = String::with_capacity(24);
        while self.hold.len() < HOLD / 2 {
            if *next > *last {
                self.shell.seq = None;
                return true;
            }
            line.clear();
            let _ = write!(line, "{next}\r\n");
            self.hold.extend(line.as_bytes());
            *next += 1;
        }
        false
    }

    /// Whether output was dropped since the last call (for a log line).
    pub fn take_dropping(&mut self) -> bool {
        std::mem::take(&mut self.dropping)
    }

    /// Moves held output into free transmit buffers.
    pub fn flush<M: Mmio, P: Memory>(&mut self, io: &mut Io<'_, M, P>) -> Result<(), VirtioError> {
        let mut chunk = Vec::with_capacity(TX_BUF as usize);
        while !self.hold.is_empty() {
            let Some(i) = self.tx_free.pop() else { break };
            let n = self.hold.len().min(TX_BUF as usize);
            chunk.clear();
            chunk.extend(self.hold.drain(..n));
            let addr = self.tx.at(u64::from(i * TX_BUF));
            io.hw.phys.write(addr, &chunk)?;
            io.add(
                1,
                &[Buf {
                    addr,
                    len: n as u32,
                    write: false,
                }],
                i,
            )?;
            self.stats.tx_bytes += n as u64;
        }
        Ok(())
    }

    /// Whether everything printed reached the host (nothing held, nothing
    /// in flight).
    #[must_use]
    pub fn idle(&self) -> bool {
        self.hold.is_empty() && self.tx_free.len() == TX_BUFS as usize
    }

    /// Bytes waiting for the host.
    #[must_use]
    pub fn held(&self) -> usize {
        self.hold.len()
    }
}
