//! Card consoles from mpssd's console broker, over its control socket
//! (libmic's client): what mictop shows whenever mpssd runs for the root,
//! and what `mictop --demo` shows of the mpssd it starts.
//!
//! A console is two connections to the broker:
//!
//! * the **viewer**, attached read-only for as long as the pane keeps the
//!   console: the scrollback replayed on attach, then everything the card
//!   prints, in order. Its stream is what the pane shows, so taking and
//!   giving back the write side never loses or repeats a byte;
//! * the **write side**, only while it is held: a second connection
//!   attached read-write with `force` (the broker's one writer: whoever
//!   held it is told, and the pane says who that was), replaying nothing.
//!   It carries the keys and the window size; its copy of the output is
//!   not looked at. Giving the write side back detaches it; another client
//!   forcing it ends it (`taken_over`), and the pane says who took it.
//!
//! No method waits for mpssd: connecting and attaching run on the
//! console's own threads, keys go to a bounded queue a thread writes
//! from, and a detach shuts the sockets down, which ends those threads'
//! reads and writes at once. mpssd not running is no failure: the viewer
//! says so ([`ConsoleEvent::Waiting`]) and attaches when mpssd is there.
//! The ends mpssd gives (the card down for good, the console removed,
//! mpssd stopping) and mpssd vanishing end the console with that reason.

use std::os::fd::{AsRawFd as _, OwnedFd};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use libmic::MicRoot;
use libmic::mpssd::{
    AttachOptions, Client, ClientError, ConsoleEnd, ConsoleInput, ConsoleItem, ConsoleOutput, Replay,
};

use crate::console::{Access, Console, ConsoleError, ConsoleEvent, ConsoleSource, Sink, TermSize};

/// What mictop calls itself to other console clients (mpssd adds the pid
/// and uid).
pub const CLIENT_NAME: &str = "mictop";

/// How often a viewer tries again to reach an mpssd that is not running.
const RETRY: Duration = Duration::from_secs(1);

/// How long mpssd has to answer an attach.
const ANSWER_LIMIT: Duration = Duration::from_secs(5);

/// Output already received is joined into one event up to this size.
const COALESCE: usize = 64 << 10;

/// Keys (and resizes) queued for the write side; past it typing is
/// refused as busy (a card that reads no input holds them up).
const INPUT_QUEUE: usize = 256;

/// Card consoles from the mpssd serving a root.
#[derive(Debug, Clone)]
pub struct BrokerConsoles {
    root: MicRoot,
}

impl BrokerConsoles {
    /// The consoles of the mpssd serving `root` (it need not run yet).
    #[must_use]
    pub fn new(root: &MicRoot) -> Self {
        Self { root: root.clone() }
    }
}

impl ConsoleSource for BrokerConsoles {
    fn attach(
        &mut self,
        card: u32,
        access: Access,
        size: TermSize,
        sink: Sink,
    ) -> Result<Box<dyn Console>, ConsoleError> {
        let shared = Arc::new(Shared {
            card,
            root: self.root.clone(),
            sink,
            state: Mutex::new(State {
                size,
                detached: false,
                viewer: None,
                writer: None,
                generation: 0,
            }),
            wake: Condvar::new(),
        });
        let s = Arc::clone(&shared);
        spawn(format!("console-mic{card}"), move || view(&s))
            .map_err(|message| ConsoleError::Failed { card, message })?;
        let mut console = BrokerConsole { shared };
        if access == Access::ReadWrite {
            console.set_access(Access::ReadWrite)?;
        }
        Ok(Box::new(console))
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<(), String> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .map(drop)
        .map_err(|e| format!("cannot start a thread: {e}"))
}

/// One console as its threads and its handle share it.
struct Shared {
    card: u32,
    root: MicRoot,
    sink: Sink,
    state: Mutex<State>,
    /// Wakes a viewer waiting for mpssd (the console was detached).
    wake: Condvar,
}

struct State {
    /// The pane's size, passed to the card with the write side.
    size: TermSize,
    /// The handle is gone: nothing more is said, the threads end.
    detached: bool,
    /// The viewer's socket, to shut down on detach.
    viewer: Option<OwnedFd>,
    /// The write side, asked for or held.
    writer: Option<WriteSide>,
    /// Counts the write sides asked for: a write-side thread whose number
    /// is not the current one's was given back and says nothing more.
    generation: u64,
}

struct WriteSide {
    generation: u64,
    /// Set once mpssd granted it: keys and resizes go here.
    input: Option<SyncSender<Input>>,
    /// Its socket, to shut down on detach.
    socket: Option<OwnedFd>,
}

enum Input {
    Keys(Vec<u8>),
    Resize(TermSize),
    /// Give the write side back (detach it), then stop.
    Release,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A sink that panicked leaves the state as it was.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn say(&self, event: ConsoleEvent) -> bool {
        (self.sink)(event)
    }

