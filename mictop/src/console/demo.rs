//! The demo's consoles: `mictop --demo` has no mpssd, so it serves its
//! emulated cards' virtio consoles itself, as mpssd's console backend
//! would — one `VirtioFile` on `dev/micN` per card, a console added before
//! the card boots, its output drained as the card writes it (kept for
//! viewers who attach later) and typed input fed to the card's receive
//! buffers. When the card removes the console (it shut down) it is added
//! again for the next boot; viewers stay attached across.
//!
//! One thread per card waits with `poll` on the file (the card's
//! doorbells) and on a socket the viewers wake it through when they type.

use std::collections::{BTreeMap, VecDeque};
use std::io::{IoSliceMut, Read as _, Write as _};
use std::os::fd::AsFd as _;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use libmic::MicRoot;
use libmic::vdev::{DeviceBlock, RingMap, VdevError, VirtioFile, Wake};
use mic_core::abi::virtio::id;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::console::{Access, Console, ConsoleError, ConsoleEvent, ConsoleSource, Sink, TermSize};

/// Output kept for viewers who attach later.
pub const HISTORY: usize = 256 << 10;

/// The longest a card's thread waits without looking at its stop flag
/// (stopping also wakes it at once).
const POLL_LIMIT: Duration = Duration::from_millis(500);

/// How long starting waits for each card's console to be added.
const ADD_LIMIT: Duration = Duration::from_secs(10);

/// The console the demo adds: two vrings of 128 (receive, transmit), no
/// features, an empty config (as mpssd's).
fn console_block() -> DeviceBlock {
    DeviceBlock {
        ty: id::CONSOLE,
        vrings: vec![128, 128],
        host_features: 0,
        config: vec![0; 12],
    }
}

/// Every demo card's console.
#[derive(Debug)]
pub struct DemoConsoles {
    hubs: BTreeMap<u32, Arc<Hub>>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

/// One card's console as its viewers share it.
#[derive(Debug)]
struct Hub {
    card: u32,
    state: Mutex<HubState>,
    /// Wakes the card's thread (input queued, stopping).
    wake: UnixStream,
}

struct HubState {
    history: VecDeque<u8>,
    viewers: Vec<Viewer>,
    /// The viewer holding the write side.
    writer: Option<u64>,
    input: VecDeque<u8>,
    next_id: u64,
}

impl std::fmt::Debug for HubState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubState")
            .field("history", &self.history.len())
            .field("viewers", &self.viewers.len())
            .field("writer", &self.writer)
            .finish_non_exhaustive()
    }
}

struct Viewer {
    id: u64,
    sink: Sink,
}

fn viewer_name(id: u64) -> String {
    format!("viewer {id}")
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HubState> {
        // A viewer's sink that panicked leaves the state as it was.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wake(&self) {
        let _ = (&self.wake).write(&[1]);
    }

    /// The card wrote `bytes`: kept, and sent to every viewer.
    fn output(&self, bytes: &[u8]) {
        let mut st = self.lock();
        st.history.extend(bytes);
        let over = st.history.len().saturating_sub(HISTORY);
        st.history.drain(..over);
        st.viewers
            .retain(|v| (v.sink)(ConsoleEvent::Output(bytes.to_vec())));
    }

    fn notice(&self, text: &str) {
        self.lock()
            .viewers
            .retain(|v| (v.sink)(ConsoleEvent::Notice(text.to_owned())));
    }

    /// Up to `max` bytes of queued input.
    fn take_input(&self, max: usize) -> Vec<u8> {
        let mut st = self.lock();
        let n = st.input.len().min(max);
        st.input.drain(..n).collect()
    }

    /// Input the card had no room for goes back to the front.
    fn unread(&self, rest: &[u8]) {
        let mut st = self.lock();
        for &b in rest.iter().rev() {
            st.input.push_front(b);
        }
    }

    fn has_input(&self) -> bool {
        !self.lock().input.is_empty()
    }

    fn set_access(&self, id: u64, access: Access) {
        let mut st = self.lock();
        let previous = st.writer;
        match access {
            Access::ReadWrite => st.writer = Some(id),
            Access::ReadOnly if previous == Some(id) => st.writer = None,
            Access::ReadOnly => {}
        }
        let writer = st.writer;
        for v in &st.viewers {
            // The viewer that asked, and one that lost the write side.
            if v.id == id || (previous == Some(v.id) && writer != previous) {
                let access = if writer == Some(v.id) {
                    Access::ReadWrite
                } else {
                    Access::ReadOnly
                };
                let other = writer.filter(|&w| w != v.id).map(viewer_name);
                (v.sink)(ConsoleEvent::Access {
                    access,
                    writer: other,
                });
            }
        }
    }
}

