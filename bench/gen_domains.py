#!/usr/bin/env python3
"""Writes a deterministic list of domain names shaped like real blocklists
(HaGeZi, OISD): mostly registrable domains under common TLDs, a share of
subdomains (ad servers, trackers, CDN hosts with hex labels), realistic
label lengths. Same arguments, same bytes.

    bench/gen_domains.py COUNT [--format domains|hosts|adblock] [--seed N] > list.txt
"""
import argparse
import random
import sys

TLDS = [("com", 40), ("net", 8), ("org", 5), ("de", 4), ("ru", 4), ("co.uk", 3), ("io", 3),
        ("info", 3), ("xyz", 3), ("top", 3), ("fr", 2), ("nl", 2), ("pl", 2), ("br", 2),
        ("jp", 2), ("cn", 2), ("in", 1), ("it", 1), ("es", 1), ("online", 1), ("site", 1),
        ("club", 1), ("biz", 1), ("me", 1), ("tv", 1), ("app", 1), ("co", 1)]
SYLLABLES = ["ad", "ads", "track", "stat", "pixel", "cdn", "media", "click", "serv", "net",
             "metric", "log", "tag", "sync", "data", "web", "img", "go", "link", "shop", "news",
             "cloud", "mob", "app", "bid", "rtb", "analytic", "beacon", "event", "counter"]
PREFIXES = ["www", "ads", "ad", "track", "pixel", "stats", "cdn", "img", "static", "api", "t",
            "s", "m", "metrics", "sync", "log", "collect", "events", "beacon"]


def label(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.12:  # hex / random id labels (CDN hosts, tracking ids)
        return "".join(rng.choice("0123456789abcdef") for _ in range(rng.randint(6, 16)))
    words = [rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))]
    text = ("-" if rng.random() < 0.2 else "").join(words)
    if rng.random() < 0.3:
        text += str(rng.randint(1, 999))
    return text[:63]


def name(rng: random.Random, tlds, weights) -> str:
    base = f"{label(rng)}.{rng.choices(tlds, weights)[0]}"
    depth = rng.random()
    if depth < 0.55:
        return base
    if depth < 0.85:
        return f"{rng.choice(PREFIXES)}.{base}"
    return f"{label(rng)}.{rng.choice(PREFIXES)}.{base}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("count", type=int)
    p.add_argument("--format", choices=["domains", "hosts", "adblock"], default="domains")
    p.add_argument("--seed", type=int, default=20261207)
    a = p.parse_args()
    rng = random.Random(a.seed)
    tlds = [t for t, _ in TLDS]
    weights = [w for _, w in TLDS]
    out = sys.stdout
    out.write(f"# {a.count} generated names, seed {a.seed}\n")
    seen = set()
    while len(seen) < a.count:
        n = name(rng, tlds, weights)
        if n in seen:
            continue
        seen.add(n)
        if a.format == "hosts":
            out.write(f"0.0.0.0 {n}\n")
        elif a.format == "adblock":
            out.write(f"||{n}^\n")
        else:
            out.write(n + "\n")


if __name__ == "__main__":
    main()
