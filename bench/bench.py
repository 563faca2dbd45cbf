#!/usr/bin/env python3
"""tproxyd benchmarks, in the namespace lab, side by side with its peers.

Scenarios, measured in one run on the same lab with the same load:
  direct         routed, not intercepted (the limit of this machine)
  tproxyd        release build, conf/tproxyd.yaml (the shipped default config)
  tproxyd-nolog  the same with `access_log: { enabled: false }`
  pingora-bare   examples/pingora_bare.rs: the smallest Pingora ProxyHttp on the
                 same kind of runtime as the shipped config (`work_stealing`),
                 same transparent socket path, nothing else (the framework floor)
  haproxy        HAProxy as a transparent proxy (bind ... transparent, server 0.0.0.0:0)
  squid          Debian's Squid intercepting with TPROXY, caching off, 2 workers
                 (bench/squid.conf): the transparent proxy gateways ran before
  go-seed        the article's Go proxy (../shared/seed/go-proxy, or the directory
                 in TPROXYD_BENCH_SEED), built at bench time
  pingora-bare-alt  only with --alt-bare: that pingora_bare binary (another
                 build of the floor, e.g. without the vendored patches)
  tproxyd-alt    only with --alt-conf and/or --alt-bin: tproxyd with another
                 config or another build (say, the last commit's), for an A/B
                 of one change in the same run

HTTPS scenarios (nginx with a self-signed certificate as the origin; the
proxies never decrypt):
  direct          routed, not intercepted
  tproxyd         the shipped config plus a `tls-passthrough` listener
                  (relay: splice, the default)
  tproxyd-copy    the same with `upstream.relay: copy`
  haproxy-tcp     HAProxy `mode tcp`, transparent, no splicing
  haproxy-splice  the same with `option splice-request` / `splice-response`

Workloads: small responses over keep-alive (as fast as the machine goes, and
paced at a fixed offered rate no proxy saturates, for the latency a proxy
adds rather than its queue), small responses with a new client connection
per request, a 100 MiB download, and many idle keep-alive
connections; over HTTPS, 4 parallel 100 MiB downloads and a new TLS
connection per request; and "mixed", keep-alive HTTP and new TLS
connections through one tproxyd at once (tproxyd and tproxyd-alt only: for runtime and
thread settings). Each (workload, scenario) pair runs `--rounds` times,
interleaved, with a freshly started proxy; the report gives the median and
the spread (min-max) and the ratios tproxyd/pingora-bare, tproxyd/haproxy
(shipped config and log off) and tproxyd/direct (HTTPS: tproxyd against
haproxy with and without splice, tproxyd-copy and direct). The HTTPS
workloads also count the proxy's system calls with `strace -c -f` in a
second, separate run (strace slows the proxy down; the counts per MiB or
per request are what matters, not that run's speed).

Needs root. Installs nginx, wrk, haproxy, squid, strace (and golang-go for
go-seed) with apt-get if they are missing; a scenario whose program is still
missing is left out, and the report says so. Usage:
  sudo bench/bench.py                      # full run (~8 minutes), prints Markdown
  sudo bench/bench.py --out BENCHMARKS.run.md
  sudo bench/bench.py --smoke              # seconds per run, for CI: proves it works
"""
import argparse
import datetime
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = os.environ.get("TPROXYD_BENCH_SEED") or os.path.normpath(
    os.path.join(ROOT, "..", "shared", "seed", "go-proxy"))
# Namespaces of this run only: two runs at once (on a shared machine) must
# not tear down each other's lab.
P = f"tpxb{os.getpid()}"
CLI, RTR, SRV = f"{P}-cli", f"{P}-rtr", f"{P}-srv"
SERVER = "198.51.100.10"
DIRECT_PORT = 9080  # not intercepted by the lab: routed straight to nginx
PROXIED_PORT = 80   # intercepted: nft tproxy -> :8888
TLS_PORT = 443      # intercepted: nft tproxy -> :8443 (tls-passthrough, haproxy mode tcp)
DIRECT_TLS_PORT = 9443  # not intercepted
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
STATUS_PORT = 9090  # nginx stub_status, in the server namespace
TICK = os.sysconf("SC_CLK_TCK")
SCENARIOS = ["direct", "tproxyd", "tproxyd-nolog", "pingora-bare", "haproxy", "squid", "go-seed",
             "tproxyd-alt", "pingora-bare-alt"]
