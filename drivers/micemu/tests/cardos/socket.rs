//! The mpssd path: the console through libmic's `VirtioFile` on micemu's
//! `dev/mic0` socket (ADD_DEVICE, the read-only ring map, COPY_DESC, the
//! wake-ups), not the in-process file.

use std::io::IoSliceMut;
use std::time::{Duration, Instant};

use libmic::MicRoot;
use libmic::vdev::{DeviceBlock, RingMap, VirtioFile, Wake};
use mic_core::abi::virtio::{id, status};

use crate::host::{Fleet, WAIT};

struct Client {
    file: VirtioFile,
    map: RingMap,
    out: String,
}

impl Client {
    /// Waits for a wake-up (or a bound) and re-checks `cond`.
    fn wait_until(&mut self, what: &str, mut cond: impl FnMut(&mut Client) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
            // TIMEOUT: a bound on one wait; the condition is re-checked.
            self.file.wait(Some(Duration::from_millis(20))).unwrap();
        }
    }

    /// Drains the card's output, as mpssd's console thread does, until
    /// `needle` shows up.
    fn expect(&mut self, needle: &str) -> String {
        let mut buf = self.file.alloc_buf(4096);
        self.wait_until(needle, |c| {
            while c.map.pending(1) {
                let n = c
                    .file
                    .copy_desc(1, &mut [IoSliceMut::new(&mut buf)], true)
                    .unwrap() as usize;
                c.out.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            c.out.contains(needle)
        });
        let at = self.out.find(needle).unwrap() + needle.len();
        self.out.drain(..at).collect()
    }

    fn type_line(&mut self, line: &str) {
        self.wait_until("a receive buffer", |c| c.map.pending(0));
        let mut data = format!("{line}\r").into_bytes();
        let n = self
            .file
            .copy_desc(0, &mut [IoSliceMut::new(&mut data)], true)
            .unwrap();
        assert_eq!(n as usize, data.len());
    }
}

#[test]
fn the_shell_answers_through_libmics_client() {
    let fleet = Fleet::start(1);
    let root = MicRoot::new(fleet.dir.path());
    let mut file = VirtioFile::open(&root, 0).unwrap();
    file.add_device(&DeviceBlock {
        ty: id::CONSOLE,
        vrings: vec![128, 128],
        host_features: 0,
        config: vec![0; 12],
    })
    .unwrap();
    let map = file.map().unwrap();
    let mut c = Client {
        file,
        map,
        out: String::new(),
    };
    fleet.boot(0);
    c.wait_until("DRIVER_OK", |c| {
        c.map.device_status(id::CONSOLE) & status::DRIVER_OK != 0
    });
    c.expect("root@mic0:~# ");
    c.type_line("uname -a");
    let out = c.expect("root@mic0:~# ");
    assert!(
        out.starts_with("uname -a\r\nLinux mic0 3.10.0-micemu "),
        "{out:?}"
    );
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
