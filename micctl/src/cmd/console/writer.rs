//! The writer: a thread that types into the console. A card that does not
//! read its console makes mpssd stop reading the connection, so a write
//! can block; the loop hands input over and never waits for that (the
//! escape key and signals are read meanwhile).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use libmic::mpssd::{ClientError, ConsoleInput};

/// Input chunks and window sizes queued for the writer, at most.
pub(super) const QUEUE: usize = 16;

/// How handing something to the writer went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sent {
    Queued,
    /// Its queue is full (the card is slow to take input): try again later.
    Full,
    /// The writer stopped (the connection failed).
    Gone,
}

enum ToCard {
    Input(Vec<u8>),
    Resize(u16, u16),
}

#[derive(Debug)]
pub(super) struct Writer {
    tx: Option<SyncSender<ToCard>>,
    thread: Option<JoinHandle<Result<(), ClientError>>>,
    /// Handed over and not yet written.
    in_flight: Arc<AtomicUsize>,
    /// Closed when the thread ends.
    done: Receiver<()>,
}

impl std::fmt::Debug for ToCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ToCard::Input(d) => write!(f, "Input({} bytes)", d.len()),
            ToCard::Resize(c, r) => write!(f, "Resize({c}x{r})"),
        }
    }
}

impl Writer {
    pub(super) fn start(mut input: ConsoleInput) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<ToCard>(QUEUE);
        let (done_tx, done) = mpsc::channel::<()>();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&in_flight);
        let thread = std::thread::Builder::new()
            .name("console-writer".into())
            .spawn(move || {
                let _done = done_tx;
                // TIMEOUT: none of its own: a write waits for mpssd, which
                // bounds how long it waits for the card (client_timeout)
                // and then reads on; the session does not wait for this
                // thread (finish is bounded).
                while let Ok(item) = rx.recv() {
                    let r = match item {
                        ToCard::Input(data) => input.send(&data),
                        ToCard::Resize(cols, rows) => input.resize(cols, rows),
                    };
                    count.fetch_sub(1, Ordering::Release);
                    r?;
                }
                Ok(())
            })?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            in_flight,
            done,
        })
    }

    fn hand(&self, item: ToCard) -> Sent {
        let Some(tx) = &self.tx else { return Sent::Gone };
        self.in_flight.fetch_add(1, Ordering::Acquire);
        match tx.try_send(item) {
            Ok(()) => Sent::Queued,
            Err(e) => {
                self.in_flight.fetch_sub(1, Ordering::Release);
                match e {
                    TrySendError::Full(_) => Sent::Full,
                    TrySendError::Disconnected(_) => Sent::Gone,
                }
            }
        }
    }

    /// Types `data`.
    pub(super) fn input(&self, data: &[u8]) -> Sent {
        self.hand(ToCard::Input(data.to_vec()))
    }

    /// Tells the card the window's size.
    pub(super) fn resize(&self, cols: u16, rows: u16) -> Sent {
        self.hand(ToCard::Resize(cols, rows))
    }

    /// Whether something handed over is not written yet.
    pub(super) fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// Why the writer stopped.
    pub(super) fn failure(&mut self) -> anyhow::Error {
        let ended = self.done.try_recv() == Err(mpsc::TryRecvError::Disconnected);
        match self.thread.take().filter(|_| ended).map(JoinHandle::join) {
            Some(Ok(Err(e))) => anyhow::Error::from(e).context("typing into the console"),
            _ => anyhow::anyhow!("typing into the console: the writer stopped"),
        }
    }

    /// No more input: what was handed over is written, waited for at most
    /// `limit`.
    pub(super) fn finish(&mut self, limit: Duration) {
        self.tx = None;
        // TIMEOUT: `limit`; a write still blocked then is abandoned with
        // the process.
        let _ = self.done.recv_timeout(limit);
    }
}
