//! The disk slot of a card: which image backs it (a swap's path, else the
//! configuration's `[cards.micN.block] image`, else the original's
//! `mpssd%03d.conf`), adding and removing the device with the card's
//! devices, and hot swap: the device is removed (the card sees its disk
//! go) and added again on the new image, as the original did on SIGUSR1.
//! A new image that cannot be opened is refused before the old one is
//! touched.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use libmic::MicRoot;
use libmic::vdev::{DeviceBlock, VirtioFile};
use mic_core::abi::virtio::{VirtioBlkConfig, blk_features, feature, id};
use mpssd_proto::{BlockSwapped, DeviceStatus};

use super::event_handler::BlockPath;
use super::image::Image;
use super::{BlockError, metrics};
use crate::config::{BlockConfig, compat_block_image};
use crate::devices::dataplane::{DataThread, DevState, Stats, lock};
use crate::devices::{DeviceContext, DeviceError, STOP_ONE_TIMEOUT, Slot};

/// Segments per request the card may use (the original's).
pub const SEG_MAX: u32 = 126;

/// The disk's descriptor block for `image`.
#[must_use]
pub fn device_block(image: &Image) -> DeviceBlock {
    use super::request::Disk as _;
    let mut features = feature(blk_features::SEG_MAX) | feature(blk_features::FLUSH);
    if image.read_only() {
        features |= feature(blk_features::RO);
    }
    let cfg = VirtioBlkConfig {
        capacity: image.sectors(),
        seg_max: SEG_MAX,
        ..VirtioBlkConfig::default()
    };
    DeviceBlock {
        ty: id::BLOCK,
        vrings: vec![128],
        host_features: features,
        config: cfg.to_bytes().to_vec(),
    }
}

/// Where the disk's image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A control-socket swap named it.
    Swap,
    /// `mpssd.toml`.
    Config,
    /// The original's `mpssd%03d.conf`.
    Compat(PathBuf),
}