impl DemoConsoles {
    /// Adds a console on each card's `dev/micN` under `root` (before the
    /// cards boot, so their boot brings them up) and starts serving them.
    pub fn start(root: &MicRoot, cards: &[u32]) -> Result<Self, VdevError> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut hubs = BTreeMap::new();
        let mut threads = Vec::new();
        let mut ready = Vec::new();
        for &card in cards {
            let (wake, woken) = UnixStream::pair().map_err(|e| io_err(root, card, e))?;
            woken.set_nonblocking(true).map_err(|e| io_err(root, card, e))?;
            wake.set_nonblocking(true).map_err(|e| io_err(root, card, e))?;
            let hub = Arc::new(Hub {
                card,
                state: Mutex::new(HubState {
                    history: VecDeque::new(),
                    viewers: Vec::new(),
                    writer: None,
                    input: VecDeque::new(),
                    next_id: 1,
                }),
                wake,
            });
            let (tx, rx) = mpsc::channel();
            let (root, h, stop2) = (root.clone(), Arc::clone(&hub), Arc::clone(&stop));
            let t = std::thread::Builder::new()
                .name(format!("console-mic{card}"))
                .spawn(move || serve(&root, &h, &woken, &stop2, &tx))
                .map_err(|e| io_err(&MicRoot::new("/"), card, e))?;
            threads.push(t);
            hubs.insert(card, hub);
            ready.push(rx);
        }
        let consoles = Self { hubs, threads, stop };
        for rx in ready {
            // TIMEOUT: ADD_LIMIT for one ADD_DEVICE (the driver does not
            // wait for the card).
            match rx.recv_timeout(ADD_LIMIT) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(VdevError::Io {
                        path: root.dev_node(0),
                        op: "add the console",
                        source: std::io::Error::from(std::io::ErrorKind::TimedOut),
                    });
                }
            }
        }
        Ok(consoles)
    }
}

fn io_err(root: &MicRoot, card: u32, source: std::io::Error) -> VdevError {
    VdevError::Io {
        path: root.dev_node(card),
        op: "start the console",
        source,
    }
}

impl Drop for DemoConsoles {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for h in self.hubs.values() {
            h.wake();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl ConsoleSource for DemoConsoles {
    fn attach(
        &mut self,
        card: u32,
        access: Access,
        _size: TermSize,
        sink: Sink,
    ) -> Result<Box<dyn Console>, ConsoleError> {
        let hub = Arc::clone(self.hubs.get(&card).ok_or(ConsoleError::NoConsole { card })?);
        let id = {
            let mut st = hub.lock();
            let id = st.next_id;
            st.next_id += 1;
            // The recent output first, under the lock: nothing lost or twice.
            let replay: Vec<u8> = st.history.iter().copied().collect();
            if !replay.is_empty() {
                sink(ConsoleEvent::Output(replay));
            }
            st.viewers.push(Viewer { id, sink });
            id
        };
        hub.set_access(id, access);
        Ok(Box::new(DemoConsole { hub, id }))
    }
}

/// One viewer of a demo card's console.
#[derive(Debug)]
struct DemoConsole {
    hub: Arc<Hub>,
    id: u64,
}

impl Console for DemoConsole {
    fn send(&mut self, bytes: &[u8]) -> Result<(), ConsoleError> {
        let mut st = self.hub.lock();
        if st.writer != Some(self.id) {
            return Err(ConsoleError::ReadOnly { card: self.hub.card });
        }
        st.input.extend(bytes);
        drop(st);
        self.hub.wake();
        Ok(())
    }

    fn set_access(&mut self, access: Access) -> Result<(), ConsoleError> {
        self.hub.set_access(self.id, access);
        Ok(())
    }

    /// The virtio console the card runs has no size feature: nothing to
    /// tell it.
    fn resize(&mut self, _size: TermSize) -> Result<(), ConsoleError> {
        Ok(())
    }

