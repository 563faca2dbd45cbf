#!/usr/bin/env bash
# The tproxyd demo: build the lab (lab/lab.sh), run an origin in the server
# namespace and tproxyd (with conf/tproxyd.yaml) in the router namespace,
# then let the client fetch "internet" addresses over v4 and v6 and watch
# the requests being intercepted. Needs root; touches nothing outside the
# namespaces it creates, and removes them on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

P=${LAB_PREFIX:-tpxdemo}
[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root (network namespaces, TPROXY)" >&2; exit 1; }
for t in ip nft curl python3 cargo; do
  command -v "$t" >/dev/null || { echo "demo.sh: '$t' is missing (apt-get install -y iproute2 nftables curl python3; cargo from rustup)" >&2; exit 1; }
done

BIN=${TPROXYD_BIN:-target/debug/tproxyd}
if [ -z "${TPROXYD_BIN:-}" ]; then
  echo "== building tproxyd (cargo build)"
  cargo build --quiet --bin tproxyd
fi

BIN=$(realpath "$BIN")
export TPROXYD_BIN=$BIN   # lab.sh applies `tproxyd rules` with it

work=$(mktemp -d)
cleanup() {
  for pid in ${proxy_pid:-} ${origin_pid:-}; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  lab/lab.sh down "$P"
  rm -rf "$work"
}
trap cleanup EXIT

lab/lab.sh up "$P"
cli() { ip netns exec "$P-cli" "$@"; }

ip netns exec "$P-srv" python3 lab/origin.py 80 8080 2>"$work/origin.log" &
origin_pid=$!
ip netns exec "$P-rtr" env RUST_LOG=info "$BIN" -c conf/tproxyd.yaml 2>"$work/tproxyd.log" &
proxy_pid=$!
for _ in $(seq 100); do
  grep -q "bound \[::\]:8889" "$work/tproxyd.log" 2>/dev/null && break
  sleep 0.1
done
sleep 0.3

requests=0
show() {
  echo
  echo "== client \$ curl $*"
  cli curl -sS --max-time 5 "$@" || true
  requests=$((requests + 1))
}

echo
echo "The router's firewall rules are tproxyd's own ('tproxyd rules --apply -c lab/rules.yaml');"
echo "'tproxyd doctor' checks the router against them:"
echo "== router \$ tproxyd doctor -c lab/rules.yaml"
ip netns exec "$P-rtr" "$BIN" doctor -c lab/rules.yaml || true
echo
echo "The client (192.0.2.10, 2001:db8:1::10) fetches addresses on the 'internet' side."
echo "The router intercepts port 80 with nftables tproxy and hands it to tproxyd,"
echo "which forwards each request to the address the client dialed and adds a Via header."
show -H "Host: www.example.org" http://198.51.100.10/hello
show -H "Host: www.example.org" "http://[2001:db8:2::10]/hello-v6"
show http://198.51.100.11/another-destination
echo
echo "Port 8080 is steered with 'nat redirect' instead; tproxyd reads SO_ORIGINAL_DST:"
show http://198.51.100.10:8080/via-redirect
echo
echo "A client dialing the proxy port itself would make it call itself: refused."
show -i http://192.0.2.1:8888/loop
echo
echo "Nothing listens on 198.51.100.10:82: the client gets a 502 naming the destination."
show -i http://198.51.100.10:82/
echo
echo "== router \$ curl 127.0.0.1:9187/metrics   (tproxyd's admin listener)"
ip netns exec "$P-rtr" curl -sS --max-time 5 http://127.0.0.1:9187/metrics \
  | grep -E '^tproxyd_(requests_total|requests_refused_total|upstream_connections_total)' | grep -v ' 0$' || true
echo
echo "== tproxyd access log"
# The writer thread batches lines (up to 100 ms while idle): wait for one
# line per request above.
access() { grep -E '^[0-9].* -> ' "$work/tproxyd.log"; }
for _ in $(seq 50); do
  [ "$(access | wc -l)" -ge "$requests" ] && break
  sleep 0.1
done
access || cat "$work/tproxyd.log"

kill "$proxy_pid"; wait "$proxy_pid" 2>/dev/null || true; proxy_pid=
echo
echo "tproxyd stopped at once on SIGTERM, nothing being in flight:"
grep -E 'exiting' "$work/tproxyd.log" | sed 's/^\[[^]]*\] */  /' || true
echo "The ruleset fails closed (TCP reset): traffic never bypasses the proxy."
show http://198.51.100.10/while-down
echo
echo "== done; removing the lab"
