//! The mpssd path: the console through libmic's `VirtioFile` on micemu's
//! `dev/mic0` socket (ADD_DEVICE, the read-only ring map, COPY_DESC, the
//! wake-ups), not the in-process file; and the lives of devices on that
//! path (config change, the card's device reset, a card reset with chains
//! in flight, hot removal by closing the file).

use std::io::IoSliceMut;
use std::time::{Duration, Instant};

use libmic::MicRoot;
use libmic::vdev::{DeviceBlock, RingMap, VirtioFile, Wake};
use mic_core::abi::virtio::{id, status};

use crate::host::{Fleet, WAIT};

/// mpssd's console backend, by hand: one `VirtioFile` with a console on it.
pub(crate) struct Client {
    pub(crate) file: VirtioFile,
    pub(crate) map: RingMap,
    pub(crate) out: String,
    pub(crate) card: u32,
}

/// mpssd's console: no features, a zeroed config.
pub(crate) fn console_block() -> DeviceBlock {
    DeviceBlock {
        ty: id::CONSOLE,
        vrings: vec![128, 128],
        host_features: 0,
        config: vec![0; 12],
    }
}

impl Client {
    /// Opens card `card`'s `dev/micN` under `root` and adds a console.
    pub(crate) fn console(root: &MicRoot, card: u32) -> Client {
        let mut file = VirtioFile::open(root, card).unwrap();
        file.add_device(&console_block()).unwrap();
        let map = file.map().unwrap();
        Client {
            file,
            map,
            out: String::new(),
            card,
        }
    }

    /// Waits for a wake-up (or a bound) and re-checks `cond`.
    pub(crate) fn wait_until(&mut self, what: &str, mut cond: impl FnMut(&mut Client) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
            // TIMEOUT: a bound on one wait; the condition is re-checked.
            self.file.wait(Some(Duration::from_millis(20))).unwrap();
        }
    }

    /// Drains the card's output, as mpssd's console thread does, until
    /// `needle` shows up; returns the text up to and including it. A copy
    /// the driver refuses (the card reset the device meanwhile) ends a
    /// drain; the next wake-up tries again.
    pub(crate) fn expect(&mut self, needle: &str) -> String {
        let mut buf = self.file.alloc_buf(4096);
        self.wait_until(needle, |c| {
            while c.map.pending(1) {
                let Ok(n) = c.file.copy_desc(1, &mut [IoSliceMut::new(&mut buf)], true) else {
                    break;
                };
                c.out.push_str(&String::from_utf8_lossy(&buf[..n as usize]));
            }
            c.out.contains(needle)
        });
        let at = self.out.find(needle).unwrap() + needle.len();
        self.out.drain(..at).collect()
    }

    pub(crate) fn type_line(&mut self, line: &str) {
        self.wait_until("a receive buffer", |c| c.map.pending(0));
        let mut data = format!("{line}\r").into_bytes();
        let n = self
            .file
            .copy_desc(0, &mut [IoSliceMut::new(&mut data)], true)
            .unwrap();
        assert_eq!(n as usize, data.len());
    }

    /// The shell's prompt on this card.
    pub(crate) fn prompt(&self) -> String {
        format!("root@mic{}:~# ", self.card)
    }

    /// Types `line`; returns its output (between the echo and the prompt).
    pub(crate) fn run(&mut self, line: &str) -> String {
        self.type_line(line);
        let prompt = self.prompt();
        let all = self.expect(&prompt);
        let body = &all[..all.len() - prompt.len()];
        body.strip_prefix(&format!("{line}\r\n"))
            .unwrap_or_else(|| panic!("no echo of {line:?} in {all:?}"))
            .to_owned()
    }
}

#[test]
fn the_shell_answers_through_libmics_client() {
    let fleet = Fleet::start(1);
    let mut c = Client::console(&MicRoot::new(fleet.dir.path()), 0);
    fleet.boot(0);
    c.wait_until("DRIVER_OK", |c| {
        c.map.device_status(id::CONSOLE) & status::DRIVER_OK != 0
    });
    c.expect(&c.prompt());
    let out = c.run("uname -a");
    assert!(out.starts_with("Linux mic0 3.10.0-micemu "), "{out:?}");
    // mpssd keeps draining the console until the card removes it.
    c.type_line("poweroff");
    let mut buf = c.file.alloc_buf(4096);
    let start = Instant::now();
    loop {
        while c.map.pending(1) {
            let Ok(n) = c.file.copy_desc(1, &mut [IoSliceMut::new(&mut buf)], true) else {
                break;
            };
            c.out.push_str(&String::from_utf8_lossy(&buf[..n as usize]));
        }
        // TIMEOUT: a bound on one wait; the loop ends at the device's end.
        if c.file.wait(Some(Duration::from_millis(20))).unwrap() == Wake::Gone {
            break;
        }
        assert!(start.elapsed() < WAIT, "the console was never removed");
    }
    assert!(c.out.contains("The system is going down NOW!"), "{:?}", c.out);
    fleet.wait_shutdown_status(0, "poweroff");
}

