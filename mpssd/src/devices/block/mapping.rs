//! The image mapped into mpssd, as the original mapped its image, and
//! copied to and from with `memcpy`: a tmpfs or page-cache image is read
//! at two to three times the speed of `pread` (which pays a page-cache
//! look-up and lock per 4 KiB page), and the request's copy through micemu
//! then costs more than the image's.
//!
//! A mapped file can fault: SIGBUS when the file shrank under mpssd, or
//! when a write lands in a hole its filesystem has no room for. That is an
//! I/O error of the request, never the daemon's death: the SIGBUS handler
//! installed here looks the faulting address up among the live mappings
//! (a fixed table of atomics), maps an anonymous page over the faulting
//! page and counts the fault; the copy runs on over it, is then reported
//! failed, and the file is mapped again over the whole range (so the next
//! copy sees the file as it is now: the page back, or the fault again). A
//! SIGBUS anywhere else goes to the handler that was there before (Rust's
//! stack-overflow check, or the default: the process dies as it would
//! have).

#![allow(unsafe_code)]

use std::ffi::c_void;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd as _;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicUsize, Ordering, compiler_fence};
use std::sync::{Mutex, OnceLock, PoisonError};

/// Mappings live at once, at most (one per card's disk, and a swap's
/// overlap); an image past them is read and written with `pread` and
/// `pwrite`.
const SLOTS: usize = 1024;
/// A slot's `start` while it is being filled.
const CLAIMED: usize = 1;

struct Slot {
    start: AtomicUsize,
    end: AtomicUsize,
    faults: AtomicU32,
}

static TABLE: [Slot; SLOTS] = [const {
    Slot {
        start: AtomicUsize::new(0),
        end: AtomicUsize::new(0),
        faults: AtomicU32::new(0),
    }
}; SLOTS];

/// The SIGBUS disposition before ours (leaked: the handler reads it).
static PREVIOUS: AtomicPtr<libc::sigaction> = AtomicPtr::new(std::ptr::null_mut());
static PAGE: AtomicUsize = AtomicUsize::new(4096);

/// The SIGBUS handler: async-signal-safe (atomics, `mmap`, `signal`).
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let page = PAGE.load(Ordering::Relaxed);
    for s in &TABLE {
        let start = s.start.load(Ordering::Acquire);
        if start > CLAIMED && addr >= start && addr < s.end.load(Ordering::Acquire) {
            let at = addr & !(page - 1);
            // SAFETY: `at` is a page of a live mapping of ours (the table
            // holds only those); an anonymous page replaces it, which the
            // owner maps back over before it is used again.
            let p = unsafe {
                libc::mmap(
                    at as *mut c_void,
                    page,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                s.faults.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
    }
    let prev = PREVIOUS.load(Ordering::Acquire);
    // SAFETY: `prev` is null or the leaked copy of the disposition that
    // was installed before ours; a handler in it is a function of one of
    // the two signatures its flags say.
    unsafe {
        if let Some(act) = prev.as_ref() {
            let h = act.sa_sigaction;
            if h != libc::SIG_DFL && h != libc::SIG_IGN {
                if act.sa_flags & libc::SA_SIGINFO != 0 {
                    let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void) =
                        std::mem::transmute(h);
                    f(sig, info, ctx);
                } else {
                    let f: extern "C" fn(libc::c_int) = std::mem::transmute(h);
                    f(sig);
                }
                return;
            }
        }
        // Not ours, nobody else's: the fault happens again on return, and
        // kills as it would have.
        libc::signal(libc::SIGBUS, libc::SIG_DFL);
    }
}

/// Installs the handler once; whether it is in place.
fn install() -> bool {
    static DONE: OnceLock<bool> = OnceLock::new();
    *DONE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if let Ok(p) = usize::try_from(page) {
            if p.is_power_of_two() {
                PAGE.store(p, Ordering::Relaxed);
            }
        }
        // SAFETY: zeroed sigaction structs are valid; ours names a handler
        // of the SA_SIGINFO signature with an empty mask; the previous one
        // is written by the kernel into memory we own, then leaked for the
        // handler.
        unsafe {
            let prev: *mut libc::sigaction = Box::into_raw(Box::new(std::mem::zeroed()));
            let mut act: libc::sigaction = std::mem::zeroed();
            let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void) = on_sigbus;
            act.sa_sigaction = handler as *const () as libc::sighandler_t;
            act.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&raw mut act.sa_mask);
            // The previous disposition first, so the handler never sees a
            // null one that was not.
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), prev) != 0 {
                return false;
            }
            PREVIOUS.store(prev, Ordering::Release);
            libc::sigaction(libc::SIGBUS, &raw const act, std::ptr::null_mut()) == 0
        }
    })
}

