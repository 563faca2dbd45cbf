//! Rates over the last minute, from the counters the metrics already keep:
//! a ring of per-second snapshots of their sums; a rate is the counters
//! now against the snapshot a minute old. The request path does nothing
//! for it.

use crate::flow::{DownstreamLimit, Refusal};
use crate::metrics::Totals;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How far back the rates look.
pub const WINDOW: Duration = Duration::from_secs(60);

/// `a + b`, counter by counter.
pub fn add(a: &Totals, b: &Totals) -> Totals {
    Totals {
        requests: a.requests + b.requests,
        connections: a.connections + b.connections,
        rx: a.rx + b.rx,
        tx: a.tx + b.tx,
        refused: std::array::from_fn(|i| a.refused[i] + b.refused[i]),
        limits: std::array::from_fn(|i| a.limits[i] + b.limits[i]),
    }
}

/// `now - then`, counter by counter (never below zero).
fn since(now: &Totals, then: &Totals) -> Totals {
    Totals {
        requests: now.requests.saturating_sub(then.requests),
        connections: now.connections.saturating_sub(then.connections),
        rx: now.rx.saturating_sub(then.rx),
        tx: now.tx.saturating_sub(then.tx),
        refused: std::array::from_fn(|i| now.refused[i].saturating_sub(then.refused[i])),
        limits: std::array::from_fn(|i| now.limits[i].saturating_sub(then.limits[i])),
    }
}

/// What happened over the last minute (or since start, when younger).
#[derive(Debug, Clone, Serialize)]
pub struct LastMinute {
    /// Seconds the counts cover.
    pub seconds: f64,
    /// Finished requests (and CONNECTs).
    pub requests: u64,
    /// Finished TLS passthrough connections and tunnels.
    pub connections: u64,
    /// Requests per second.
    pub requests_per_second: f64,
    /// Bytes from clients.
    pub bytes_in: u64,
    /// Bytes to clients.
    pub bytes_out: u64,
    /// Bytes per second, both ways.
    pub bytes_per_second: f64,
    /// Refusals by reason (only those that happened).
    pub refused: BTreeMap<&'static str, u64>,
    /// Client-side limits fired, by limit (only those that fired).
    pub limits: BTreeMap<&'static str, u64>,
}

/// The snapshots of the last minute.
#[derive(Debug)]
pub struct Rates {
    ring: Mutex<VecDeque<(Instant, Totals)>>,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            ring: Mutex::new(VecDeque::from([(Instant::now(), Totals::default())])),
        }
    }
}

impl Rates {
    /// Keeps `totals` as they stand at `at`; drops what is older than
    /// needed (the newest snapshot at least [`WINDOW`] old is kept).
    pub fn tick(&self, at: Instant, totals: Totals) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.push_back((at, totals));
        while ring
            .get(1)
            .is_some_and(|(t, _)| at.saturating_duration_since(*t) >= WINDOW)
        {
            ring.pop_front();
        }
    }

    /// The last minute up to `now`, whose counters are `totals`.
    pub fn last_minute(&self, now: Instant, totals: &Totals) -> LastMinute {
        let (then, old) = {
            let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
            // The oldest snapshot within the window, else the oldest kept.
            let pick = ring
                .iter()
                .find(|(t, _)| now.saturating_duration_since(*t) <= WINDOW + Duration::from_secs(1))
                .or(ring.front());
            pick.copied().unwrap_or((now, Totals::default()))
        };
        let d = since(totals, &old);
        let seconds = now.saturating_duration_since(then).as_secs_f64().max(1.0);
        let per = |n: u64| (n as f64 / seconds * 100.0).round() / 100.0;
        let named = |labels: &[&'static str], counts: &[u64]| {
            labels
                .iter()
                .zip(counts)
                .filter(|(_, n)| **n > 0)
                .map(|(l, n)| (*l, *n))
                .collect()
        };
        LastMinute {
            seconds: seconds.round(),
            requests: d.requests,
            connections: d.connections,
            requests_per_second: per(d.requests),
            bytes_in: d.rx,
            bytes_out: d.tx,
            bytes_per_second: per(d.rx + d.tx),
            refused: named(&Refusal::ALL.map(Refusal::as_str), &d.refused),
            limits: named(
                &DownstreamLimit::ALL.map(DownstreamLimit::as_str),
                &d.limits,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(requests: u64, acl: u64) -> Totals {
        let mut t = Totals {
            requests,
            ..Totals::default()
        };
        t.refused[Refusal::Acl.index()] = acl;
        t
    }

    #[test]
    fn rates_cover_the_last_minute_only() {
        let r = Rates::default();
        let start = Instant::now();
        for s in 1..=120u64 {
            r.tick(start + Duration::from_secs(s), totals(s * 10, s / 60));
        }
        let now = start + Duration::from_secs(121);
        let m = r.last_minute(now, &totals(1215, 2));
        assert!((60.0..=62.0).contains(&m.seconds), "{}", m.seconds);
        // 1215 now against 600 or 610 a minute ago.
        assert!(m.requests == 615 || m.requests == 605, "{}", m.requests);
        assert_eq!(m.refused.get("acl"), Some(&1));
        assert!(m.limits.is_empty());
        assert!(r.ring.lock().unwrap().len() <= 62);
    }

    #[test]
    fn a_young_process_counts_since_start() {
        let r = Rates::default();
        let m = r.last_minute(Instant::now(), &totals(3, 1));
        assert_eq!((m.requests, m.refused.get("acl")), (3, Some(&1)));
    }
}