    fn detach(self: Box<Self>) {}
}

impl Drop for DemoConsole {
    fn drop(&mut self) {
        let mut st = self.hub.lock();
        st.viewers.retain(|v| v.id != self.id);
        if st.writer == Some(self.id) {
            st.writer = None;
        }
    }
}

/// Opens the card's `dev/micN` and adds its console.
fn add(root: &MicRoot, card: u32) -> Result<(VirtioFile, RingMap), VdevError> {
    let mut file = VirtioFile::open(root, card)?;
    file.add_device(&console_block())?;
    let map = file.map()?;
    Ok((file, map))
}

/// The card's thread: adds the console (reporting on `ready`), serves it
/// until the card removes it, adds it again; until `stop`.
fn serve(
    root: &MicRoot,
    hub: &Hub,
    woken: &UnixStream,
    stop: &AtomicBool,
    ready: &mpsc::Sender<Result<(), VdevError>>,
) {
    let mut dev = match add(root, hub.card) {
        Ok(d) => {
            let _ = ready.send(Ok(()));
            Some(d)
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut told_failure = false;
    while !stop.load(Ordering::Acquire) {
        match dev.take() {
            Some((file, map)) => {
                if let Err(e) = run(hub, file, &map, woken, stop) {
                    hub.notice(&format!("the console failed: {}", libmic::error::report(&e)));
                }
            }
            None => {
                // Gone (or failed): add it again for the next boot, once the
                // driver takes it.
                match add(root, hub.card) {
                    Ok(d) => {
                        told_failure = false;
                        dev = Some(d);
                    }
                    Err(e) => {
                        if !told_failure {
                            hub.notice(&format!("cannot add the console again: {e}"));
                            told_failure = true;
                        }
                        wait_woken(woken, None);
                    }
                }
            }
        }
    }
}

/// A copy's result, `None` when the card has stopped the device (ENODEV:
/// it reset it on its way down, or removed it): the removal that follows
/// arrives as a wake-up, so this is no failure of the console.
fn unless_stopped(copied: Result<u32, VdevError>) -> Result<Option<u32>, VdevError> {
    match copied {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.errno() == Some(nix::errno::Errno::ENODEV as i32) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Waits until `woken` (or the file, if given) is readable, at most
/// [`POLL_LIMIT`]; returns whether the file is.
fn wait_woken(woken: &UnixStream, file: Option<&VirtioFile>) -> bool {
    let mut fds = vec![PollFd::new(woken.as_fd(), PollFlags::POLLIN)];
    if let Some(f) = file {
        fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
    }
    // TIMEOUT: POLL_LIMIT, after which the stop flag is looked at again.
    let limit = PollTimeout::try_from(POLL_LIMIT).unwrap_or(PollTimeout::NONE);
    if poll(&mut fds, limit).is_err() {
        return false;
    }
    let file_ready = fds
        .get(1)
        .and_then(PollFd::revents)
        .is_some_and(|r| !r.is_empty());
    let mut drain = [0u8; 64];
    while matches!((&*woken).read(&mut drain), Ok(n) if n > 0) {}
    file_ready
}

/// Serves one added console until the card removes it (`Ok`) or an
/// operation fails.
fn run(
    hub: &Hub,
    mut file: VirtioFile,
    map: &RingMap,
    woken: &UnixStream,
    stop: &AtomicBool,
) -> Result<(), VdevError> {
    let mut out = file.alloc_buf(4096);
    loop {
        // Card → host: everything the card has written.
        while map.pending(1) {
            let Some(n) = unless_stopped(file.copy_desc(1, &mut [IoSliceMut::new(&mut out)], true))? else {
                break;
            };
            hub.output(&out[..(n as usize).min(out.len())]);
        }
        // Host → card: queued input, as far as the card's buffers reach.
        while map.pending(0) && hub.has_input() {
            let mut data = hub.take_input(4096);
            let copied = unless_stopped(file.copy_desc(0, &mut [IoSliceMut::new(&mut data)], true))?;
            let n = copied.map_or(0, |n| n as usize);
            if n < data.len() {
                hub.unread(&data[n..]);
                break;
            }
        }
        if stop.load(Ordering::Acquire) {
            return Ok(());
        }
        if wait_woken(woken, Some(&file)) && file.try_wake()? == Some(Wake::Gone) {
            hub.notice("the card removed its console (it shut down); its next boot brings it back");
            return Ok(());
        }
    }
}