TLS_SCENARIOS = ["direct", "tproxyd", "tproxyd-copy", "haproxy-tcp", "haproxy-splice",
                 "tproxyd-alt"]
# HTTP and HTTPS through one proxy at once: tproxyd's runtimes and threads
# (compare configurations with --alt-conf).
MIXED_SCENARIOS = ["tproxyd", "tproxyd-alt"]


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def shipped_work_stealing():
    """`work_stealing` in conf/tproxyd.yaml (Pingora's default: true)."""
    with open(os.path.join(ROOT, "conf", "tproxyd.yaml")) as f:
        m = re.search(r"^work_stealing:\s*(true|false)\b", f.read(), re.M)
    return m.group(1) if m else "true"


def ns(name, *cmd):
    return ["ip", "netns", "exec", name, *cmd]


def tree_pids(pid):
    """`pid` and its descendants, parents first."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def ensure_tools(go, squid):
    tools = [("nginx", "nginx-light"), ("wrk", "wrk"), ("haproxy", "haproxy"),
             ("nft", "nftables"), ("cmake", "cmake"), ("openssl", "openssl"),
             ("strace", "strace")] + ([("go", "golang-go")] if go else [])
    need = [pkg for tool, pkg in tools if shutil.which(tool) is None]
    if squid and shutil.which("squid") is None:
        need.append("squid")
    if not need:
        return
    log(f"installing {' '.join(need)}")
    # Keep the packages' init scripts from starting services on the host.
    policy = "/usr/sbin/policy-rc.d"
    created = not os.path.exists(policy)
    if created:
        with open(policy, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
    try:
        run(["apt-get", "update", "-qq"])
        run(["apt-get", "install", "-y", "-qq", *need], stdout=subprocess.DEVNULL)
    except subprocess.CalledProcessError:
        # Squid is a peer to compare with, not needed to run the rest.
        if "squid" not in need:
            raise
        need.remove("squid")
        if need:
            run(["apt-get", "install", "-y", "-qq", *need], stdout=subprocess.DEVNULL)
        log("squid could not be installed: the squid scenario is skipped")
    finally:
        if created:
            os.remove(policy)


def tls_listener(conf, copy):
    """The shipped config with a tls-passthrough listener on [::]:8443 (and
    `upstream.relay: copy` when `copy`)."""
    listener = '    - { name: lan-tls, address: "[::]:8443", mode: tls-passthrough }\n'
    text, n = re.subn(r"(?m)^  listeners:\n", lambda m: m.group(0) + listener, conf, count=1)
    if n != 1:
        sys.exit("bench: no `listeners:` in the tproxyd config")
    if copy:
        text, n = re.subn(r"(?m)^    relay: splice\b", "    relay: copy", text, count=1)
        if n != 1:
            sys.exit("bench: no `relay: splice` under upstream in the tproxyd config")
    return text


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="tproxyd-bench-")
        os.chmod(self.tmp, 0o755)  # nginx workers run as www-data
        self.procs = []
        self.nginx = None

    # --- set-up ---------------------------------------------------------
    def build(self):
        log("cargo build --release")
        run(["cargo", "build", "--release", "--quiet", "--bin", "tproxyd",
             "--example", "pingora_bare"], cwd=ROOT)
        self.tproxyd = os.path.join(TARGET, "release", "tproxyd")
        self.bare = os.path.join(TARGET, "release", "examples", "pingora_bare")
        if "go-seed" not in self.args.scenarios:
            return
        if not os.path.isdir(SEED):
            # A clone outside the workspace has no ../shared: the seed is a
            # baseline to compare with, not part of tproxyd, so go on without.
            log(f"the seed Go proxy is missing at {SEED}: go-seed is skipped")
            self.args.scenarios.remove("go-seed")
            return
        log(f"go build {SEED}")
        # Build a copy in the temp dir: shared/ may be read-only.
        src = os.path.join(self.tmp, "go-seed-src")
        shutil.copytree(SEED, src)
        self.goproxy = os.path.join(self.tmp, "go-seed")
        env = dict(os.environ, GOCACHE=os.path.join(self.tmp, "gocache"),
                   GOPATH=os.path.join(self.tmp, "gopath"), GOFLAGS="-mod=mod")
        run(["go", "build", "-o", self.goproxy, "."], cwd=src, env=env)

    def lab(self):
        run([os.path.join(ROOT, "lab", "lab.sh"), "up", P], stdout=subprocess.DEVNULL,
            env=dict(os.environ, TPROXYD_BIN=self.tproxyd))
        for n in (CLI, RTR, SRV):
            run(ns(n, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000",
                   "net.ipv4.tcp_tw_reuse=1", "net.core.somaxconn=65535"))

    def start_nginx(self):
        www = os.path.join(self.tmp, "www")
        os.makedirs(www)
        with open(os.path.join(www, "small.bin"), "wb") as f:
            f.write(b"x" * 100)
        with open(os.path.join(www, "large.bin"), "wb") as f:
            f.truncate(100 * 1024 * 1024)
        cert, key = os.path.join(self.tmp, "cert.pem"), os.path.join(self.tmp, "key.pem")
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-days", "2", "-subj", "/CN=bench.test", "-keyout", key, "-out", cert],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        conf = os.path.join(self.tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""
worker_processes 1;
pid {self.tmp}/nginx.pid;
error_log {self.tmp}/nginx-error.log warn;
worker_rlimit_nofile 19000;
events {{ worker_connections 18000; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  server {{
    listen {PROXIED_PORT} reuseport;
    listen [::]:{PROXIED_PORT};
    listen {DIRECT_PORT};
    root {www};
  }}
  server {{
    listen {TLS_PORT} ssl reuseport;
    listen [::]:{TLS_PORT} ssl;
    listen {DIRECT_TLS_PORT} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_session_cache off;
    ssl_session_tickets off;
    root {www};
  }}
  server {{
    listen 127.0.0.1:{STATUS_PORT};
    location / {{ stub_status; }}
  }}
}}
""")
        self.nginx = subprocess.Popen(ns(SRV, "nginx", "-c", conf, "-g", "daemon off;"),
                                      stderr=subprocess.DEVNULL)
        time.sleep(0.5)

    def nginx_accepts(self):
        out = subprocess.run(ns(SRV, "curl", "-s", f"http://127.0.0.1:{STATUS_PORT}/"),
                             capture_output=True, text=True, check=True).stdout
        # "Active connections: N \n server accepts handled requests\n A H R"
        nums = re.findall(r"\n\s*(\d+)\s+(\d+)\s+(\d+)", out)
        return int(nums[0][0]) if nums else 0

    # --- proxies --------------------------------------------------------
    def start_proxy(self, scenario, workload):
        if scenario == "direct":
            return None
        out = open(os.path.join(self.tmp, f"{scenario}.log"), "ab")
        tls = workload.startswith("https") or workload == "mixed"
        if scenario in ("tproxyd", "tproxyd-nolog", "tproxyd-copy", "tproxyd-alt"):
            conf = os.path.join(self.tmp, f"{scenario}.yaml")
            base = self.args.tproxyd_conf
            if scenario == "tproxyd-alt" and self.args.alt_conf:
                base = self.args.alt_conf
            with open(base) as src, open(conf, "w") as dst:
                text = src.read().replace("/run/tproxyd", self.tmp)
                if tls:
                    text = tls_listener(text, scenario == "tproxyd-copy")
                # The idle workload holds all its connections from one
                # client address: lift the per-client cap (the other peers
                # have none), and say so in the report.
                text = text.replace("max_connections_per_client: 1024",
                                    f"max_connections_per_client: {max(1024, self.args.idle + 100)}")
                dst.write(text)
                dst.write("\n" + self.args.tproxyd_extra.replace("\\n", "\n") + "\n")
                if scenario == "tproxyd-nolog":
                    dst.write("  access_log: { enabled: false }\n")
            binary = self.tproxyd
            if scenario == "tproxyd-alt" and self.args.alt_bin:
                binary = self.args.alt_bin
            cmd = ["env", *self.args.tproxyd_env.split(), binary, "-c", conf]
        elif scenario in ("pingora-bare", "pingora-bare-alt"):
            # The floor on the same kind of runtime as the shipped config.
            binary = self.args.alt_bare if scenario == "pingora-bare-alt" else self.bare
            cmd = ["env", f"PINGORA_BARE_WORK_STEALING={shipped_work_stealing()}",
                   binary, "[::]:8888", "2"]
        elif scenario == "haproxy":
            conf = os.path.join(ROOT, "bench", "haproxy.cfg")
            cmd = ["haproxy", "-db", "-f", conf]
        elif scenario == "squid":
            cmd = ["squid", "--foreground", "-f", self.squid_conf()]
        elif scenario in ("haproxy-tcp", "haproxy-splice"):
            conf = os.path.join(self.tmp, f"{scenario}.cfg")
            with open(os.path.join(ROOT, "bench", "haproxy-tcp.cfg")) as src, open(conf, "w") as dst:
                text = src.read()
                if scenario == "haproxy-splice":
                    text = text.replace("  mode tcp\n", "  mode tcp\n  option splice-request\n"
                                        "  option splice-response\n")
                dst.write(text)
            cmd = ["haproxy", "-db", "-f", conf]
        else:
            cmd = [self.goproxy]
        proc = subprocess.Popen(ns(RTR, *cmd), stdout=out, stderr=out)
        self.procs.append(proc)
        # Ready when a request through the interception succeeds.
        url = (f"https://{SERVER}:{TLS_PORT}/small.bin" if tls
               else f"http://{SERVER}:{PROXIED_PORT}/small.bin")
        for _ in range(100):
            r = subprocess.run(ns(CLI, "curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}",
                                  "--max-time", "1", url),
                               capture_output=True, text=True)
            if r.stdout == "200":
                return proc
            time.sleep(0.1)
        out.close()
        with open(out.name) as f:
            tail = f.read()[-2000:]
        raise RuntimeError(f"{scenario} did not come up:\n{tail}")

    def squid_conf(self):
        """bench/squid.conf with a directory of its own that Squid's
        workers (user proxy) can write."""
        d = os.path.join(self.tmp, "squid")
        if not os.path.isdir(d):
            os.makedirs(d)
            shutil.chown(d, "proxy", "proxy")
        conf = os.path.join(d, "squid.conf")
        with open(os.path.join(ROOT, "bench", "squid.conf")) as src, open(conf, "w") as dst:
            dst.write(src.read().replace("@TMP@", d).replace("@WORKERS@", "2"))
        return conf

    def stop_proxy(self, proc):
        if proc is None:
            return
        tree = tree_pids(proc.pid)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        # Worker processes (Squid's) that outlived their master.
        for pid in tree[1:]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.procs.remove(proc)
        time.sleep(0.3)

    @staticmethod
    def cpu_seconds(pid):
        """User + system CPU of the proxy: the process and its children
        (Squid's workers)."""
        total = 0
        for p in tree_pids(pid):
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / TICK

    @staticmethod
    def status_kb(pid, key):
        """A /proc/PID/status figure in KiB, summed over the process and its
        children."""
        total = 0
        for p in tree_pids(pid):
            try:
                with open(f"/proc/{p}/status") as f:
                    for line in f:
                        if line.startswith(key + ":"):
                            total += int(line.split()[1])
            except FileNotFoundError:
                continue
        return total

    # --- workloads -------------------------------------------------------
    @staticmethod
    def wrk_cmd(url, conns, threads, duration, close=False, script="wrk-percentiles.lua"):
        cmd = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{duration}s",
               "--latency", "-s", os.path.join(ROOT, "bench", script)]
        if close:
            cmd += ["-H", "Connection: close"]
        return ns(CLI, *cmd, url)

    def wrk(self, url, conns, threads, duration, close=False, script="wrk-percentiles.lua"):
        cmd = self.wrk_cmd(url, conns, threads, duration, close, script)
        return self.parse_wrk(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)

    def mixed(self, duration):
        """Small HTTP responses over keep-alive (50 connections) and small
        HTTPS responses through tls-passthrough, a new TLS connection per
        request (20 at once), at the same time: both listeners busy, the
        links not (bulk downloads would measure the links' queues)."""
        http = subprocess.Popen(self.wrk_cmd(f"http://{SERVER}:{PROXIED_PORT}/small.bin", 50, 2,
                                             duration), stdout=subprocess.PIPE, text=True)
        https = subprocess.Popen(self.wrk_cmd(f"https://{SERVER}:{TLS_PORT}/small.bin", 20, 2,
                                              duration, close=True),
                                 stdout=subprocess.PIPE, text=True)
        h, t = self.parse_wrk(http.communicate()[0]), self.parse_wrk(https.communicate()[0])
        return {"rps": h["rps"], "p99_ms": h["p99_ms"], "tls_rps": t["rps"],
                "tls_p99_ms": t["p99_ms"], "requests": h["requests"] + t["requests"],
                "bytes": h["bytes"] + t["bytes"], "errors": h["errors"] + t["errors"]}

    @staticmethod
    def parse_wrk(out):
        res = {}
        m = re.search(r"(\d+) requests in ([\d.]+)(\w+), ([\d.]+)(\w+) read", out)
        res["requests"] = int(m.group(1))
        secs = float(m.group(2)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(3)]
        res["bytes"] = float(m.group(4)) * {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[m.group(5)]
        res["rps"] = res["requests"] / secs
        res["mib_s"] = res["bytes"] / secs / 1024**2
        pct = re.search(r"PCT p50=(\d+) p99=(\d+) p999=(\d+)", out)
        res["p50_ms"], res["p99_ms"], res["p999_ms"] = (int(x) / 1000 for x in pct.groups())
        errors = 0
        e = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        if e:
            errors += sum(int(x) for x in e.groups())
        n = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if n:
            errors += int(n.group(1))
        res["errors"] = errors
        return res

    def measure(self, scenario, workload):
        a = self.args
        proc = self.start_proxy(scenario, workload)
        pid = proc.pid if proc else None
        port = DIRECT_PORT if scenario == "direct" else PROXIED_PORT
        base = f"http://{SERVER}:{port}"
        if workload.startswith("https"):
            port = DIRECT_TLS_PORT if scenario == "direct" else TLS_PORT
            base = f"https://{SERVER}:{port}"
        try:
            if workload == "idle":
                if pid is None:
                    return None
                before = self.status_kb(pid, "VmRSS")
                holder = subprocess.Popen(
                    ns(CLI, "python3", os.path.join(ROOT, "bench", "idle_conns.py"),
                       SERVER, str(port), str(a.idle)),
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                line = holder.stdout.readline().split()
                time.sleep(0.5)
                after = self.status_kb(pid, "VmRSS")
                holder.stdin.close()
                holder.wait()
                ok, failed = int(line[1]), int(line[2])
                return {"kib_per_1k": (after - before) / max(ok, 1) * 1000,
                        "rss_mib": after / 1024, "conns": ok, "errors": failed}
            cpu0 = self.cpu_seconds(pid) if pid else 0.0
            acc0 = self.nginx_accepts()
            if workload == "keepalive":
                res = self.wrk(f"{base}/small.bin", 50, 2, a.duration)
            elif workload == "paced":
                res = self.wrk(f"{base}/small.bin", 50, 2, a.duration, script="wrk-paced.lua")
            elif workload == "close":
                res = self.wrk(f"{base}/small.bin", 20, 2, a.duration, close=True)
            elif workload == "https-large":
                res = self.wrk(f"{base}/large.bin", 4, 2, a.duration)
            elif workload == "https-close":
                res = self.wrk(f"{base}/small.bin", 20, 2, a.duration, close=True)
            elif workload == "mixed":
                res = self.mixed(a.duration)
            else:
                res = self.wrk(f"{base}/large.bin", 2, 1, a.duration)
            res["upstream_conns"] = self.nginx_accepts() - acc0
            if pid:
                cpu = self.cpu_seconds(pid) - cpu0
                res["cpu_per_100k"] = cpu / max(res["requests"], 1) * 1e5
                res["cpu_per_gib"] = cpu / max(res["bytes"] / 1024**3, 1e-9)
                res["peak_rss_mib"] = self.status_kb(pid, "VmHWM") / 1024
                res["cores"] = cpu / a.duration
                if workload.startswith("https"):
                    self.count_syscalls(pid, workload, base, res)
            return res
        finally:
            self.stop_proxy(proc)

    def count_syscalls(self, pid, workload, base, res):
        """A second run of the workload with `strace -c -f` attached to the
        proxy: its system calls per MiB relayed and per request."""
        out = os.path.join(self.tmp, f"strace-{pid}.txt")
        tracer = subprocess.Popen(["strace", "-f", "-c", "-U", "name,calls", "-o", out,
                                   "-p", str(pid)], stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        if workload == "https-large":
            run_ = self.wrk(f"{base}/large.bin", 4, 2, self.args.strace_duration)
        else:
            run_ = self.wrk(f"{base}/small.bin", 20, 2, self.args.strace_duration, close=True)
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
        calls = {}
        with open(out) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1].isdigit():
                    calls[parts[0]] = int(parts[1])
        total = calls.pop("total", sum(calls.values()))
        mib = max(run_["bytes"] / 1024**2, 1e-9)
        res["syscalls_per_mib"] = total / mib
        res["syscalls_per_req"] = total / max(run_["requests"], 1)
        per = mib if workload == "https-large" else max(run_["requests"], 1)
        top = sorted(calls.items(), key=lambda kv: -kv[1])[:5]
        res["syscall_mix"] = ", ".join(f"{name} {n / per:.1f}" for name, n in top)

    def cleanup(self):
        for p in list(self.procs):
            for pid in reversed(tree_pids(p.pid)):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.nginx:
            self.nginx.terminate()
            try:
                self.nginx.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.nginx.kill()
        subprocess.run([os.path.join(ROOT, "lab", "lab.sh"), "down", P])
        shutil.rmtree(self.tmp, ignore_errors=True)


# --- report ---------------------------------------------------------------
SMALL_COLUMNS = [
    ("rps", "req/s", "{:.0f}", True), ("p50_ms", "p50 ms", "{:.2f}", False),
    ("p99_ms", "p99 ms", "{:.2f}", False), ("p999_ms", "p99.9 ms", "{:.2f}", False),
    ("cpu_per_100k", "proxy CPU s /100k req", "{:.2f}", False),
    ("peak_rss_mib", "proxy peak RSS MiB", "{:.1f}", False),
    ("upstream_conns", "upstream conns opened", "{:.0f}", False),
    ("requests", "requests", "{:.0f}", True), ("errors", "errors", "{:.0f}", False)]
HTTP_RATIOS = [("tproxyd", "pingora-bare"), ("tproxyd-nolog", "pingora-bare"),
               ("tproxyd", "haproxy"), ("tproxyd-nolog", "haproxy"), ("tproxyd", "squid"),
               ("tproxyd", "direct"), ("tproxyd-alt", "tproxyd"),
               ("pingora-bare-alt", "pingora-bare")]
TLS_RATIOS = [("tproxyd", "haproxy-splice"), ("tproxyd", "haproxy-tcp"),
              ("tproxyd", "tproxyd-copy"), ("tproxyd", "direct"), ("tproxyd-alt", "tproxyd")]
SYSCALL_COLUMNS = [("syscalls_per_mib", "proxy syscalls /MiB (strace -c)", "{:.1f}", False),
                   ("syscalls_per_req", "proxy syscalls /request (strace -c)", "{:.1f}", False)]
WORKLOADS = {
    "keepalive": ("Small responses (100 B) over keep-alive, 50 connections", SMALL_COLUMNS),
    "paced": ("Small responses over keep-alive at a fixed pace: 50 connections, each pausing 5 ms "
              "between requests (about 9,000 req/s offered; no proxy saturates)", SMALL_COLUMNS),
    "close": ("Small responses, a new client connection per request, 20 concurrent", SMALL_COLUMNS),
    "https-large": ("HTTPS: 100 MiB downloads, 4 in parallel", [
        ("mib_s", "MiB/s", "{:.0f}", True),
        ("cpu_per_gib", "proxy CPU s /GiB", "{:.3f}", False),
        SYSCALL_COLUMNS[0],
        ("peak_rss_mib", "proxy peak RSS MiB", "{:.1f}", False),
        ("requests", "downloads", "{:.0f}", True), ("errors", "errors", "{:.0f}", False)]),
    "https-close": ("HTTPS: a new TLS connection per request (100 B), 20 concurrent", [
        ("rps", "req/s", "{:.0f}", True), ("p50_ms", "p50 ms", "{:.2f}", False),
        ("p99_ms", "p99 ms", "{:.2f}", False),
        ("cpu_per_100k", "proxy CPU s /100k req", "{:.2f}", False),
        SYSCALL_COLUMNS[1],
        ("peak_rss_mib", "proxy peak RSS MiB", "{:.1f}", False),
        ("requests", "requests", "{:.0f}", True), ("errors", "errors", "{:.0f}", False)]),
    "large": ("100 MiB download, 2 connections", [
        ("mib_s", "MiB/s", "{:.0f}", True), ("p50_ms", "p50 ms", "{:.0f}", False),
        ("p99_ms", "p99 ms", "{:.0f}", False),
        ("cpu_per_gib", "proxy CPU s /GiB", "{:.3f}", False),
        ("peak_rss_mib", "proxy peak RSS MiB", "{:.1f}", False),
        ("requests", "downloads", "{:.0f}", True), ("errors", "errors", "{:.0f}", False)]),
    "mixed": ("HTTP and HTTPS at once: small responses over keep-alive (50 connections) beside "
              "small HTTPS responses through tls-passthrough, a new TLS connection per request "
              "(20 at once)", [
        ("rps", "HTTP req/s", "{:.0f}", True), ("p99_ms", "HTTP p99 ms", "{:.2f}", False),
        ("tls_rps", "HTTPS req/s", "{:.0f}", True), ("tls_p99_ms", "HTTPS p99 ms", "{:.2f}", False),
        ("cpu_per_100k", "proxy CPU s /100k req (both kinds)", "{:.2f}", False),
        ("cores", "proxy CPU (cores busy)", "{:.2f}", False),
        ("peak_rss_mib", "proxy peak RSS MiB", "{:.1f}", False),
        ("errors", "errors", "{:.0f}", False)]),
    "idle": ("Idle keep-alive connections", [
        ("kib_per_1k", "proxy RSS KiB per 1,000 idle conns", "{:.0f}", False),
        ("rss_mib", "proxy RSS MiB while holding them", "{:.1f}", False),
        ("conns", "connections held", "{:.0f}", True), ("errors", "errors", "{:.0f}", False)]),
}


def scenarios_of(workload):
    """The scenarios a workload runs (HTTP, HTTPS or both at once)."""
    if workload == "mixed":
        return MIXED_SCENARIOS
    return TLS_SCENARIOS if workload.startswith("https") else SCENARIOS


def fmt_cell(values, f):
    vals = [v for v in values if v is not None]
    if not vals:
        return "–", None
    med = statistics.median(vals)
    cell = f.format(med)
    if len(vals) > 1 and max(vals) != min(vals):
        cell += f" ({f.format(min(vals))}–{f.format(max(vals))})"
    return cell, med


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}"


def report(results, args, started):
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    out = [f"Run {started:%Y-%m-%d %H:%M} UTC on {platform.node()}: {os.cpu_count()} cores ({cpu}), "
           f"Linux {platform.release()}; {args.rounds} round(s) of {args.duration}s per cell, "
           f"interleaved; median (min–max). Command: `sudo bench/bench.py"
           f"{' --smoke' if args.smoke else ''}`.", ""]
    for wl, (title, cols) in WORKLOADS.items():
        if wl not in args.workloads:
            continue
        tls = wl.startswith("https")
        # Only the scenarios that ran, and the ratios between them.
        scenarios = [sc for sc in scenarios_of(wl) if any(r for r in results.get((wl, sc), []))]
        ratios = [(a, b) for a, b in (TLS_RATIOS if tls else HTTP_RATIOS)
                  if a in scenarios and b in scenarios]
        names = [f"{a.replace('tproxyd-', '')}/{b}" if a != "tproxyd" else f"tproxyd/{b}"
                 for a, b in ratios]
        out += [f"### {title}", "",
                "| figure | " + " | ".join(scenarios) + " | " + " | ".join(names) + " |",
                "|---|" + "---|" * (len(scenarios) + len(ratios))]
        for key, label, f, _ in cols:
            cells, meds = [], {}
            for sc in scenarios:
                vals = [r.get(key) if r else None for r in results.get((wl, sc), [])]
                cell, med = fmt_cell(vals, f)
                cells.append(cell)
                meds[sc] = med
            out.append(f"| {label} | " + " | ".join(cells) + " | "
                       + " | ".join(ratio(meds.get(a), meds.get(b)) for a, b in ratios) + " |")
        if tls:
            out.append("")
            per = "MiB" if wl == "https-large" else "request"
            for sc in scenarios:
                mixes = [r.get("syscall_mix") for r in results.get((wl, sc), []) if r]
                if mixes and mixes[0]:
                    out.append(f"- {sc}: most frequent syscalls per {per} (first round): {mixes[0]}")
        out.append("")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--idle", type=int, default=5000, help="idle connections to hold")
    ap.add_argument("--workloads",
                    default="keepalive,paced,close,large,idle,https-large,https-close,mixed")
    ap.add_argument("--alt-conf", help="config for the tproxyd-alt scenario (default: the same as tproxyd)")
    ap.add_argument("--alt-bin", help="tproxyd binary for the tproxyd-alt scenario (default: this build)")
    ap.add_argument("--alt-bare", help="pingora_bare binary for the pingora-bare-alt scenario")
    ap.add_argument("--scenarios", default=",".join(s for s in dict.fromkeys(SCENARIOS + TLS_SCENARIOS)
                                                   if not s.endswith("-alt")),
                    help="which to run (each workload runs those of its kind: HTTP or HTTPS)")
    ap.add_argument("--strace-duration", type=int, default=5,
                    help="seconds of the separate strace -c run of each HTTPS cell")
    ap.add_argument("--tproxyd-env", default="", help="extra environment for tproxyd, e.g. RUST_LOG=warn")
    ap.add_argument("--tproxyd-conf", default=os.path.join(ROOT, "conf", "tproxyd.yaml"),
                    help="tproxyd config to benchmark (default: the shipped conf/tproxyd.yaml)")
    ap.add_argument("--tproxyd-extra", default="", help="YAML appended to the tproxyd: section (indent 2)")
    ap.add_argument("--smoke", action="store_true", help="tiny run for CI: 2s, 1 round, 200 idle")
    ap.add_argument("--out", help="also write the Markdown report to this file")
    args = ap.parse_args()
    if args.smoke:
        args.duration, args.rounds, args.idle, args.strace_duration = 2, 1, 200, 2
    args.workloads = args.workloads.split(",")
    args.scenarios = args.scenarios.split(",")
    if (args.alt_conf or args.alt_bin) and "tproxyd-alt" not in args.scenarios:
        args.scenarios.append("tproxyd-alt")
    if args.alt_bare and "pingora-bare-alt" not in args.scenarios:
        args.scenarios.append("pingora-bare-alt")
    if os.geteuid() != 0:
        sys.exit("bench: needs root (network namespaces, TPROXY)")
    started = datetime.datetime.now(datetime.timezone.utc)
    ensure_tools("go-seed" in args.scenarios, "squid" in args.scenarios)
    if "squid" in args.scenarios and shutil.which("squid") is None:
        args.scenarios.remove("squid")
    b = Bench(args)
    results = {}
    try:
        b.build()
        b.lab()
        b.start_nginx()
        for rnd in range(args.rounds):
            for wl in args.workloads:
                kind = scenarios_of(wl)
                for sc in [s for s in args.scenarios if s in kind]:
                    log(f"round {rnd + 1}/{args.rounds}: {wl} / {sc}")
                    results.setdefault((wl, sc), []).append(b.measure(sc, wl))
    finally:
        b.cleanup()
    text = report(results, args, started)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
