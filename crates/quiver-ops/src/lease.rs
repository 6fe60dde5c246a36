//! Leases in the online store that keep work to one process at a time when several share a
//! store: one run per view, one schedule holder. A lease expires unless its holder renews
//! it, so the work moves on when a holder dies.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use quiver_online::{OnlineError, OnlineStore};

use crate::error::Result;

/// How long a run's lease lasts without renewal.
pub(crate) const RUN_LEASE: Duration = Duration::from_secs(15);
/// How long the schedule lease lasts without renewal.
pub(crate) const SCHEDULE_LEASE: Duration = Duration::from_secs(10);
/// How often a waiting process asks for a lease.
const POLL: Duration = Duration::from_millis(100);

/// The lease name of runs of `view` in `project`.
pub(crate) fn run_lease(project: &str, view: &str) -> String {
    format!("{project}/run/{view}")
}

/// The lease name of `project`'s materialization schedule.
pub(crate) fn schedule_lease(project: &str) -> String {
    format!("{project}/schedule")
}

/// A name for this process among the holders of a store's leases: host, process id and the
/// time it started (a restarted process is a new holder).
pub(crate) fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map_or_else(|| "localhost".to_owned(), |h| h.trim().to_owned());
    format!(
        "{host}/{}/{:x}",
        std::process::id(),
        quiver_core::now_nanos()
    )
}

/// Waits until `holder` has the lease `name`, asking every [`POLL`]; [`OnlineError::Cancelled`]
/// once `cancel` is set.
pub(crate) fn wait_for_lease(
    store: &dyn OnlineStore,
    name: &str,
    holder: &str,
    ttl: Duration,
    cancel: Option<&AtomicBool>,
) -> Result<()> {
    loop {
        if store.acquire_lease(name, holder, ttl)? {
            return Ok(());
        }
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(OnlineError::Cancelled.into());
        }
        std::thread::sleep(POLL);
    }
}

/// Runs `work` while holding the lease `name` (already taken), renewing it every third of
/// `ttl` from a second thread. `work` gets a flag that is set when the caller's `cancel` is,
/// or when the lease is lost (another holder took it after a renewal failed for `ttl`);
/// returns `work`'s result and whether the lease was lost. Releases the lease at the end.
pub(crate) fn while_holding<T>(
    store: &dyn OnlineStore,
    name: &str,
    holder: &str,
    ttl: Duration,
    cancel: Option<&AtomicBool>,
    work: impl FnOnce(&AtomicBool) -> T,
) -> (T, bool) {
    let stop = AtomicBool::new(false);
    let lost = AtomicBool::new(false);
    // Dropped when the work ends, which wakes the renewing thread at once.
    let (done, ended) = std::sync::mpsc::channel::<()>();
    let (stop_ref, lost_ref) = (&stop, &lost);
    let result = std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut renewed = Instant::now();
            let mut last_try = Instant::now();
            while let Err(RecvTimeoutError::Timeout) = ended.recv_timeout(POLL) {
                if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                    stop_ref.store(true, Ordering::Release);
                }
                if last_try.elapsed() < ttl / 3 {
                    continue;
                }
                last_try = Instant::now();
                match store.acquire_lease(name, holder, ttl) {
                    Ok(true) => renewed = Instant::now(),
                    // Unreachable for now: keep trying until the lease may have expired.
                    Err(_) if renewed.elapsed() < ttl => {}
                    Ok(false) | Err(_) => {
                        lost_ref.store(true, Ordering::Release);
                        stop_ref.store(true, Ordering::Release);
                    }
                }
            }
        });
        let result = work(&stop);
        drop(done);
        result
    });
    let lost = lost.load(Ordering::Acquire);
    if !lost {
        let _ = store.release_lease(name, holder);
    }
    (result, lost)
}
