//! Keeping sets current: every `sets_watch_interval` each set's file is
//! checked (its size, modification time and inode); a changed file, or a
//! SIGHUP, reloads it on a blocking thread off the request path. A load
//! that fails keeps the previous set, logs why naming the file, and counts
//! `tproxyd_set_reload_total{result="error"}`; a file that stays broken is
//! not retried until it changes again, so there is no log storm.

use super::{Loaded, Slot};
use async_trait::async_trait;
use log::{error, info};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_prometheus::prometheus::{
    register_gauge_vec, register_int_counter_vec, register_int_gauge_vec, GaugeVec, IntCounterVec,
    IntGaugeVec,
};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, UNIX_EPOCH};

static RELOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tproxyd_set_reload_total",
        "Loads of a set's file after start-up, by result (ok, error: the previous set was kept).",
        &["set", "result"]
    )
    .expect("metric registers once")
});
static ENTRIES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "tproxyd_set_entries",
        "Entries in a set as loaded now.",
        &["set"]
    )
    .expect("metric registers once")
});
static SKIPPED: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "tproxyd_set_skipped_lines",
        "Lines of a set's file skipped as not of its format, at its last load.",
        &["set"]
    )
    .expect("metric registers once")
});
static LOADED_AT: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec!(
        "tproxyd_set_loaded_timestamp_seconds",
        "When a set was last loaded, since the Unix epoch.",
        &["set"]
    )
    .expect("metric registers once")
});

/// Publishes a successful load of `slot`.
pub fn loaded(slot: &Slot, l: &Loaded) {
    let name = slot.name.as_str();
    ENTRIES
        .with_label_values(&[name])
        .set(l.report.entries as i64);
    SKIPPED
        .with_label_values(&[name])
        .set(l.report.skipped as i64);
    let at = l.at.duration_since(UNIX_EPOCH).unwrap_or_default();
    LOADED_AT.with_label_values(&[name]).set(at.as_secs_f64());
    // Both results exist from the first load on, at zero: `increase()`
    // and alerts then see the first failed reload too.
    for result in ["ok", "error"] {
        RELOADS.with_label_values(&[name, result]).inc_by(0);
    }
}

/// What identifies a version of a file: size, modification time, inode.
type Stamp = Option<(u64, i64, i64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.mtime(), m.mtime_nsec(), m.ino()))
}

/// Loads `slot` on a thread of its own at the lowest priority (nice 19):
/// a million-name list takes a second of CPU, which must come from idle
/// time, not from the requests of a busy router.
async fn load_aside(slot: Arc<Slot>) -> Result<Arc<Loaded>, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("set load".into())
        .spawn(move || {
            // SAFETY: setpriority on this thread's own id; no memory involved.
            unsafe {
                let tid = nix::libc::gettid();
                nix::libc::setpriority(nix::libc::PRIO_PROCESS, tid as nix::libc::id_t, 19);
            }
            let _ = tx.send(slot.load());
        });
    if let Err(e) = spawned {
        return Err(format!("no thread to load it on: {e}"));
    }
    rx.await
        .unwrap_or_else(|_| Err("the load stopped".to_string()))
}

/// Reloads `slot` off the request path; logs and counts the result.
pub async fn reload(slot: Arc<Slot>) {
    let result = load_aside(slot.clone()).await;
    let name = slot.name.as_str();
    match result {
        Ok(l) => {
            info!(
                "set {name} reloaded from {}: {} entries, {} lines skipped",
                slot.file.display(),
                l.report.entries,
                l.report.skipped
            );
            loaded(&slot, &l);
            RELOADS.with_label_values(&[name, "ok"]).inc();
        }
        Err(why) => {
            error!("set {name}: keeping the previous set: {why}");
            RELOADS.with_label_values(&[name, "error"]).inc();
        }
    }
}

/// The background service that keeps every set current.
pub struct SetsWatcher {
    slots: Vec<Arc<Slot>>,
    interval: Duration,
}

impl SetsWatcher {
    /// Watches `slots` every `interval`.
    pub fn new(slots: Vec<Arc<Slot>>, interval: Duration) -> Self {
        SetsWatcher { slots, interval }
    }
}

#[async_trait]
impl BackgroundService for SetsWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if self.slots.is_empty() {
            return;
        }
        let mut seen: Vec<Stamp> = self.slots.iter().map(|s| stamp(&s.file)).collect();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            let forced = tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(self.interval) => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => true,
            };
            for (slot, seen) in self.slots.iter().zip(seen.iter_mut()) {
                let now = stamp(&slot.file);
                if forced || now != *seen {
                    *seen = now;
                    reload(slot.clone()).await;
                }
            }
        }
    }
}
