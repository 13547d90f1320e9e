//! What each open file's reads serve (the `seq_file` buffer of a kernfs or
//! debugfs file): one show, kept from the read at offset 0 until the next.
//!
//! Kept shows are bounded. Handles whose show returned the same bytes share
//! one copy (a thousand readers of an unchanged 128 KiB `log_buf` hold one
//! 128 KiB buffer), and all the copies a mount keeps together never exceed
//! its budget: past it a handle keeps nothing and each of its reads shows
//! afresh, as the original driver's `log_buf` read did.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use super::Tree;

/// Which file a show is of.
pub(crate) type FileKey = (Tree, u32, &'static str);

/// One kept show, shared by every handle that saw these bytes.
#[derive(Debug)]
pub(crate) struct Snapshot {
    data: Box<[u8]>,
    held: Arc<AtomicUsize>,
}

impl Deref for Snapshot {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        self.held.fetch_sub(self.data.len(), Ordering::SeqCst);
    }
}

/// The shows a mount keeps, and what they cost.
#[derive(Debug)]
pub(crate) struct Snapshots {
    budget: usize,
    /// Bytes of every live [`Snapshot`] (each counted once, however shared).
    held: Arc<AtomicUsize>,
    /// The newest show kept of each file, to share with the next reader.
    newest: Mutex<HashMap<FileKey, Weak<Snapshot>>>,
}

impl Snapshots {
    /// Keeps at most `budget` bytes of shows at a time.
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            budget,
            held: Arc::new(AtomicUsize::new(0)),
            newest: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps the show `data` of `file` for a handle: the file's newest kept
    /// show if it holds the same bytes, else a new one if the budget has
    /// room. `Err(data)` when it has not: the caller serves this read from
    /// `data` and keeps nothing.
    pub(crate) fn keep(&self, file: FileKey, data: Vec<u8>) -> Result<Arc<Snapshot>, Vec<u8>> {
        let mut newest = self.newest.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(same) = newest
            .get(&file)
            .and_then(Weak::upgrade)
            .filter(|s| s.data[..] == data[..])
        {
            return Ok(same);
        }
        let len = data.len();
        let fits = self
            .held
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
                held.checked_add(len).filter(|&total| total <= self.budget)
            })
            .is_ok();
        if !fits {
            return Err(data);
        }
        let kept = Arc::new(Snapshot {
            data: data.into_boxed_slice(),
            held: Arc::clone(&self.held),
        });
        newest.insert(file, Arc::downgrade(&kept));
        Ok(kept)
    }

    /// Bytes of shows kept now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: FileKey = (Tree::Debugfs, 0, "log_buf");

    #[test]
    fn equal_shows_share_and_the_budget_holds() {
        let s = Snapshots::new(100);
        let a = s.keep(LOG, vec![1; 60]).unwrap();
        let b = s.keep(LOG, vec![1; 60]).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(s.held(), 60);
        // Different bytes that do not fit: not kept, handed back.
        assert_eq!(s.keep(LOG, vec![2; 60]).unwrap_err(), vec![2; 60]);
        // The same bytes of another file are another show.
        assert!(s.keep((Tree::Debugfs, 1, "log_buf"), vec![1; 60]).is_err());
        let small = s.keep(LOG, vec![3; 40]).unwrap();
        assert_eq!(s.held(), 100);
        // Empty shows always fit.
        assert!(s.keep((Tree::Sysfs, 0, "cmdline"), Vec::new()).is_ok());
        drop((a, small));
        assert_eq!(s.held(), 60, "b still holds the first show");
        drop(b);
        assert_eq!(s.held(), 0);
        assert!(s.keep(LOG, vec![2; 100]).is_ok());
    }
}