    fn detached(&self) -> bool {
        self.lock().detached
    }

    /// Whether write side `generation` is still the one asked for (and the
    /// console attached).
    fn current(&self, generation: u64) -> bool {
        let st = self.lock();
        !st.detached && st.writer.as_ref().is_some_and(|w| w.generation == generation)
    }

    /// Write side `generation` is over: if it is the current one, it is
    /// forgotten and `events` are said (under the lock, so that no later
    /// change of the write side is said before them).
    fn writer_over(&self, generation: u64, events: Vec<ConsoleEvent>) {
        let mut st = self.lock();
        if !st.detached && st.writer.as_ref().is_some_and(|w| w.generation == generation) {
            st.writer = None;
            for e in events {
                self.say(e);
            }
        }
    }
}

/// Read-only, and who writes (if someone else does).
fn read_only(writer: Option<String>) -> ConsoleEvent {
    ConsoleEvent::Access {
        access: Access::ReadOnly,
        writer,
    }
}

fn shut(fd: Option<&OwnedFd>) {
    if let Some(fd) = fd {
        let _ = nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
    }
}

/// A duplicate of the connection's socket, to shut it down from another
/// thread.
fn socket_of(output: &ConsoleOutput) -> Option<OwnedFd> {
    nix::unistd::dup(output.as_fd()).ok()
}

/// A connection to mpssd, its connect and its first answer (the attach)
/// within [`ANSWER_LIMIT`].
fn connect(root: &MicRoot) -> Result<Client, ClientError> {
    Client::connect_within(root, ANSWER_LIMIT)
}

/// After the attach: the stream has no deadline (its reader waits for the
/// card as long as the console is attached; a detach shuts it down).
fn unbounded(output: &mut ConsoleOutput) -> Result<(), ClientError> {
    output.set_deadline(None);
    output.set_timeout(None)
}

/// Why an attachment ended, for the pane.
#[must_use]
pub fn end_text(end: &ConsoleEnd) -> String {
    match end {
        ConsoleEnd::CardDown { message } => format!("card down: {message}"),
        ConsoleEnd::ConsoleRemoved { message } => format!("console removed: {message}"),
        ConsoleEnd::DaemonStopping { message } => format!("mpssd stopped: {message}"),
        ConsoleEnd::TakenOver { message, .. } => format!("taken over: {message}"),
        ConsoleEnd::Detached => "detached".to_owned(),
        ConsoleEnd::Disconnected => "mpssd stopped: it closed the connection (killed?)".to_owned(),
    }
}

/// What a refusal or failure of mpssd's says, for the pane.
fn failure_text(e: &ClientError) -> String {
    match e {
        ClientError::Refused(body) => format!("mpssd: {}", body.message),
        e => libmic::error::report(e),
    }
}

/// What the pane says while mpssd is not running.
#[must_use]
pub fn not_running_text(root: &MicRoot) -> String {
    format!(
        "mpssd is not running for {}: consoles come from its broker; attaching when it starts",
        root.path().display()
    )
}

/// A connection to mpssd for a viewer: waited for while mpssd is not
/// running (said once); `None` once the console is detached or mpssd
/// failed (said).
fn reach(shared: &Shared) -> Option<Client> {
    let mut told = false;
    loop {
        match connect(&shared.root) {
            Ok(c) => return Some(c),
            Err(e) if e.is_not_running() => {
                if !told {
                    told = true;
                    if !shared.say(ConsoleEvent::Waiting(not_running_text(&shared.root))) {
                        return None;
                    }
                }
                let st = shared.lock();
                if st.detached {
                    return None;
                }
                // TIMEOUT: RETRY, then mpssd is looked for again (a
                // detach wakes it at once).
                let (st, _) = shared
                    .wake
                    .wait_timeout(st, RETRY)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if st.detached {
                    return None;
                }
            }
            Err(e) => {
                if !shared.detached() {
                    shared.say(ConsoleEvent::Ended(failure_text(&e)));
                }
                return None;
            }
        }
    }
}

/// The viewer's thread: reaches mpssd (waiting for it if it is not
/// running), attaches read-only with the whole scrollback, and forwards
/// the output until the attachment ends or the console is detached.
fn view(shared: &Shared) {
    let card = shared.card;
    let Some(client) = reach(shared) else { return };
    let opts = AttachOptions::read_only().named(CLIENT_NAME);
    let (attached, mut output, _input) = match client.attach_console(card, &opts) {
        Ok(c) => c.split(),
        Err(e) => {
            if !shared.detached() {
                shared.say(ConsoleEvent::Ended(failure_text(&e)));
            }
            return;
        }
    };
    if unbounded(&mut output).is_err() {
        return;
    }
    {
        let mut st = shared.lock();
        if st.detached {
            return;
        }
        st.viewer = socket_of(&output);
        // The pane's access is the write side's business once it is
        // asked for; the viewer only says who else writes.
        if st.writer.is_none() {
            shared.say(read_only(attached.writer.as_ref().map(ToString::to_string)));
        }
    }
    if !attached.device_up {
        shared.say(ConsoleEvent::Notice(format!(
            "mic{card}'s console is down (the card is not running); it comes up with the card"
        )));
    }
    let mut next = None;
    loop {
        let item = next.take().unwrap_or_else(|| output.next_item());
        if shared.detached() {
            return;
        }
        let event = match item {
            Ok(ConsoleItem::Output { mut data, .. }) => {
                // What else has come already goes with it: a card printing
                // as fast as it can is a few events a frame, not one per
                // ring buffer.
                while data.len() < COALESCE {
                    match output.try_next_item() {
                        Ok(Some(ConsoleItem::Output { data: more, .. })) => data.extend(more),
                        Ok(None) => break,
                        other => {
                            next = other.transpose();
                            break;
                        }
                    }
                }
                ConsoleEvent::Output(data)
            }
            Ok(ConsoleItem::Lagged { missed }) => ConsoleEvent::Notice(format!(
                "{missed} bytes of output lost here (mictop fell behind); mpssd's console log has them"
            )),
            Ok(ConsoleItem::Device { reason, .. }) => ConsoleEvent::Notice(reason),
            Ok(ConsoleItem::Refused(body)) => ConsoleEvent::Notice(format!("mpssd: {}", body.message)),
            Ok(ConsoleItem::Ended(end)) => {
                end_write_side(shared);
                shared.say(ConsoleEvent::Ended(end_text(&end)));
                return;
            }
            Err(e) => {
                end_write_side(shared);
                shared.say(ConsoleEvent::Ended(format!(
                    "lost mpssd's console stream: {}",
                    failure_text(&e)
                )));
                return;
            }
        };
        if !shared.say(event) {
            return;
        }
    }
}

/// The console ended: the write side goes with it, silently (the viewer
/// says why).
fn end_write_side(shared: &Shared) {
    let w = shared.lock().writer.take();
    if let Some(w) = w {
        shut(w.socket.as_ref());
    }
}

/// The write side's thread: attaches read-write, taking the console from
/// whoever holds it, starts the typist, and watches the attachment until
/// it is given back, taken over or over.
fn write_side(shared: &Shared, generation: u64) {
    let card = shared.card;
    let fail = |why: String| {
        shared.writer_over(
            generation,
            vec![
                read_only(None),
                ConsoleEvent::Notice(format!("cannot take the write side: {why}")),
            ],
        );
    };
    let client = match connect(&shared.root) {
        Ok(c) => c,
        Err(e) if e.is_not_running() => return fail(not_running_text(&shared.root)),
        Err(e) => return fail(failure_text(&e)),
    };
    let size = shared.lock().size;
    let opts = AttachOptions::read_write()
        .force()
        .replay(Replay::Bytes(0))
        .named(CLIENT_NAME)
        .size(size.cols, size.rows);
    let (attached, mut output, input) = match client.attach_console(card, &opts) {
        Ok(c) => c.split(),
        Err(e) => return fail(failure_text(&e)),
    };
    if let Err(e) = unbounded(&mut output) {
        return fail(failure_text(&e));
    }
    // The viewer decodes the output; this copy is passed over undecoded.
    output.skip_output();
    let (tx, rx) = mpsc::sync_channel(INPUT_QUEUE);
    {
        let mut st = shared.lock();
        let detached = st.detached;
        if let Some(w) = st
            .writer
            .as_mut()
            .filter(|w| w.generation == generation && !detached)
        {
            w.input = Some(tx);
            w.socket = socket_of(&output);
            shared.say(ConsoleEvent::Access {
                access: Access::ReadWrite,
                writer: None,
            });
            if let Some(from) = &attached.taken_from {
                shared.say(ConsoleEvent::Notice(format!("took the write side from {from}")));
            }
        } else {
            // Given back (or detached) while it was being taken: mpssd is
            // told at once.
            drop(st);
            let mut input = input;
            let _ = input.detach();
            return;
        }
    }
    if spawn(format!("console-mic{card}-keys"), move || typist(input, &rx)).is_err() {
        return fail("cannot start its thread".into());
    }
    loop {
        match output.next_item() {
            // The viewer shows the output; this copy is not looked at.
            Ok(ConsoleItem::Output { .. } | ConsoleItem::Lagged { .. } | ConsoleItem::Device { .. }) => {}
            Ok(ConsoleItem::Refused(body)) => {
                if shared.current(generation) {
                    shared.say(ConsoleEvent::Notice(format!("mpssd: {}", body.message)));
                }
            }
            Ok(ConsoleItem::Ended(ConsoleEnd::TakenOver { by, message })) => {
                let by = by.map_or_else(|| "another client".to_owned(), |b| b.to_string());
                let events = vec![ConsoleEvent::Notice(message), read_only(Some(by))];
                return shared.writer_over(generation, events);
            }
            // Given back, or the console's end (the viewer says why).
            Ok(ConsoleItem::Ended(_)) | Err(_) => {
                return shared.writer_over(generation, vec![read_only(None)]);
            }
        }
    }
}

/// Writes the queued keys and resizes to the write side, in order, until
/// it is given back (or its connection fails). mpssd holding the
/// connection back (a card that reads no input) holds this thread, never
/// mictop's loop.
fn typist(mut input: ConsoleInput, rx: &mpsc::Receiver<Input>) {
    for msg in rx {
        let done = match msg {
            Input::Keys(bytes) => input.send(&bytes).is_err(),
            Input::Resize(size) => input.resize(size.cols, size.rows).is_err(),
            Input::Release => {
                let _ = input.detach();
                true
            }
        };
        if done {
            return;
        }
    }
}

/// One console attached through the broker.
struct BrokerConsole {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BrokerConsole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConsole")
            .field("card", &self.shared.card)
            .finish_non_exhaustive()
    }
}