/// Why a mapped copy failed.
fn fault() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the image has no page there (it shrank, or its filesystem is full)",
    )
}

/// A shared mapping of a whole image, registered with the SIGBUS handler.
#[derive(Debug)]
pub struct Mapped {
    // INVARIANT: `ptr .. ptr + len` is a live shared mapping of `file`
    // owned by this value (unmapped only by Drop), registered in
    // `TABLE[slot]` for as long; `len > 0`.
    ptr: NonNull<u8>,
    len: usize,
    slot: usize,
    file: File,
    writable: bool,
    /// One copy at a time: a fault is counted for the copy that made it.
    lock: Mutex<()>,
    /// Mapping the file back after a fault failed: the range holds
    /// anonymous pages, so it is never used again.
    broken: AtomicBool,
}

// SAFETY: the mapping is shared memory reached only through `lock`; nothing
// in it is tied to a thread.
unsafe impl Send for Mapped {}
// SAFETY: as above.
unsafe impl Sync for Mapped {}

impl Drop for Mapped {
    fn drop(&mut self) {
        TABLE[self.slot].start.store(0, Ordering::Release);
        // SAFETY: the range this value mapped (invariant), no longer
        // registered.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

impl Mapped {
    /// Maps the first `len` bytes of `file` (read-write if `writable`).
    /// `None` when it cannot be (no room in the table, no handler, a file
    /// that does not map): the caller uses `pread` and `pwrite`.
    pub fn new(file: &File, len: u64, writable: bool) -> Option<Self> {
        let len = usize::try_from(len).ok().filter(|&l| l > 0)?;
        if !install() {
            return None;
        }
        let slot = TABLE.iter().position(|s| {
            s.start
                .compare_exchange(0, CLAIMED, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })?;
        let Ok(file) = file.try_clone() else {
            TABLE[slot].start.store(0, Ordering::Release);
            return None;
        };
        // SAFETY: a fresh mapping chosen by the kernel of a file we hold
        // open; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot(writable),
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        let Some(ptr) = NonNull::new(p.cast::<u8>()).filter(|_| p != libc::MAP_FAILED) else {
            TABLE[slot].start.store(0, Ordering::Release);
            return None;
        };
        let s = &TABLE[slot];
        s.end.store(ptr.as_ptr() as usize + len, Ordering::Release);
        s.start.store(ptr.as_ptr() as usize, Ordering::Release);
        Some(Self {
            ptr,
            len,
            slot,
            file,
            writable,
            lock: Mutex::new(()),
            broken: AtomicBool::new(false),
        })
    }

    /// Whether copies can still use the mapping.
    pub fn usable(&self) -> bool {
        !self.broken.load(Ordering::Relaxed)
    }

    /// Copies `buf.len()` bytes from byte `off` of the image into `buf`.
    pub fn read(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let dst = buf.as_mut_ptr();
        self.copy(off, buf.len(), |at| {
            // SAFETY: `at` starts `buf.len()` bytes inside the mapping
            // (checked by `copy`); `buf` is ours and cannot overlap it.
            unsafe { std::ptr::copy_nonoverlapping(at, dst, buf.len()) }
        })
    }

    /// Copies `buf` to byte `off` of the image.
    pub fn write(&self, buf: &[u8], off: u64) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        self.copy(off, buf.len(), |at| {
            // SAFETY: as in `read`, the other way, into a writable mapping.
            unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), at, buf.len()) }
        })
    }

    /// Runs `f` on the address of byte `off` of `len` bytes in the
    /// mapping; a fault meanwhile fails it.
    fn copy(&self, off: u64, len: usize, f: impl FnOnce(*mut u8)) -> io::Result<()> {
        let off = usize::try_from(off)
            .ok()
            .filter(|&o| o.checked_add(len).is_some_and(|e| e <= self.len))
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let _one = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.usable() {
            return Err(fault());
        }
        let faults = &TABLE[self.slot].faults;
        let before = faults.load(Ordering::SeqCst);
        compiler_fence(Ordering::SeqCst);
        // SAFETY: `off + len <= self.len` (checked), inside the mapping.
        f(unsafe { self.ptr.as_ptr().add(off) });
        compiler_fence(Ordering::SeqCst);
        if faults.load(Ordering::SeqCst) == before {
            return Ok(());
        }
        // The file over the anonymous pages again.
        // SAFETY: our own range, replaced by the same file's mapping.
        let p = unsafe {
            libc::mmap(
                self.ptr.as_ptr().cast(),
                self.len,
                prot(self.writable),
                libc::MAP_SHARED | libc::MAP_FIXED,
                self.file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            self.broken.store(true, Ordering::Relaxed);
        }
        Err(fault())
    }
}

