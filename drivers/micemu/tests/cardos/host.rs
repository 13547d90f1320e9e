//! The host side of the card OS tests: an in-process micemu fleet booted the
//! way micctrl boots it (sysfs writes), and devices on `dev/micN` driven
//! through [`VdevFile`] the way mpssd drives them — ADD_DEVICE, the
//! read-only ring mapping, COPY_DESC, CONFIG_CHANGE, close — with waits on
//! the file's wake-ups (a [`CondvarWaker`]) or re-reads until a deadline,
//! never sleeps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use libmic::{MicRoot, MicState, klog};
use mic_core::abi::virtio::{
    VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VirtioBlkConfig, VirtioBlkOutHdr, VirtioNetHdr,
    blk_features, feature, id, net_features, status,
};
use mic_core::abi::{MicDeviceDesc, MicVqconfig, desc_size};
use mic_core::hw::Memory;
use micemu::dev::{CondvarWaker, LocalBuffers, VdevFile};
use micemu::emu::Emulator;
use micemu::{Config, Instance, Timing};

/// How long anything may take before a test gives up.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// The test fleets' timing: the fast preset, with handshake budgets long
/// enough that a loaded machine never makes an answered handshake time out.
pub(crate) const TIMING: Timing = Timing {
    ack_budget: Duration::from_secs(5),
    ..Timing::FAST
};

/// A running micemu under a temporary root: in process, or the binary
/// (whose log lines on stderr a test can wait for).
pub(crate) struct Fleet {
    pub(crate) dir: tempfile::TempDir,
    inst: Option<Instance>,
    proc: Option<Proc>,
}

/// micemu as a process, with what it logged.
struct Proc {
    child: std::process::Child,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            // SIGTERM: micemu unmounts and exits.
            let pid = nix::unistd::Pid::from_raw(p.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = p.child.wait();
        }
        drop(self.inst.take());
    }
}

