//! The console slot of a card: its pty and broker live as long as mpssd
//! (a `screen` on the pty and the attached clients survive the card's
//! resets); the virtio device is added and removed with the card's devices.

use std::path::Path;
use std::sync::{Arc, Mutex};

use libmic::vdev::{DeviceBlock, VirtioFile};
use libmic::{Card, MicRoot};
use mic_core::abi::virtio::{VirtioConsoleConfig, console_features, feature, id};
use mic_core::abi::{MIC_MAGIC, MicVringInfo};
use mpssd_proto::DeviceStatus;

use super::broker::Broker;
use super::event_handler::ConsolePath;
use super::log::{ConsoleLog, log_path};
use super::pty::Pty;
use super::{ConsoleError, metrics};
use crate::config::ConsoleConfig;
use crate::devices::dataplane::{DataThread, DevState, Stats, Waker, lock};
use crate::devices::{DeviceContext, DeviceError, STOP_ONE_TIMEOUT, Slot};

/// The console's descriptor block: two vrings of 128, the size feature
/// offered (the original offered none), a zeroed config.
#[must_use]
pub fn device_block() -> DeviceBlock {
    DeviceBlock {
        ty: id::CONSOLE,
        vrings: vec![128, 128],
        host_features: feature(console_features::SIZE),
        config: VirtioConsoleConfig::default().to_bytes().to_vec(),
    }
}

/// The console of one card.
#[derive(Debug)]
pub struct ConsoleSlot {
    root: MicRoot,
    card: u32,
    name: String,
    broker: Arc<Broker>,
    pty: Option<Arc<Pty>>,
    stats: Arc<Stats>,
    thread: Mutex<Option<DataThread>>,
}

impl ConsoleSlot {
    /// The pty (linked in `run_dir`) and the broker of `card`. A pty that
    /// cannot be made is logged; the console works without it.
    pub fn new(
        root: &MicRoot,
        card: &Card,
        cfg: &ConsoleConfig,
        run_dir: &Path,
    ) -> Result<Self, ConsoleError> {
        let name = card.name().to_owned();
        let pty = match Pty::open() {
            Ok(p) => {
                match p.link(run_dir) {
                    Ok(link) => log::info!(
                        target: "mpssd",
                        "{name} console message goes to {} (linked at {})",
                        p.path(),
                        link.display()
                    ),
                    Err(e) => log::warn!(target: "mpssd", "{name}: console on {}; {e}", p.path()),
                }
                Some(Arc::new(p))
            }
            Err(e) => {
                log::error!(target: "mpssd", "{name}: {e}; the console has no pty (clients still attach)");
                None
            }
        };
        let log = cfg
            .log
            .then(|| ConsoleLog::open(log_path(root.path(), &name), cfg.log_max_bytes, cfg.log_keep));
        let kick = Arc::new(Waker::new().map_err(ConsoleError::Thread)?);
        let broker = Arc::new(Broker::new(
            card.id(),
            pty.as_ref().map(|p| p.path().to_owned()),
            cfg,
            log,
            kick,
        ));
        let stats = Arc::new(Stats::new(metrics::NAMES));
        stats.set_target(
            pty.as_ref()
                .map_or_else(|| "(no pty)".to_owned(), |p| p.path().to_owned()),
        );
        Ok(Self {
            root: root.clone(),
            card: card.id(),
            name,
            broker,
            pty,
            stats,
            thread: Mutex::new(None),
        })
    }

    #[must_use]
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    fn start(&self) -> Result<DataThread, ConsoleError> {
        let mut file = VirtioFile::open(&self.root, self.card)?;
        file.add_device(&device_block())?;
        let map = file.map()?;
        for vr in 0..2u8 {
            let want = MIC_MAGIC
                .wrapping_add(id::CONSOLE as u32)
                .wrapping_add(u32::from(vr));
            if map.info_magic(usize::from(vr)) != Some(want) {
                log::warn!(
                    target: "mpssd",
                    "{}: console vring {vr}: magic {:?}, expected {want:#x} ({} bytes of info)",
                    self.name,
                    map.info_magic(usize::from(vr)),
                    MicVringInfo::SIZE
                );
            }
        }
        let path = ConsolePath::new(
            file,
            map,
            Arc::clone(&self.broker),
            self.pty.clone(),
            Arc::clone(&self.stats),
            format!("{} console", self.name),
        );
        DataThread::spawn(format!("{}-console", self.name), move |stop| path.run(&stop))
            .map_err(ConsoleError::Thread)
    }
}

impl Drop for ConsoleSlot {
    fn drop(&mut self) {
        self.broker.end_all(
            mpssd_proto::EndReason::ConsoleRemoved,
            &format!("{}'s console was removed", self.name),
        );
    }
}

impl Slot for ConsoleSlot {
    fn kind(&self) -> &'static str {
        "console"
    }

    fn add(&self, ctx: &DeviceContext) -> Result<bool, DeviceError> {
        self.broker.configure(&ctx.config.console);
        let mut t = lock(&self.thread);
        if t.is_some() {
            return Ok(true);
        }
        match self.start() {
            Ok(th) => {
                *t = Some(th);
                self.stats.set_state(DevState::Waiting);
                Ok(true)
            }
            Err(e) => {
                let e = DeviceError::of("console", &e);
                self.stats.fail(e.message.clone());
                Err(e)
            }
        }
    }

    fn remove(&self, why: &str) -> bool {
        let t = lock(&self.thread).take();
        let had = t.is_some();
        if let Some(t) = t {
            t.stop(STOP_ONE_TIMEOUT);
        }
        self.broker.device(false, why);
        self.stats.set_state(DevState::Down);
        had
    }

    fn status(&self) -> Option<DeviceStatus> {
        Some(self.stats.status("console"))
    }
}