/// Why a swap did not happen, or went wrong.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// Neither the request, the configuration nor `mpssd%03d.conf` names
    /// an image, and the card has no disk: nothing to swap.
    #[error("mic{card} has no disk: neither the request, mpssd.toml nor mpssd{card:03}.conf names an image")]
    NoImage { card: u32 },
    /// The new image cannot be used; the disk stays as it was.
    #[error("the new image is refused; the disk stays as it was")]
    Refused(#[source] BlockError),
    /// The old disk was removed but the new one could not be added.
    #[error("the old disk was removed, the new one could not be added")]
    Failed(#[source] BlockError),
    /// The swap's thread panicked (a bug; logged).
    #[error("the swap failed unexpectedly")]
    Panicked,
}

#[derive(Debug, Default)]
struct Inner {
    thread: Option<DataThread>,
    /// The image in use (while added), or the one that will be (while the
    /// card's devices are down).
    image: Option<Arc<Image>>,
    /// A swap's path, until the next swap without one or a change of the
    /// card's block configuration.
    swapped: Option<PathBuf>,
    cfg: BlockConfig,
    /// The card's devices are up (added and not removed).
    added: bool,
}

/// The disk of one card.
#[derive(Debug)]
pub struct BlockSlot {
    root: MicRoot,
    card: u32,
    name: String,
    stats: Arc<Stats>,
    /// Whether the card has a disk (an image, or a failure to show), read
    /// by `status` without `inner`, which a swap holds while it waits for
    /// the data thread.
    shown: AtomicBool,
    inner: Mutex<Inner>,
}

impl BlockSlot {
    #[must_use]
    pub fn new(root: &MicRoot, card: u32, cfg: &BlockConfig) -> Self {
        Self {
            root: root.clone(),
            card,
            name: format!("mic{card}"),
            stats: Arc::new(Stats::new(metrics::NAMES)),
            shown: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                cfg: cfg.clone(),
                ..Inner::default()
            }),
        }
    }

    /// The image to use, and where it was named.
    fn resolve(&self, inner: &Inner) -> Option<(PathBuf, Source)> {
        if let Some(p) = &inner.swapped {
            return Some((self.root.join(p), Source::Swap));
        }
        if let Some(p) = &inner.cfg.image {
            return Some((self.root.join(p), Source::Config));
        }
        compat_block_image(&self.root, self.card).map(|(p, from)| (self.root.join(p), Source::Compat(from)))
    }

    fn open(inner: &Inner, path: &Path) -> Result<Image, BlockError> {
        Image::open(path, inner.cfg.read_only, inner.cfg.serial.as_deref())
    }

    /// Adds the device on `image` and starts serving it.
    fn start(&self, image: Arc<Image>) -> Result<DataThread, BlockError> {
        let mut file = VirtioFile::open(&self.root, self.card)?;
        file.add_device(&device_block(&image))?;
        let map = file.map()?;
        let path = BlockPath::new(
            file,
            map,
            image,
            Arc::clone(&self.stats),
            format!("{} disk", self.name),
        );
        DataThread::spawn(format!("{}-block", self.name), move |stop| path.run(&stop))
            .map_err(BlockError::Thread)
    }

    fn stop(&self, inner: &mut Inner) {
        if let Some(t) = inner.thread.take() {
            t.stop(STOP_ONE_TIMEOUT);
        }
        self.stats.set_state(DevState::Down);
    }

    /// Records `image` (from `source`) as the card's disk and, while the
    /// card's devices are up, adds it.
    fn install(&self, inner: &mut Inner, image: Option<(Image, Source)>) -> Result<(), BlockError> {
        let Some((image, source)) = image else {
            inner.image = None;
            self.stats.set_target(String::new());
            self.shown.store(false, Ordering::Relaxed);
            return Ok(());
        };
        self.stats.set_target(image.path().display().to_string());
        self.shown.store(true, Ordering::Relaxed);
        let image = Arc::new(image);
        inner.image = Some(Arc::clone(&image));
        if !inner.added {
            return Ok(());
        }
        let t = self
            .start(Arc::clone(&image))
            .inspect_err(|e| self.stats.fail(libmic::error::report(e)))?;
        log::info!(
            target: "mpssd",
            "{}: disk {} ({} sectors{}{})",
            self.name,
            image.path().display(),
            image.sectors(),
            if inner.cfg.read_only { ", read-only" } else { "" },
            match &source {
                Source::Compat(f) => format!(", from {}", f.display()),
                Source::Swap => ", swapped in".to_owned(),
                Source::Config => String::new(),
            }
        );
        inner.thread = Some(t);
        self.stats.set_state(DevState::Waiting);
        Ok(())
    }

    /// Opens what [`BlockSlot::resolve`] names.
    fn open_resolved(&self, inner: &Inner) -> Result<Option<(Image, Source)>, BlockError> {
        self.resolve(inner)
            .map(|(path, source)| Self::open(inner, &path).map(|i| (i, source)))
            .transpose()
    }

    fn answer(&self, inner: &Inner) -> BlockSwapped {
        BlockSwapped {
            card: self.card,
            path: inner.image.as_ref().map(|i| i.path().display().to_string()),
            read_only: inner.cfg.read_only,
            sectors: inner.image.as_ref().map_or(0, |i| i.sectors()),
            added: inner.added && inner.thread.is_some(),
        }
    }

    /// Swaps the image: to `path`, or (`None`) to what the configuration
    /// and `mpssd%03d.conf` name now (re-opened even if unchanged). The new
    /// image is opened first: one that cannot be is refused and the disk
    /// stays. Then the device is removed (the card sees its disk go) and
    /// added on the new image. Blocks (device removal and addition).
    pub fn swap(&self, path: Option<PathBuf>) -> Result<BlockSwapped, SwapError> {
        let mut inner = lock(&self.inner);
        let previous = inner.swapped.take();
        inner.swapped = path;
        let new = match self.open_resolved(&inner) {
            Ok(n) => n,
            Err(e) => {
                inner.swapped = previous;
                return Err(SwapError::Refused(e));
            }
        };
        if new.is_none() && inner.image.is_none() {
            return Err(SwapError::NoImage { card: self.card });
        }
        self.stop(&mut inner);
        self.install(&mut inner, new).map_err(SwapError::Failed)?;
        Ok(self.answer(&inner))
    }

    /// The configuration changed: a different block section for this card
    /// swaps the image (and forgets a swap's path). `None`: unchanged.
    pub fn config_changed(&self, new: &BlockConfig) -> Option<Result<BlockSwapped, SwapError>> {
        {
            let mut inner = lock(&self.inner);
            if inner.cfg == *new {
                return None;
            }
            inner.cfg = new.clone();
        }
        match self.swap(None) {
            Err(SwapError::NoImage { .. }) => None,
            r => Some(r),
        }
    }
}

impl Slot for BlockSlot {
    fn kind(&self) -> &'static str {
        "block"
    }

    fn add(&self, ctx: &DeviceContext) -> Result<bool, DeviceError> {
        let mut inner = lock(&self.inner);
        if inner.cfg != ctx.config.block {
            inner.swapped = None;
            inner.cfg = ctx.config.block.clone();
        }
        inner.added = true;
        if inner.thread.is_some() {
            return Ok(true);
        }
        let r = self.open_resolved(&inner).and_then(|new| {
            let some = new.is_some();
            self.install(&mut inner, new).map(|()| some)
        });
        r.map_err(|e| {
            self.stats.fail(libmic::error::report(&e));
            self.shown.store(true, Ordering::Relaxed);
            DeviceError::of("block", &e)
        })
    }

    fn remove(&self, _why: &str) -> bool {
        let mut inner = lock(&self.inner);
        inner.added = false;
        let had = inner.thread.is_some();
        self.stop(&mut inner);
        had
    }

    fn status(&self) -> Option<DeviceStatus> {
        // Without `inner`: this runs on the reactor (status requests,
        // metrics) and a swap holds it while the data thread stops.
        self.shown
            .load(Ordering::Relaxed)
            .then(|| self.stats.status("block"))
    }
}
