//! Measures a name set as tproxyd loads it: load time, resident memory
//! before and after, entries, and the time of single lookups (p50, p99,
//! max) over a mix of listed names, subdomains of listed names and names
//! not listed. For BENCHMARKS.md; build with `--release`.
//!
//! `cargo run --release --example set_bench -- LIST [FORMAT]`
use std::time::{Duration, Instant};

/// As in tproxyd itself.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tproxyd::sets::{Catalog, SetSettings};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let file = args.next().expect("usage: set_bench LIST [FORMAT]");
    let format = args.next().unwrap_or_else(|| "auto".into());
    let yaml = format!("{{bench: {{file: {file:?}, format: {format}}}}}");
    let settings: indexmap::IndexMap<String, SetSettings> = serde_yaml::from_str(&yaml).unwrap();
    let catalog = Catalog::validate(settings, tproxyd::sets::DEFAULT_WATCH_INTERVAL).unwrap();
    let before = rss_kib();
    let started = Instant::now();
    catalog.load_all().unwrap_or_else(|e| panic!("{e}"));
    let load = started.elapsed();
    let after = rss_kib();
    let slot = catalog.find("bench").unwrap();
    let entries = slot.current().map_or(0, |l| l.report.entries);
    // Names to look up: every 7th listed line, a subdomain of it, and a
    // name that is not listed.
    let text = std::fs::read_to_string(&file).unwrap();
    let listed: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches("0.0.0.0 ")
                .trim_start_matches("||")
                .trim_end_matches('^')
        })
        .step_by(7)
        .take(200_000)
        .collect();
    let mut probes: Vec<String> = Vec::with_capacity(listed.len() * 3);
    for n in &listed {
        probes.push(n.to_string());
        probes.push(format!("x1.{n}"));
        probes.push(format!("{n}.unlisted-tld"));
    }
    drop(text);
    let mut times: Vec<Duration> = Vec::with_capacity(probes.len());
    let mut hits = 0usize;
    for p in &probes {
        let t = Instant::now();
        hits += usize::from(std::hint::black_box(slot.contains_name(p)));
        times.push(t.elapsed());
    }
    let timer = {
        let t = Instant::now();
        for _ in 0..100_000 {
            std::hint::black_box(Instant::now());
        }
        t.elapsed() / 100_000
    };
    times.sort();
    let pct = |q: f64| times[((times.len() as f64 - 1.0) * q) as usize];
    println!("entries {entries}");
    println!("load_seconds {:.3}", load.as_secs_f64());
    println!("rss_before_mib {:.1}", before as f64 / 1024.0);
    println!("rss_after_mib {:.1}", after as f64 / 1024.0);
    if let Some(tproxyd::sets::Contents::Names(n)) = slot.current().as_deref().map(|l| &l.contents)
    {
        println!("table_mib {:.1}", n.size() as f64 / 1024.0 / 1024.0);
    }
    println!(
        "rss_growth_mib {:.1}",
        (after.saturating_sub(before)) as f64 / 1024.0
    );
    println!("lookups {} hits {hits}", probes.len());
    println!("lookup_p50_ns {}", pct(0.50).as_nanos());
    println!("lookup_p99_ns {}", pct(0.99).as_nanos());
    println!("lookup_max_ns {}", times.last().unwrap().as_nanos());
    println!("timer_overhead_ns {}", timer.as_nanos());
}
