//! The tproxyd process under test: [`Proxy`], its binaries, its
//! [`lab_config`], and the [`TempDir`] that holds its files.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{poll_until, router_port_open, Lab, LAB_COUNTER};

/// A tproxyd process in the router namespace, killed on drop.
pub struct Proxy {
    child: Child,
    pub log: PathBuf,
    _dir: Option<TempDir>,
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = LAB_COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("tproxyd-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn tproxyd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tproxyd")
}

/// The path of an example binary (built by `cargo test` / `cargo build
/// --examples`, next to the tproxyd binary).
pub fn example_bin(name: &str) -> String {
    let p = Path::new(tproxyd_bin())
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: build the examples (`cargo test` does, or `cargo build --examples`)",
        p.display()
    );
    p.to_string_lossy().into_owned()
}

/// The lab's standard config: TPROXY on [::]:8888, REDIRECT on [::]:8889,
/// 2 threads, short timeouts so that failure tests are quick. `extra` is appended to the
/// `tproxyd:` section.
pub fn lab_config(dir: &Path, extra: &str) -> String {
    format!(
        r#"version: 1
threads: 2
pid_file: {dir}/tproxyd.pid
upgrade_sock: {dir}/upgrade.sock
grace_period_seconds: 1
graceful_shutdown_timeout_seconds: 1
tproxyd:
  listeners:
    - name: lan-http
      address: "[::]:8888"
      mode: tproxy
    - name: lan-nat
      address: "[::]:8889"
      mode: redirect
  upstream:
    connect_timeout: 1s
    read_timeout: 3s
{extra}"#,
        dir = dir.display()
    )
}

impl Proxy {
    /// Starts tproxyd with `yaml` and waits until its listeners accept.
    pub fn start(lab: &Lab, yaml: &str, ports: &[u16]) -> Proxy {
        Proxy::start_bin(lab, tproxyd_bin(), yaml, ports)
    }

    /// Like [`Proxy::start`] with another binary built on the library
    /// (an example).
    pub fn start_bin(lab: &Lab, bin: &str, yaml: &str, ports: &[u16]) -> Proxy {
        let dir = TempDir::new("proxy");
        let mut proxy = Proxy::spawn_bin(lab, bin, &dir.0, "tproxyd", yaml, &[]);
        proxy._dir = Some(dir);
        proxy.wait_listening(lab, ports);
        proxy
    }

    /// Starts tproxyd without waiting, with its config and log named `tag`
    /// in `dir` and extra CLI `args` (e.g. `-u`).
    pub fn spawn(lab: &Lab, dir: &Path, tag: &str, yaml: &str, args: &[&str]) -> Proxy {
        Proxy::spawn_bin(lab, tproxyd_bin(), dir, tag, yaml, args)
    }

    fn spawn_bin(lab: &Lab, bin: &str, dir: &Path, tag: &str, yaml: &str, args: &[&str]) -> Proxy {
        let conf = dir.join(format!("{tag}.yaml"));
        std::fs::write(&conf, yaml).unwrap();
        let log = dir.join(format!("{tag}.log"));
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.router_ns(), bin])
            .args(args)
            .arg("-c")
            .arg(&conf)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join(format!("{tag}.stdout"))).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn tproxyd");
        Proxy {
            child,
            log,
            _dir: None,
        }
    }

    /// Waits (up to 15 s in all) until each port accepts connections in the
    /// router namespace; panics at once if the process exits meanwhile.
    pub fn wait_listening(&mut self, lab: &Lab, ports: &[u16]) {
        let deadline = Instant::now() + Duration::from_secs(15);
        for &port in ports {
            let child = &mut self.child;
            let log = &self.log;
            let up = poll_until(deadline.saturating_duration_since(Instant::now()), || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "tproxyd exited early ({status}):\n{}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    );
                }
                router_port_open(lab, port)
            });
            assert!(up, "tproxyd did not listen on {port}:\n{}", self.log_text());
        }
    }

    /// Waits (up to 10 s) until this process, started with `-u` and the
    /// [`lab_config`] of `dir`, listens on the upgrade socket, so that the
    /// old process hands its listeners over as soon as it gets SIGQUIT.
    /// Only looks for the socket file: a probe connection would be taken
    /// for the old process's handover.
    pub fn wait_upgrade_socket(&mut self, dir: &Path) {
        use std::os::unix::fs::FileTypeExt;
        let sock = dir.join("upgrade.sock");
        let child = &mut self.child;
        let log = &self.log;
        let ready = poll_until(Duration::from_secs(10), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "tproxyd -u exited early ({status}):\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            std::fs::metadata(&sock).is_ok_and(|m| m.file_type().is_socket())
        });
        assert!(
            ready,
            "tproxyd -u never created {}:\n{}",
            sock.display(),
            self.log_text()
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) the process has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // The fields after the command name, which ends with ')': utime
        // and stime are the 14th and 15th, in clock ticks (100 Hz).
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        Duration::from_millis((f[11] + f[12]) * 10)
    }

    /// Sends a signal to the tproxyd process.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig)
            .expect("signal tproxyd");
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        poll_until(limit, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Access-log lines (the default text access log, on stderr: they
    /// start with their timestamp, operational log lines with `[`).
    pub fn access_lines(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()) && l.contains(" -> "))
            .map(str::to_string)
            .collect()
    }

    /// Waits (up to 5 s) until an access-log line contains all of `needles`.
    pub fn wait_access(&self, needles: &[&str]) -> String {
        let mut line = None;
        let found = poll_until(Duration::from_secs(5), || {
            line = self
                .access_lines()
                .into_iter()
                .find(|l| needles.iter().all(|n| l.contains(n)));
            line.is_some()
        });
        assert!(
            found,
            "no access-log line with {needles:?} in:\n{}",
            self.log_text()
        );
        line.unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