/// mpssd's network device as a libmic block: no offloads, no MAC.
fn net_device() -> DeviceBlock {
    DeviceBlock {
        ty: id::NET,
        vrings: vec![128, 128],
        host_features: 0,
        config: vec![0; 10],
    }
}

/// Waits on `file` until the card's driver shows `want` in the status of
/// its device of type `ty` (`map` over the same file).
fn wait_status(file: &mut VirtioFile, map: &RingMap, ty: i8, what: &str, want: impl Fn(u8) -> bool) {
    let start = Instant::now();
    while !want(map.device_status(ty)) {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        // TIMEOUT: a bound on one wait; the status is re-read.
        file.wait(Some(Duration::from_millis(20))).unwrap();
    }
}

/// The lives of devices, as issue 7's end-to-end list has them, through
/// libmic's client only: a config change, the card resetting a device,
/// a card reset with chains in flight and a fresh boot, hot removal.
#[test]
fn devices_live_and_go_through_libmics_client() {
    let fleet = Fleet::start_with(1, micemu::Timing::FAST);
    let root = MicRoot::new(fleet.dir.path());
    let mut c = Client::console(&root, 0);
    let mut net = VirtioFile::open(&root, 0).unwrap();
    net.add_device(&net_device()).unwrap();
    let net_map = net.map().unwrap();
    fleet.boot(0);
    c.expect(&c.prompt());
    wait_status(&mut net, &net_map, id::NET, "the net driver", |s| {
        s & status::DRIVER_OK != 0
    });
    assert!(c.run("ip addr").contains("eth0"));

    // A config change: the ioctl returns once the card acknowledged it,
    // and the driver's hook ran.
    c.file
        .config_change(&[80, 0, 25, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        .unwrap();
    assert!(
        fleet
            .log(0)
            .iter()
            .any(|l| l == "virtio_console virtio0: hvc0: config changed")
    );

    // The card resets a device (its driver unbound), then probes it again.
    assert_eq!(
        c.run("echo virtio1 > /sys/bus/virtio/drivers/virtio_net/unbind"),
        ""
    );
    wait_status(&mut net, &net_map, id::NET, "the card's reset", |s| s == 0);
    // Unbound once the host acknowledged the reset (micemu's bottom half).
    fleet.wait_log(0, "virtio_net virtio1 eth0: unbound");
    assert!(!c.run("ip addr").contains("eth0"));
    assert_eq!(
        c.run("echo virtio1 > /sys/bus/virtio/drivers/virtio_net/bind"),
        ""
    );
    wait_status(&mut net, &net_map, id::NET, "the net driver again", |s| {
        s & status::DRIVER_OK != 0
    });

    // A card reset with chains in flight (output the host does not read,
    // receive buffers posted): both devices stay added, reset, and come
    // back from scratch with the next boot.
    c.type_line("cat /proc/cpuinfo");
    c.wait_until("console output", |c| c.map.pending(1));
    assert!(net_map.pending(0));
    fleet.write(0, "state", "reset");
    fleet.wait_state(0, libmic::MicState::Offline);
    assert_eq!(c.map.device_status(id::CONSOLE), 0);
    assert_eq!(net_map.device_status(id::NET), 0);
    fleet.boot(0);
    c.out.clear();
    c.wait_until("DRIVER_OK after the boot", |c| {
        c.map.device_status(id::CONSOLE) & status::DRIVER_OK != 0
    });
    c.expect(&c.prompt());
    wait_status(
        &mut net,
        &net_map,
        id::NET,
        "the net driver after the boot",
        |s| s & status::DRIVER_OK != 0,
    );
    assert!(c.run("uname -n").starts_with("mic0"));

    // Hot removal: closing the file removes the device from the running
    // card, which unplugs it; the console goes on.
    drop(net_map);
    drop(net);
    fleet.wait_log(0, "virtio_net virtio1 eth0: removed");
    assert!(!c.run("ip addr").contains("eth0"));
    assert_eq!(fleet.read(0, "state"), "online\n");
}