impl BrokerConsole {
    /// Queues `msg` for the write side; `false` if it is not held.
    fn queue(&self, msg: Input) -> Result<bool, ConsoleError> {
        let st = self.shared.lock();
        let Some(tx) = st.writer.as_ref().and_then(|w| w.input.as_ref()) else {
            return Ok(false);
        };
        match tx.try_send(msg) {
            Ok(()) => Ok(true),
            Err(TrySendError::Full(_)) => Err(ConsoleError::Busy {
                card: self.shared.card,
                message: "the card is not taking input; what was typed since is not sent".into(),
            }),
            // The typist stopped: the attachment's end is on its way.
            Err(TrySendError::Disconnected(_)) => Ok(false),
        }
    }
}

impl Console for BrokerConsole {
    fn send(&mut self, bytes: &[u8]) -> Result<(), ConsoleError> {
        if self.queue(Input::Keys(bytes.to_vec()))? {
            Ok(())
        } else {
            Err(ConsoleError::ReadOnly {
                card: self.shared.card,
            })
        }
    }

    fn set_access(&mut self, access: Access) -> Result<(), ConsoleError> {
        let mut st = self.shared.lock();
        match access {
            Access::ReadWrite => {
                if st.writer.is_some() {
                    return Ok(());
                }
                st.generation += 1;
                let generation = st.generation;
                st.writer = Some(WriteSide {
                    generation,
                    input: None,
                    socket: None,
                });
                drop(st);
                let s = Arc::clone(&self.shared);
                let card = self.shared.card;
                spawn(format!("console-mic{card}-write"), move || {
                    write_side(&s, generation);
                })
                .map_err(|message| {
                    self.shared.lock().writer = None;
                    ConsoleError::Failed { card, message }
                })
            }
            Access::ReadOnly => {
                let Some(w) = st.writer.take() else {
                    return Ok(());
                };
                self.shared.say(read_only(None));
                drop(st);
                // Detached cleanly by the typist; shut down at once if it
                // is held up. Still being taken: its thread detaches it.
                if let Some(tx) = &w.input
                    && tx.try_send(Input::Release).is_err()
                {
                    shut(w.socket.as_ref());
                }
                Ok(())
            }
        }
    }

    fn resize(&mut self, size: TermSize) -> Result<(), ConsoleError> {
        self.shared.lock().size = size;
        // Only the write side tells the card; a later one passes the size
        // at attach.
        self.queue(Input::Resize(size)).map(drop)
    }

    fn detach(self: Box<Self>) {}
}

impl Drop for BrokerConsole {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.detached = true;
        shut(st.viewer.as_ref());
        if let Some(w) = st.writer.take() {
            shut(w.socket.as_ref());
        }
        drop(st);
        self.shared.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_end_says_why() {
        let m = || "the message".to_owned();
        assert_eq!(
            end_text(&ConsoleEnd::CardDown { message: m() }),
            "card down: the message"
        );
        assert_eq!(
            end_text(&ConsoleEnd::ConsoleRemoved { message: m() }),
            "console removed: the message"
        );
        assert_eq!(
            end_text(&ConsoleEnd::DaemonStopping { message: m() }),
            "mpssd stopped: the message"
        );
        assert_eq!(
            end_text(&ConsoleEnd::TakenOver {
                by: None,
                message: m()
            }),
            "taken over: the message"
        );
        assert!(end_text(&ConsoleEnd::Disconnected).starts_with("mpssd stopped: "));
    }
}
