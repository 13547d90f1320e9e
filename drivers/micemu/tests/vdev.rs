//! `dev/micN` in process: a virtio device added to a running emulated card
//! appears in the device page and debugfs, maps read-only with the original
//! layout, and is removed on close within the handshake's bound.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mic_core::abi::virtio::id;
use mic_core::abi::{MicDeviceDesc, MicVqconfig, desc_size};
use micemu::dev::{CondvarWaker, VdevFile};
use micemu::{Config, Instance, Timing};

fn console_block() -> Vec<u8> {
    let d = MicDeviceDesc {
        ty: id::CONSOLE,
        num_vq: 2,
        feature_len: 4,
        config_len: 12,
        status: 0,
    };
    let mut b = vec![0u8; desc_size(&d)];
    b[..8].copy_from_slice(&d.to_bytes());
    for i in 0..2 {
        let vq = MicVqconfig {
            address: 0,
            used_address: 0,
            num: 128,
        };
        b[d.vq_offset(i)..d.vq_offset(i) + 24].copy_from_slice(&vq.to_bytes());
    }
    b
}

fn fleet() -> (tempfile::TempDir, Instance) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        cards: 1,
        memory: 1 << 30,
        timing: Timing::FAST,
        ..Config::default()
    };
    let inst = Instance::start(dir.path(), config).unwrap();
    (dir, inst)
}

#[test]
fn add_map_and_close_a_device_on_an_offline_card() {
    let (dir, inst) = fleet();
    let emu = Arc::clone(inst.emulator_arc());
    let waker = Arc::new(CondvarWaker::default());
    let file = VdevFile::open(&emu, 0, Box::new(Arc::clone(&waker))).unwrap();
    // Nothing added yet: mmap and copies are EINVAL, poll reports an error.
    assert!(file.poll_error());
    assert_eq!(file.mmap(0, 4096, false).unwrap_err(), libc::EINVAL);
    file.add_device(&console_block()).unwrap();
    assert_eq!(file.add_device(&console_block()).unwrap_err(), libc::EBUSY);
    assert!(!file.poll_error());
    // debugfs shows it, as the original's dp and vdev_info did.
    let dbg = dir.path().join("sys/kernel/debug/mic_host/mic0");
    let dp = std::fs::read_to_string(dbg.join("dp")).unwrap();
    assert!(dp.contains("Device type 3 num_vq 2"), "{dp}");
    let info = std::fs::read_to_string(dbg.join("vdev_info")).unwrap();
    assert!(info.starts_with("VDEV type 3 (console) state DOWN"), "{info}");
    // Mapping: read-only only, the original layout, offsets at pieces only.
    assert_eq!(file.mmap(0, 4096, true).unwrap_err(), libc::EACCES);
    assert_eq!(file.mmap(0x800, 4096, false).unwrap_err(), libc::EINVAL);
    assert_eq!(file.mmap(0, 0x1000 + 3 * 8192, false).unwrap_err(), libc::EINVAL);
    let plan = file.mmap(0, 0x1000 + 2 * 8192, false).unwrap();
    let at: Vec<_> = plan.pieces.iter().map(|p| (p.0, p.2)).collect();
    assert_eq!(at, [(0, 4096), (0x1000, 8192), (0x3000, 8192)]);
    let mut magic = [0u8; 4];
    std::os::unix::fs::FileExt::read_exact_at(&plan.fd, &mut magic, plan.pieces[0].1).unwrap();
    assert_eq!(u32::from_le_bytes(magic), mic_core::abi::MIC_MAGIC);
    // The memory behind the mapping cannot be written by other means
    // either: not opened again read-write, not mapped shared-writable.
    {
        use std::os::fd::AsRawFd as _;
        let again = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/self/fd/{}", plan.fd.as_raw_fd()));
        if let Ok(rw) = again {
            let e = std::os::unix::fs::FileExt::write_at(&rw, &[0xff; 4], plan.pieces[0].1).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
            // SAFETY: a new mapping of an fd of ours (nothing aliases it),
            // unmapped at once if it was made.
            let mapped = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    rw.as_raw_fd(),
                    0,
                )
            };
            let err = std::io::Error::last_os_error();
            if mapped != libc::MAP_FAILED {
                // SAFETY: the mapping just made, 4096 bytes.
                unsafe { libc::munmap(mapped, 4096) };
            }
            assert_eq!(mapped, libc::MAP_FAILED, "a writable shared mapping was made");
            assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
        }
        std::os::unix::fs::FileExt::read_exact_at(&plan.fd, &mut magic, plan.pieces[0].1).unwrap();
        assert_eq!(u32::from_le_bytes(magic), mic_core::abi::MIC_MAGIC);
    }
    // COPY_DESC before the card started the device: ENODEV.
    let mut buf = [0u8; 16];
    let mut user = micemu::dev::LocalBuffers::new(&file, &mut buf);
    assert_eq!(file.copy_desc(0, &mut user, true).unwrap_err(), libc::ENODEV);
    // No card OS to acknowledge: close still returns within the budget.
    let t = Instant::now();
    file.close();
    assert!(t.elapsed() < Duration::from_secs(5));
    let dp = std::fs::read_to_string(dbg.join("dp")).unwrap();
    assert!(!dp.contains("Device type 3"), "{dp}");
    assert_eq!(std::fs::read_to_string(dbg.join("vdev_info")).unwrap(), "");
    drop(inst);
}
