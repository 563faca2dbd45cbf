#!/usr/bin/env bash
# The tproxyd lab: three network namespaces wired like a small gateway.
#
#   client (LAN)            router (runs tproxyd)               server ("internet")
#   eth0 192.0.2.10, .11 -- lan0 192.0.2.1 | wan0 198.51.100.1 -- eth0 198.51.100.10, .11
#        2001:db8:1::10, ::11  2001:db8:1::1 | 2001:db8:2::1         2001:db8:2::10, ::11
#
# The router intercepts LAN traffic to TCP ports 80-89 with nftables `tproxy`
# (to :8888), to 443 likewise (to :8443, for TLS passthrough), and LAN traffic
# to ports 8080 and 4443 with `nat redirect` (to :8889 and :8444), and fails
# closed (TCP reset) while no proxy listens. Its own addresses are left
# alone. These rules are tproxyd's own (`tproxyd rules --apply -c
# lab/rules.yaml`; the binary is $TPROXYD_BIN, else target/debug or
# target/release). Everything lives inside namespaces named PREFIX-cli, PREFIX-rtr and
# PREFIX-srv; the root namespace's links, routes and rules are never touched.
# The router gets its own hosts/resolv.conf in /etc/netns/PREFIX-rtr/
# (www.lab.test, other.lab.test), removed again by `down`.
#
# Usage: lab.sh up [PREFIX] | down [PREFIX] | show [PREFIX]     (PREFIX defaults to "tpx")
set -euo pipefail

cmd=${1:-}
P=${2:-tpx}
CLI=$P-cli RTR=$P-rtr SRV=$P-srv
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# The tproxyd binary whose `rules --apply` sets up interception.
BIN=${TPROXYD_BIN:-}

die() { echo "lab.sh: $*" >&2; exit 1; }

need() {
  [ "$(id -u)" = 0 ] || die "needs root (network namespaces, nftables)"
  command -v ip >/dev/null || die "'ip' (iproute2) is missing"
  command -v nft >/dev/null || die "'nft' is missing: apt-get install -y nftables"
  if [ -z "$BIN" ]; then
    for b in "$ROOT/target/debug/tproxyd" "$ROOT/target/release/tproxyd"; do
      [ -x "$b" ] && { BIN=$b; break; }
    done
  fi
  [ -x "$BIN" ] || die "no tproxyd binary: build it (cargo build) or set TPROXYD_BIN"
}

in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

down() {
  local ns
  rm -rf "/etc/netns/$RTR"
  for ns in "$CLI" "$RTR" "$SRV"; do
    if ip netns list | awk '{print $1}' | grep -qx "$ns"; then
      # Kill whatever still runs inside before the namespace goes.
      ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
}

# Whether every lab link is up for IPv6: the kernel has handled its carrier
# (operational state UP; asking also makes it handle a pending change
# now), it has its link-local address, and no address anywhere is still
# tentative (duplicate address detection is off in the lab: this guards
# it). Until then the first neighbour discovery is lost, and a v6
# connection waits a second for its retransmission.
v6_ready() {
  local l
  for l in "$CLI eth0" "$RTR lan0" "$RTR wan0" "$SRV eth0"; do
    set -- $l
    ip -n "$1" -o link show dev "$2" | grep -q ' state UP ' || return 1
    ip -n "$1" -6 addr show dev "$2" scope link | grep -q 'inet6 fe80' || return 1
  done
  for l in "$CLI" "$RTR" "$SRV"; do
    [ -z "$(ip -n "$l" -6 addr show tentative)" ] || return 1
  done
}

v6_wait() {
  for _ in $(seq 100); do
    v6_ready && return 0
    sleep 0.05
  done
  die "IPv6 is not up on the lab's links after 5 s: $(ip -n "$RTR" -6 -br addr)"
}