fn prot(writable: bool) -> libc::c_int {
    if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::fs::FileExt as _;

    use super::*;

    fn image(len: usize) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.img");
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, data).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        (dir, f)
    }

    #[test]
    fn copies_are_the_files_bytes_both_ways() {
        let (_d, f) = image(1 << 16);
        let m = Mapped::new(&f, 1 << 16, true).unwrap();
        let mut buf = vec![0u8; 5000];
        m.read(&mut buf, 777).unwrap();
        assert!(buf.iter().enumerate().all(|(i, &b)| b == ((i + 777) % 251) as u8));
        m.write(&[0xab; 600], 4000).unwrap();
        let mut back = vec![0u8; 600];
        f.read_exact_at(&mut back, 4000).unwrap();
        assert_eq!(back, vec![0xab; 600], "a mapped write is the file's");
        f.write_all_at(&[0xcd; 10], 60000).unwrap();
        m.read(&mut back[..10], 60000).unwrap();
        assert_eq!(&back[..10], &[0xcd; 10], "a pwrite is seen through the mapping");
        // Out of range: refused, nothing touched.
        assert_eq!(
            m.read(&mut buf, (1 << 16) - 10).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert!(m.write(&[1], u64::MAX).is_err());
        let ro = Mapped::new(&f, 1 << 16, false).unwrap();
        assert_eq!(
            ro.write(&[1], 0).unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
    }

    #[test]
    fn a_file_that_shrinks_faults_a_copy_not_the_process() {
        let (_d, f) = image(1 << 16);
        let m = Mapped::new(&f, 1 << 16, true).unwrap();
        f.set_len(8192).unwrap();
        let mut buf = vec![0u8; 8192];
        let e = m.read(&mut buf, 16384).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
        assert!(m.write(&[1; 4096], 40960).is_err(), "a write past the end too");
        // What is still in the file reads as the file.
        m.read(&mut buf, 0).unwrap();
        assert!(buf.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        // The file grows back: the mapping is the file's again, no stale
        // anonymous page in between.
        f.set_len(1 << 16).unwrap();
        f.write_all_at(&[9; 4096], 16384).unwrap();
        m.read(&mut buf[..4096], 16384).unwrap();
        assert_eq!(&buf[..4096], &[9; 4096]);
        assert!(m.usable());
    }

    /// The child of [`a_sigbus_elsewhere_still_kills`]: the handler in
    /// place, then a fault in a mapping that is not one of ours.
    #[test]
    #[ignore = "run by a_sigbus_elsewhere_still_kills in a process of its own"]
    fn sigbus_elsewhere() {
        if std::env::var_os("MPSSD_SIGBUS_CHILD").is_none() {
            return;
        }
        let (_d, f) = image(8192);
        let _ours = Mapped::new(&f, 8192, false).unwrap();
        // SAFETY: a fresh read-only mapping of the file, checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        f.set_len(0).unwrap();
        // SAFETY: inside the mapping; the page is gone from the file, so
        // this faults (which is the point).
        let b = unsafe { std::ptr::read_volatile(p.cast::<u8>().add(4096)) };
        println!("survived a fault that was not ours ({b})");
    }

    #[test]
    fn a_sigbus_elsewhere_still_kills() {
        use std::os::unix::process::ExitStatusExt as _;
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "devices::block::mapping::tests::sigbus_elsewhere",
                "--nocapture",
            ])
            .env("MPSSD_SIGBUS_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains("survived"), "{stdout}");
        assert_eq!(out.status.signal(), Some(libc::SIGBUS), "{out:?}");
    }

    #[test]
    fn mappings_free_their_slots() {
        let (_d, f) = image(4096);
        for _ in 0..2 * SLOTS {
            let m = Mapped::new(&f, 4096, false).expect("a slot comes free with every drop");
            drop(m);
        }
    }
}