impl Fleet {
    /// The micemu binary serving `cards` cards with the test timing's
    /// handshake budget, `--log-level warn`, and `args` after those.
    pub(crate) fn spawn(cards: u32, args: &[&str]) -> Fleet {
        use std::io::BufRead as _;
        let dir = tempfile::tempdir().unwrap();
        let budget = TIMING.ack_budget.as_millis().to_string();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_micemu"));
        cmd.arg("--root")
            .arg(dir.path())
            .args(["--cards", &cards.to_string(), "--timing", "fast"])
            .args(["--log-level", "warn"]);
        if !args.contains(&"--ack-ms") {
            cmd.args(["--ack-ms", &budget]);
        }
        let mut child = cmd
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // micemu prints its banner once everything is mounted and served.
        let mut banner = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut banner)
            .unwrap();
        assert!(banner.starts_with("micemu: serving"), "{banner:?}");
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = Arc::clone(&lines);
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                sink.0.lock().unwrap().push(line);
                sink.1.notify_all();
            }
        });
        Fleet {
            dir,
            inst: None,
            proc: Some(Proc { child, lines }),
        }
    }

    /// What the micemu process logged so far.
    pub(crate) fn stderr(&self) -> Vec<String> {
        self.proc
            .as_ref()
            .expect("micemu as a process")
            .lines
            .0
            .lock()
            .unwrap()
            .clone()
    }

    /// Waits (on the log reader's notifications) until micemu logged a
    /// line containing `needle`; returns it.
    pub(crate) fn wait_stderr(&self, needle: &str) -> String {
        let (lines, cv) = &*self.proc.as_ref().expect("micemu as a process").lines;
        let start = Instant::now();
        let mut g = lines.lock().unwrap();
        loop {
            if let Some(l) = g.iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            let left = WAIT.checked_sub(start.elapsed()).unwrap_or_default();
            assert!(
                !left.is_zero(),
                "micemu never logged {needle:?}; it logged {:#?}",
                *g
            );
            // TIMEOUT: the test's bound; every new line wakes the wait.
            g = cv.wait_timeout(g, left).unwrap().0;
        }
    }

    /// `micemu inject --root DIR micN WORDS...`, as an operator types it;
    /// its error message on failure.
    pub(crate) fn inject(&self, card: u32, words: &[&str]) -> Result<(), String> {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_micemu"))
            .arg("inject")
            .arg("--root")
            .arg(self.dir.path())
            .arg(format!("mic{card}"))
            .args(words)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim_end().to_owned())
        }
    }

    /// A debugfs file of card `card`.
    pub(crate) fn debug(&self, card: u32, name: &str) -> String {
        let p = self
            .dir
            .path()
            .join(format!("sys/kernel/debug/mic_host/mic{card}/{name}"));
        std::fs::read_to_string(p).unwrap()
    }

    pub(crate) fn start(cards: u32) -> Fleet {
        Self::start_with(cards, TIMING)
    }

    pub(crate) fn start_with(cards: u32, timing: Timing) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            cards,
            memory: 256 << 20,
            timing,
            ..Config::default()
        };
        let inst = Instance::start(dir.path(), config).unwrap();
        Fleet {
            dir,
            inst: Some(inst),
            proc: None,
        }
    }

    pub(crate) fn emu(&self) -> &Arc<Emulator> {
        self.inst.as_ref().expect("an in-process fleet").emulator_arc()
    }

    fn attr(&self, card: u32, name: &str) -> std::path::PathBuf {
        self.dir.path().join(format!("sys/class/mic/mic{card}/{name}"))
    }

    pub(crate) fn write(&self, card: u32, name: &str, value: &str) {
        std::fs::write(self.attr(card, name), format!("{value}\n")).unwrap();
    }

    pub(crate) fn read(&self, card: u32, name: &str) -> String {
        std::fs::read_to_string(self.attr(card, name)).unwrap()
    }

    /// What `micctrl -b` does, with mpssd's command line and log buffer
    /// addresses.
    pub(crate) fn boot(&self, card: u32) {
        self.boot_with(card, "");
    }

    /// [`Fleet::boot`] with `extra` at the end of the command line.
    pub(crate) fn boot_with(&self, card: u32, extra: &str) {
        let root = MicRoot::new(self.dir.path());
        root.card_by_id(card)
            .set_log_buf_from_sysmap(&root.system_map())
            .unwrap();
        self.write(
            card,
            "cmdline",
            &format!(
                "clocksource=tsc highres=off nohz=off ifcfg=static;address,172.31.{card}.1;netmask,255.255.255.0{extra}"
            ),
        );
        self.write(card, "bootmode", "linux");
        self.write(card, "firmware", "mic/uos.img");
        self.write(card, "ramdisk", &format!("mic/mic{card}.image"));
        self.write(card, "state", "boot");
    }

    pub(crate) fn wait_state(&self, card: u32, want: MicState) {
        let c = MicRoot::new(self.dir.path()).card_by_id(card);
        assert_eq!(c.wait_for(|s| s == want, Some(WAIT)).unwrap(), want);
    }

    /// The card's kernel log, decoded.
    pub(crate) fn log(&self, card: u32) -> Vec<String> {
        let p = self
            .dir
            .path()
            .join(format!("sys/kernel/debug/mic_host/mic{card}/log_buf"));
        let raw = std::fs::read(p).unwrap();
        klog::decode(&raw).into_iter().map(|r| r.text).collect()
    }

    /// Re-reads the card log (it has no notification, as on hardware)
    /// until a line contains `needle`.
    pub(crate) fn wait_log(&self, card: u32, needle: &str) -> Vec<String> {
        let start = Instant::now();
        loop {
            let log = self.log(card);
            if log.iter().any(|l| l.contains(needle)) {
                return log;
            }
            assert!(
                start.elapsed() < WAIT,
                "mic{card}: {needle:?} never logged; log: {log:#?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Re-reads `shutdown_status` until it is `want`.
    pub(crate) fn wait_shutdown_status(&self, card: u32, want: &str) {
        let start = Instant::now();
        while self.read(card, "shutdown_status").trim() != want {
            assert!(start.elapsed() < WAIT, "shutdown_status never became {want}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A device descriptor block as mpssd builds one.
pub(crate) fn block(ty: i8, num_vq: u8, features: u32, config: &[u8]) -> Vec<u8> {
    let d = MicDeviceDesc {
        ty,
        num_vq,
        feature_len: 4,
        config_len: config.len() as u8,
        status: 0,
    };
    let mut b = vec![0u8; desc_size(&d)];
    b[..8].copy_from_slice(&d.to_bytes());
    for i in 0..usize::from(num_vq) {
        let vq = MicVqconfig {
            address: 0,
            used_address: 0,
            num: 128,
        };
        b[d.vq_offset(i)..d.vq_offset(i) + 24].copy_from_slice(&vq.to_bytes());
    }
    b[d.features_offset()..d.features_offset() + 4].copy_from_slice(&features.to_le_bytes());
    b[d.config_offset()..d.config_offset() + config.len()].copy_from_slice(config);
    b
}

/// mpssd's console: no features, a zeroed config.
pub(crate) fn console_block() -> Vec<u8> {
    block(id::CONSOLE, 2, 0, &[0; 12])
}

/// mpssd's network device: its offloads offered, a zeroed config (no MAC).
pub(crate) fn net_block() -> Vec<u8> {
    let f = [
        net_features::CSUM,
        net_features::GSO,
        net_features::GUEST_TSO4,
        net_features::GUEST_TSO6,
        net_features::GUEST_ECN,
        net_features::GUEST_UFO,
    ]
    .iter()
    .fold(0, |a, b| a | feature(*b));
    block(id::NET, 2, f, &[0; 10])
}

/// A disk of `sectors`: SEG_MAX (126) as mpssd offers it, and FLUSH.
pub(crate) fn blk_block(sectors: u64) -> Vec<u8> {
    let cfg = VirtioBlkConfig {
        capacity: sectors,
        seg_max: 126,
        ..VirtioBlkConfig::default()
    };
    block(
        id::BLOCK,
        1,
        feature(blk_features::SEG_MAX) | feature(blk_features::FLUSH),
        &cfg.to_bytes(),
    )
}

/// One open `dev/micN` file with a device on it.
pub(crate) struct Dev {
    pub(crate) file: VdevFile,
    pub(crate) waker: Arc<CondvarWaker>,
    seen: u64,
    emu: Arc<Emulator>,
    pub(crate) card: u32,
}

impl Dev {
    pub(crate) fn add(fleet: &Fleet, card: u32, block: &[u8]) -> Dev {
        let waker = Arc::new(CondvarWaker::default());
        let file = VdevFile::open(fleet.emu(), card, Box::new(Arc::clone(&waker))).unwrap();
        file.add_device(block).unwrap();
        Dev {
            file,
            waker,
            seen: 0,
            emu: Arc::clone(fleet.emu()),
            card,
        }
    }

    pub(crate) fn host_ram(&self) -> &micemu::hw::HostRam {
        &self.emu.cards[self.card as usize].host_ram
    }

    pub(crate) fn status(&self) -> u8 {
        self.file.device().status(self.host_ram()).unwrap()
    }

    /// Waits for the next wake-up of the file (a card doorbell for this
    /// device), at most `max`; returns whether the device is gone.
    pub(crate) fn wait_wake(&mut self, max: Duration) -> bool {
        let (n, gone) = self.waker.wait(self.seen, max);
        self.seen = n;
        gone
    }

    /// Re-checks `cond` at every wake-up until it holds.
    pub(crate) fn wait_until(&mut self, what: &str, mut cond: impl FnMut(&mut Dev) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
            // TIMEOUT: a bound on one wait; the condition is re-checked.
            self.wait_wake(Duration::from_millis(20));
        }
    }

    pub(crate) fn wait_driver_ok(&mut self) {
        self.wait_until("DRIVER_OK", |d| d.status() & status::DRIVER_OK != 0);
    }

    /// Whether vring `vr` has chains the host has not consumed.
    pub(crate) fn pending(&self, vr: u8) -> bool {
        self.file.device().pending(self.host_ram(), vr).unwrap_or(false)
    }

    /// One COPY_DESC of `buf` on vring `vr`.
    pub(crate) fn copy(&self, vr: u8, buf: &mut [u8], update_used: bool) -> usize {
        self.try_copy(vr, buf, update_used).unwrap()
    }

    /// One COPY_DESC, its errno on failure.
    pub(crate) fn try_copy(&self, vr: u8, buf: &mut [u8], update_used: bool) -> Result<usize, i32> {
        let mut user = LocalBuffers::new(&self.file, buf);
        Ok(self.file.copy_desc(vr, &mut user, update_used)?.out_len as usize)
    }

    /// Drains vring `vr` (card → host) into one byte string (until it is
    /// empty, or the card reset the device under the copy).
    pub(crate) fn drain(&self, vr: u8) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65600];
        while self.pending(vr) {
            let Ok(n) = self.try_copy(vr, &mut buf, true) else {
                break;
            };
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    /// The card's next chain on vring `vr` as one byte string.
    pub(crate) fn recv_one(&self, vr: u8) -> Option<Vec<u8>> {
        if !self.pending(vr) {
            return None;
        }
        let mut buf = vec![0u8; 65600];
        let n = self.copy(vr, &mut buf, true);
        Some(buf[..n].to_vec())
    }

    /// Sends `data` into the card's receive buffers (vring 0), waiting for
    /// the card to post them.
    pub(crate) fn send(&mut self, data: &[u8]) {
        let mut at = 0;
        while at < data.len() {
            self.wait_until("a receive buffer", |d| d.pending(0));
            let mut chunk = data[at..].to_vec();
            let n = self.copy(0, &mut chunk, true);
            assert!(n > 0);
            at += n;
        }
    }

    /// The chain the host would fetch next on vring `vr`, read as mpssd
    /// reads it (from the ring block in host memory): (addr, len, flags).
    pub(crate) fn peek_chain(&self, vr: u8) -> Vec<(u64, u32, u16)> {
        let dev = self.file.device();
        let ring = dev.rings().nth(usize::from(vr)).unwrap();
        let last = ring.last_avail();
        let block = dev.mmap_layout().nth(usize::from(vr) + 1).unwrap().1;
        drop(dev);
        let ram = self.host_ram();
        let num = 128u64;
        let avail = block + 16 * num;
        let head = ram.read_u16(avail + 4 + 2 * (u64::from(last) % num)).unwrap();
        let mut out = Vec::new();
        let mut i = u64::from(head);
        for _ in 0..num {
            let d = block + 16 * i;
            let (addr, len) = (ram.read_u64(d).unwrap(), ram.read_u32(d + 8).unwrap());
            let (flags, next) = (ram.read_u16(d + 12).unwrap(), ram.read_u16(d + 14).unwrap());
            out.push((addr, len, flags));
            if flags & VRING_DESC_F_NEXT == 0 {
                break;
            }
            i = u64::from(next);
        }
        out
    }
}

/// A console on a card, with what it printed so far.
pub(crate) struct Console {
    pub(crate) dev: Dev,
    pub(crate) out: String,
}

impl Console {
    pub(crate) fn add(fleet: &Fleet, card: u32) -> Console {
        Console {
            dev: Dev::add(fleet, card, &console_block()),
            out: String::new(),
        }
    }

    /// Reads what the card printed until `needle` appears after what was
    /// already consumed; returns the text up to and including it.
    pub(crate) fn expect(&mut self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let bytes = self.dev.drain(1);
            self.out.push_str(&String::from_utf8_lossy(&bytes));
            if let Some(i) = self.out.find(needle) {
                let upto: String = self.out.drain(..i + needle.len()).collect();
                return upto;
            }
            assert!(
                start.elapsed() < WAIT,
                "never saw {needle:?}; console: {:?}",
                self.out
            );
            self.dev.wait_wake(Duration::from_millis(20));
        }
    }

    /// The shell's prompt on this card.
    pub(crate) fn prompt(&self) -> String {
        format!("root@mic{}:~# ", self.dev.card)
    }

    /// Types `line` and a carriage return; returns the command's output
    /// (between the echoed line and the next prompt).
    pub(crate) fn run(&mut self, line: &str) -> String {
        self.dev.send(format!("{line}\r").as_bytes());
        let prompt = self.prompt();
        let all = self.expect(&prompt);
        let body = &all[..all.len() - prompt.len()];
        let echo = format!("{line}\r\n");
        body.strip_prefix(&echo)
            .unwrap_or_else(|| panic!("no echo of {line:?} in {all:?}"))
            .to_owned()
    }
}

/// A console and a device for each of `blocks` on card 0, booted: the
/// console's first prompt read, every device at DRIVER_OK.
pub(crate) fn booted<const N: usize>(fleet: &Fleet, blocks: [Vec<u8>; N]) -> (Console, [Dev; N]) {
    let mut con = Console::add(fleet, 0);
    let mut devs = blocks.map(|b| Dev::add(fleet, 0, &b));
    fleet.boot(0);
    con.expect(&con.prompt());
    for d in &mut devs {
        d.wait_driver_ok();
    }
    (con, devs)
}

/// A host-side disk image served on a block device by a thread, as mpssd's
/// block backend does (header, data, status).
pub(crate) struct Disk {
    pub(crate) image: Arc<std::sync::Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Dev>>,
    /// Requests served by type.
    pub(crate) served: Arc<std::sync::Mutex<Vec<u32>>>,
}

impl Disk {
    pub(crate) fn serve(mut dev: Dev, image: Vec<u8>) -> Disk {
        let image = Arc::new(std::sync::Mutex::new(image));
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (img, st, sv) = (Arc::clone(&image), Arc::clone(&stop), Arc::clone(&served));
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                while dev.pending(0) {
                    // A device the card reset or removed meanwhile: the
                    // copies fail (ENODEV), and the backend waits.
                    let Ok(ty) = serve_one(&dev, &mut img.lock().unwrap(), b"micemu-test-disk") else {
                        break;
                    };
                    sv.lock().unwrap().push(ty);
                }
                if dev.wait_wake(Duration::from_millis(20)) {
                    break;
                }
            }
            dev
        });
        Disk {
            image,
            stop,
            thread: Some(thread),
            served,
        }
    }

    /// Stops serving and gives the device back.
    pub(crate) fn stop(mut self) -> Dev {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves the next request: returns its type, or the errno of a copy.
fn serve_one(dev: &Dev, image: &mut [u8], serial: &[u8]) -> Result<u32, i32> {
    let chain = dev.peek_chain(0);
    let mut hdr = [0u8; 16];
    assert_eq!(dev.try_copy(0, &mut hdr, false)?, 16, "header");
    let h = VirtioBlkOutHdr::from_bytes(&hdr);
    let data: Vec<_> = chain[1..chain.len() - 1].to_vec();
    let data_len: usize = data.iter().map(|d| d.1 as usize).sum();
    let at = (h.sector * 512) as usize;
    let status = match h.ty {
        VIRTIO_BLK_T_IN => {
            assert!(data.iter().all(|d| d.2 & VRING_DESC_F_WRITE != 0));
            let mut buf = image[at..at + data_len].to_vec();
            assert_eq!(dev.try_copy(0, &mut buf, false)?, data_len);
            VIRTIO_BLK_S_OK
        }
        VIRTIO_BLK_T_OUT => {
            assert!(data.iter().all(|d| d.2 & VRING_DESC_F_WRITE == 0));
            let mut buf = vec![0u8; data_len];
            assert_eq!(dev.try_copy(0, &mut buf, false)?, data_len);
            image[at..at + data_len].copy_from_slice(&buf);
            VIRTIO_BLK_S_OK
        }
        VIRTIO_BLK_T_GET_ID => {
            let mut id = vec![0u8; data_len];
            id[..serial.len()].copy_from_slice(serial);
            assert_eq!(dev.try_copy(0, &mut id, false)?, data_len);
            VIRTIO_BLK_S_OK
        }
        VIRTIO_BLK_T_FLUSH => VIRTIO_BLK_S_OK,
        _ => VIRTIO_BLK_S_UNSUPP,
    };
    assert_eq!(dev.try_copy(0, &mut [status], true)?, 1, "status byte");
    Ok(h.ty)
}

/// A frame as the host sends it: the header mpssd sends (DATA_VALID).
pub(crate) fn with_hdr(frame: &[u8], flags: u8) -> Vec<u8> {
    let h = VirtioNetHdr {
        flags,
        ..VirtioNetHdr::default()
    };
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(frame);
    v
}
