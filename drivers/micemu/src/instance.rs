//! A running emulated fleet under a root: firmware installed, cards
//! powered, sysfs/debugfs mounted, control socket listening. `micemu` runs
//! one in the foreground; other crates' tests run one in-process.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};

use crate::config::Config;
use crate::control;
use crate::emu::{Emulator, Running};
use crate::faults::{Fault, InjectError};
use crate::firmware::FirmwareDir;
use crate::fs::{self, Mount, PollHub};

/// Everything micemu serves under one root. Dropping it unmounts and stops
/// the cards.
#[derive(Debug)]
pub struct Instance {
    root: PathBuf,
    control: control::Server,
    dev: Option<crate::dev::server::Server>,
    pidfile: PathBuf,
    // Field order is drop order: unmount before the emulator stops.
    mount: Option<Mount>,
    running: Running,
}

/// How to bring an [`Instance`] up, beyond what the fleet looks like.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartOptions {
    /// Unmount (lazily) a FUSE mount at `<root>/sys` that a killed micemu
    /// left behind, if the kernel proves it dead (ENOTCONN); a mount that
    /// answers is never touched.
    pub force: bool,
}

impl Instance {
    /// Brings up `config` under `root` (created if missing).
    pub fn start(root: &Path, config: Config) -> Result<Instance> {
        Self::start_with(root, config, StartOptions::default())
    }

    /// [`start`](Self::start), as `options` say.
    pub fn start_with(root: &Path, config: Config, options: StartOptions) -> Result<Instance> {
        std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        let root = root.canonicalize()?;
        let firmware = FirmwareDir::new(&root);
        firmware
            .install_defaults(config.cards)
            .with_context(|| format!("creating default card OS images in {}", firmware.path().display()))?;
        let hub = Arc::new(PollHub::default());
        let running =
            Emulator::start(config, firmware, Arc::clone(&hub)).context("starting the emulated cards")?;
        // mount() creates the mount point, and explains a stale or busy one.
        let sys = root.join("sys");
        if options.force {
            let removed = fs::unmount_dead(&sys)?;
            if removed > 0 {
                eprintln!(
                    "micemu: unmounted the dead FUSE mount{} a killed micemu left at {}",
                    if removed == 1 { "" } else { "s" },
                    sys.display()
                );
            }
        }
        let mount = fs::mount(&sys, Arc::clone(&running.emu) as Arc<dyn fs::Backend>, hub)?;
        let control = control::serve(&root, Arc::clone(&running.emu) as Arc<dyn control::Handler>)
            .context("starting the control socket")?;
        let dev = crate::dev::server::serve(&root, &running.emu).context("serving dev/micN")?;
        let pidfile = root.join("run/micemu.pid");
        std::fs::write(&pidfile, format!("{}\n", std::process::id()))?;
        Ok(Instance {
            root,
            control,
            dev: Some(dev),
            pidfile,
            mount: Some(mount),
            running,
        })
    }

    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    #[must_use]
    pub fn socket(&self) -> &Path {
        self.control.path()
    }

    #[must_use]
    pub fn emulator(&self) -> &Emulator {
        &self.running.emu
    }

    /// The emulator, shared (for in-process `dev/micN` files).
    #[must_use]
    pub fn emulator_arc(&self) -> &Arc<Emulator> {
        &self.running.emu
    }

    /// Injects a fault into card `id` (as `micemu inject` does).
    pub fn inject(&self, id: u32, fault: &Fault) -> Result<(), InjectError> {
        self.running.emu.inject(id, fault)
    }

    /// Unmounts and stops, reporting an unmount failure.
    pub fn stop(mut self) -> Result<()> {
        if let Some(m) = self.mount.take() {
            m.unmount().context("unmounting")?;
        }
        Ok(())
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        drop(self.dev.take());
        drop(self.mount.take());
        self.control.stop();
        let _ = std::fs::remove_file(&self.pidfile);
    }
}
