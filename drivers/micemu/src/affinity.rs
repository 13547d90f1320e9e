//! Moving a thread off a CPU, for threads that stand in for hardware: the
//! card's DMA engine (the `dev/micN` server) and, in benchmarks, the card's
//! own cores, which on a real machine never take the CPU of the host
//! thread they work with. The scheduler puts a woken thread beside its
//! waker and keeps a thread that ran a moment ago where it is, so on a
//! small machine two such threads can end up taking turns on one CPU.

/// Moves the calling thread off CPU `cpu` (0-based) at once, if its
/// affinity allows another: the affinity is narrowed to the others, which
/// migrates the thread, and put back as it was, so the scheduler is free
/// to place it again later. Whether it moved.
#[must_use = "whether the thread moved"]
pub fn move_off(cpu: usize) -> bool {
    let me = nix::unistd::Pid::from_raw(0);
    let Ok(all) = nix::sched::sched_getaffinity(me) else {
        return false;
    };
    let mut others = all;
    if others.unset(cpu).is_err()
        || !(0..nix::sched::CpuSet::count()).any(|c| others.is_set(c).unwrap_or(false))
        || nix::sched::sched_setaffinity(me, &others).is_err()
    {
        return false;
    }
    let _ = nix::sched::sched_setaffinity(me, &all);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_moves_off_its_cpu_and_keeps_its_affinity() {
        let me = nix::unistd::Pid::from_raw(0);
        let before = nix::sched::sched_getaffinity(me).unwrap();
        let allowed = (0..nix::sched::CpuSet::count())
            .filter(|&c| before.is_set(c).unwrap_or(false))
            .count();
        let here = nix::sched::sched_getcpu().unwrap();
        let moved = move_off(here);
        assert_eq!(moved, allowed > 1, "moves only where another CPU is allowed");
        if moved {
            // Migrated at once: the affinity change takes the thread off
            // before the call returns.
            assert_ne!(nix::sched::sched_getcpu().unwrap(), here);
        }
        let after = nix::sched::sched_getaffinity(me).unwrap();
        assert!(
            (0..nix::sched::CpuSet::count()).all(|c| before.is_set(c).ok() == after.is_set(c).ok()),
            "the affinity is put back"
        );
    }
}
