#!/usr/bin/env python3
"""Figures for policy on names and egress, in the benchmark lab (bench.py's):

  sets     a 1,000,000-name list (bench/gen_domains.py): load time, memory and
           lookup times (examples/set_bench); CPU per request over keep-alive
           with the list in an `acl` rule against the same config without it
           (interleaved rounds); the p99 and errors of a paced keep-alive load
           while the list is reloaded, against the same load without a reload.
  egress   the same keep-alive traffic direct, through tproxyd with a parent
           HTTP proxy (Debian's squid, in a namespace of its own), and through
           squid alone (absolute-form requests sent to it): CPU per request of
           each process, p99.

Needs root, a release build (cargo build --release --bin tproxyd --example
set_bench), and wrk, nginx, squid (apt-get). Usage:
  sudo bench/policy_bench.py [--rounds 5] [--duration 10] [--only sets|egress]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402

# A lab of its own, so that a bench.py run at the same time is not torn down.
B.P = "tpxpol"
B.CLI, B.RTR, B.SRV = f"{B.P}-cli", f"{B.P}-rtr", f"{B.P}-srv"

NAME = "www.bench-site.example.org"  # a realistic Host, not in the list


def wrk(b, url, duration, host=None, script="wrk-percentiles.lua"):
    cmd = ["wrk", "-t", "2", "-c", "50", "-d", f"{duration}s", "--latency",
           "-s", script if os.path.isabs(script) else os.path.join(B.ROOT, "bench", script)]
    if host:
        cmd += ["-H", f"Host: {host}"]
    out = subprocess.run(B.ns(B.CLI, *cmd, url), capture_output=True, text=True,
                         check=True).stdout
    return parse(out)


def parse(out):
    import re
    res = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    res["requests"] = int(m.group(1))
    secs = float(m.group(2)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(3)]
    res["rps"] = res["requests"] / secs
    pct = re.search(r"PCT p50=(\d+) p99=(\d+) p999=(\d+)", out)
    res["p50_ms"], res["p99_ms"], _ = (int(x) / 1000 for x in pct.groups())
    errors = 0
    for pat in (r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                r"Non-2xx or 3xx responses: (\d+)"):
        e = re.search(pat, out)
        if e:
            errors += sum(int(x) for x in e.groups())
    res["errors"] = errors
    return res


def start(b, name, text):
    conf = os.path.join(b.tmp, f"{name}.yaml")
    with open(conf, "w") as f:
        f.write(text.replace("/run/tproxyd", b.tmp))
    out = open(os.path.join(b.tmp, f"{name}.log"), "ab")
    proc = subprocess.Popen(B.ns(B.RTR, b.tproxyd, "-c", conf), stdout=out, stderr=out)
    b.procs.append(proc)
    for _ in range(300):
        r = subprocess.run(B.ns(B.CLI, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                "-H", f"Host: {NAME}", "--max-time", "1",
                                f"http://{B.SERVER}/small.bin"), capture_output=True, text=True)
        if r.stdout == "200":
            return proc
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not come up")


def cpu_run(b, proc, duration, **kw):
    cpu0 = b.cpu_seconds(proc.pid)
    res = wrk(b, f"http://{B.SERVER}/small.bin", duration, **kw)
    res["cpu_us"] = (b.cpu_seconds(proc.pid) - cpu0) / max(res["requests"], 1) * 1e6
    return res


def med(values):
    return statistics.median(values)


def sets(b, a, base):
    lst = os.path.join(b.tmp, "names.txt")
    with open(lst, "w") as f:
        subprocess.run([sys.executable, os.path.join(B.ROOT, "bench", "gen_domains.py"),
                        "1000000"], stdout=f, check=True)
    bench_bin = os.path.join(B.TARGET, "release", "examples", "set_bench")
    figures = subprocess.run([bench_bin, lst, "domains"], capture_output=True, text=True,
                             check=True).stdout
    print("set_bench (1,000,000 generated names):\n" + figures)
    with_set = base.replace("  filters: []\n", "") + (
        f"  sets:\n    big: {{ file: {lst}, format: domains }}\n"
        f"  sets_watch_interval: 1s\n"
        f"  filters:\n    - acl:\n        rules:\n"
        f"          - {{ name: big, action: deny, host_set: [big] }}\n")
    rows = {"without": [], "with": []}
    for r in range(a.rounds):
        for name, text in (("without", base), ("with", with_set)):
            proc = start(b, name, text)
            rows[name].append(cpu_run(b, proc, a.duration, host=NAME))
            b.stop_proxy(proc)
    for name, rs in rows.items():
        each = ", ".join(f"{x['cpu_us']:.2f}" for x in rs)
        print(f"keep-alive, {name} the 1M set: CPU µs/req {med([x['cpu_us'] for x in rs]):.2f} "
              f"(rounds {each}), "
              f"p99 ms {med([x['p99_ms'] for x in rs]):.2f}, errors {sum(x['errors'] for x in rs)}")
    ratio = med([x["cpu_us"] for x in rows["with"]]) / med([x["cpu_us"] for x in rows["without"]])
    print(f"ratio with/without: {ratio:.3f}")
    # A reload under a paced keep-alive load.
    proc = start(b, "reload", with_set)
    before = wrk(b, f"http://{B.SERVER}/small.bin", a.duration, host=NAME, script="wrk-paced.lua")
    changed = os.path.join(b.tmp, "names.new")

    def reload_soon():
        time.sleep(2)
        with open(lst) as src, open(changed, "w") as dst:
            dst.write(src.read() + "newly-listed.example\n")
        os.rename(changed, lst)
    import threading
    t = threading.Thread(target=reload_soon)
    t.start()
    during = wrk(b, f"http://{B.SERVER}/small.bin", a.duration, host=NAME, script="wrk-paced.lua")
    t.join()
    b.stop_proxy(proc)
    with open(os.path.join(b.tmp, "reload.log")) as f:
        reloaded = "set big reloaded" in f.read()
    print(f"paced keep-alive p99 ms: {before['p99_ms']:.2f} without a reload, "
          f"{during['p99_ms']:.2f} with one (reloaded: {reloaded}); errors {before['errors']} / "
          f"{during['errors']}; requests {before['requests']} / {during['requests']}")


SQ = "tpxpol-sq"
SQ_ADDR, SQ_ROUTER = "203.0.113.18", "203.0.113.17"


def squid(b):
    """Squid as a parent in a namespace of its own beside the router:
    no cache, no access log, one worker."""
    for cmd in (["ip", "netns", "add", SQ],
                ["ip", "-n", SQ, "link", "add", "eth0", "index", "116", "type", "veth", "peer",
                 "name", "sq0", "index", "117", "netns", B.RTR],
                ["ip", "-n", SQ, "link", "set", "lo", "up"],
                ["ip", "-n", SQ, "addr", "add", f"{SQ_ADDR}/28", "dev", "eth0"],
                ["ip", "-n", B.RTR, "addr", "add", f"{SQ_ROUTER}/28", "dev", "sq0"],
                ["ip", "-n", SQ, "link", "set", "eth0", "up"],
                ["ip", "-n", B.RTR, "link", "set", "sq0", "up"],
                ["ip", "-n", SQ, "route", "add", "default", "via", SQ_ROUTER]):
        B.run(cmd)
    # The parent resolves the name tproxyd hands it.
    os.makedirs(f"/etc/netns/{SQ}", exist_ok=True)
    with open(f"/etc/netns/{SQ}/hosts", "w") as f:
        f.write(f"127.0.0.1 localhost\n{B.SERVER} {NAME}\n")
    with open(f"/etc/netns/{SQ}/resolv.conf", "w") as f:
        f.write("nameserver 127.0.0.1\n")
    d = os.path.join(b.tmp, "squid")
    os.makedirs(d)
    os.chmod(d, 0o777)
    conf = os.path.join(d, "squid.conf")
    with open(conf, "w") as f:
        f.write(f"http_port {SQ_ADDR}:3128\nvisible_hostname parent.test\npid_filename {d}/squid.pid\n"
                f"cache_log {d}/cache.log\naccess_log none\ncache deny all\ncache_mem 8 MB\n"
                "dns_nameservers 127.0.0.1\nhttp_access allow all\nvia off\nforwarded_for delete\n")
    proc = subprocess.Popen(["ip", "netns", "exec", SQ, "squid", "-N", "-f", conf],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    b.procs.append(proc)
    for _ in range(200):
        r = subprocess.run(B.ns(B.CLI, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                "-x", f"http://{SQ_ADDR}:3128", "--max-time", "1",
                                f"http://{B.SERVER}/small.bin"), capture_output=True, text=True)
        if r.stdout == "200":
            return proc
        time.sleep(0.1)
    raise RuntimeError("squid did not come up")


def egress(b, a, base):
    """Full speed, and paced at a rate the parent is not saturated at, so
    that CPU per request compares at about the same rate (a proxy's CPU per
    request rises as its rate falls): 50 connections, each waiting 8 ms
    between a response and its next request through the parent (about 3 ms
    slower a request) and 11 ms direct, about 4,200 requests a second."""
    sq = squid(b)
    spid = sq.pid  # `ip netns exec` became squid; cpu_seconds adds its children
    via_parent = base + (f"  egress:\n    corp: {{ via: http, address: \"{SQ_ADDR}:3128\" }}\n"
                         "  routes:\n    - { egress: corp }\n")
    pace_ms = {"direct": "11", "parent": "8", "squid alone": "8"}
    scripts = {}
    for pace, lua in (("full", "wrk-percentiles.lua"), ("paced", "wrk-paced.lua")):
        scripts[pace] = os.path.join(b.tmp, f"absolute-{pace}.lua")
        with open(scripts[pace], "w") as f:
            f.write(f'wrk.path = "http://{B.SERVER}/small.bin"\n'
                    + open(os.path.join(B.ROOT, "bench", lua)).read())
    rows = {}
    for r in range(a.rounds):
        for name, text in (("direct", base), ("parent", via_parent)):
            proc = start(b, name, text)
            for pace, lua in (("full", "wrk-percentiles.lua"), ("paced", "wrk-paced.lua")):
                os.environ["PACE_MS"] = pace_ms[name]
                s0 = b.cpu_seconds(spid)
                res = cpu_run(b, proc, a.duration, host=NAME, script=lua)
                res["squid_us"] = (b.cpu_seconds(spid) - s0) / max(res["requests"], 1) * 1e6
                rows.setdefault(f"{name}, {pace}", []).append(res)
            b.stop_proxy(proc)
        for pace in ("full", "paced"):
            os.environ["PACE_MS"] = pace_ms["squid alone"]
            s0 = b.cpu_seconds(spid)
            res = wrk(b, f"http://{SQ_ADDR}:3128/", a.duration, script=scripts[pace])
            res["squid_us"] = (b.cpu_seconds(spid) - s0) / max(res["requests"], 1) * 1e6
            res["cpu_us"] = 0.0
            rows.setdefault(f"squid alone, {pace}", []).append(res)
    for name, rs in sorted(rows.items(), key=lambda kv: kv[0].endswith("paced")):
        print(f"{name}: tproxyd CPU µs/req {med([x['cpu_us'] for x in rs]):.2f}, "
              f"squid CPU µs/req {med([x['squid_us'] for x in rs]):.2f}, "
              f"req/s {med([x['rps'] for x in rs]):.0f}, p50 ms {med([x['p50_ms'] for x in rs]):.2f}, "
              f"p99 ms {med([x['p99_ms'] for x in rs]):.2f}, "
              f"errors {sum(x['errors'] for x in rs)}")
    subprocess.run(["ip", "netns", "del", SQ])
    shutil.rmtree(f"/etc/netns/{SQ}", ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--only", choices=["sets", "egress"])
    a = ap.parse_args()
    args = argparse.Namespace(scenarios=[], idle=0)
    b = B.Bench(args)
    b.tproxyd = os.path.join(B.TARGET, "release", "tproxyd")
    try:
        b.lab()
        b.start_nginx()
        with open(os.path.join(B.ROOT, "conf", "tproxyd.yaml")) as f:
            base = f.read()
        print(f"# policy_bench {time.strftime('%Y-%m-%d %H:%M')} load {os.getloadavg()[0]:.2f}")
        if a.only in (None, "sets"):
            sets(b, a, base)
        if a.only in (None, "egress"):
            egress(b, a, base)
    finally:
        subprocess.run(["ip", "netns", "del", SQ], stderr=subprocess.DEVNULL)
        shutil.rmtree(f"/etc/netns/{SQ}", ignore_errors=True)
        b.cleanup()


if __name__ == "__main__":
    main()