up() {
  need
  down
  trap 'echo "lab.sh: setup failed, tearing down" >&2; down' ERR
  ip netns add "$CLI"; ip netns add "$RTR"; ip netns add "$SRV"
  for ns in "$CLI" "$RTR" "$SRV"; do
    ip -n "$ns" link set lo up
    # No duplicate address detection on the lab's links: link-local
    # addresses stay "tentative" for a second or two otherwise, and the
    # first spoofed v6 connection's SYN-ACK is lost meanwhile.
    in_ns "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
  done

  # veth pairs are created inside the namespaces, never in the root one.
  # Each end gets an interface index unlike its peer's: the kernel handles
  # the carrier change of a veth whose index equals its peer's (both would
  # be 2 in fresh namespaces) through its rate-limited link watcher, up to
  # a second later, and until then the first IPv6 neighbour discovery on
  # the link is lost: the first v6 connection took a second.
  ip -n "$CLI" link add eth0 index 10 type veth peer name lan0 index 11 netns "$RTR"
  ip -n "$SRV" link add eth0 index 20 type veth peer name wan0 index 21 netns "$RTR"

  ip -n "$CLI" addr add 192.0.2.10/24 dev eth0
  ip -n "$CLI" addr add 192.0.2.11/24 dev eth0
  ip -n "$CLI" addr add 2001:db8:1::10/64 dev eth0 nodad
  # The second client addresses are never picked as a source unless a
  # socket binds to them (v4: secondary address; v6: deprecated).
  ip -n "$CLI" addr add 2001:db8:1::11/64 dev eth0 nodad preferred_lft 0
  ip -n "$RTR" addr add 192.0.2.1/24 dev lan0
  ip -n "$RTR" addr add 2001:db8:1::1/64 dev lan0 nodad
  ip -n "$RTR" addr add 198.51.100.1/24 dev wan0
  ip -n "$RTR" addr add 2001:db8:2::1/64 dev wan0 nodad
  ip -n "$SRV" addr add 198.51.100.10/24 dev eth0
  ip -n "$SRV" addr add 198.51.100.11/24 dev eth0
  ip -n "$SRV" addr add 2001:db8:2::10/64 dev eth0 nodad
  ip -n "$SRV" addr add 2001:db8:2::11/64 dev eth0 nodad
  for l in "$CLI eth0" "$RTR lan0" "$RTR wan0" "$SRV eth0"; do
    set -- $l; ip -n "$1" link set "$2" up
  done
  ip -n "$CLI" route add default via 192.0.2.1
  ip -n "$CLI" -6 route add default via 2001:db8:1::1
  ip -n "$SRV" route add default via 198.51.100.1
  ip -n "$SRV" -6 route add default via 2001:db8:2::1

  in_ns "$RTR" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
  v6_wait

  # Name resolution inside the router (for the host_check filter): `ip netns
  # exec` mounts these over /etc/hosts and /etc/resolv.conf for processes in
  # the namespace only. No DNS server is reachable: other names fail fast.
  mkdir -p "/etc/netns/$RTR"
  cat >"/etc/netns/$RTR/hosts" <<'HOSTS'
127.0.0.1 localhost
198.51.100.10 www.lab.test
198.51.100.11 other.lab.test
2001:db8:2::10 www.lab.test
2001:db8:2::11 other.lab.test
HOSTS
  echo "nameserver 127.0.0.1" >"/etc/netns/$RTR/resolv.conf"

  # Interception: tproxyd writes its own rules from lab/rules.yaml (the
  # listener addresses the tests use): the nftables table and the policy
  # routing, in this namespace only.
  in_ns "$RTR" "$BIN" rules --apply -c "$ROOT/lab/rules.yaml" >/dev/null

  # Counts the proxy's upstream packets that carry SO_MARK 0x100
  # (tproxyd.upstream.mark in the tests): a table of the lab's own, which
  # `tproxyd rules` must leave alone.
  in_ns "$RTR" nft -f - <<'NFT'
table inet lab {
  chain output {
    type filter hook output priority mangle; policy accept;
    meta mark 0x100 counter comment "upstream-marked"
  }
}
NFT

  # The server drops SYNs to port 81: a blackholed destination.
  in_ns "$SRV" nft -f - <<'NFT'
table inet lab {
  chain input {
    type filter hook input priority filter; policy accept;
    tcp dport 81 drop
  }
}
NFT
  trap - ERR
  echo "lab $P is up: namespaces $CLI, $RTR, $SRV"
}

show() {
  for ns in "$CLI" "$RTR" "$SRV"; do
    echo "== $ns"; ip -n "$ns" -br addr
  done
  echo "== $RTR nftables"; in_ns "$RTR" nft list ruleset
}

case "$cmd" in
  up) up ;;
  down) down ;;
  show) show ;;
  *) echo "usage: $0 up|down|show [PREFIX]" >&2; exit 2 ;;
esac
