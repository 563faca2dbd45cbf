#!/usr/bin/env bash
# Instruction counts per request (valgrind --tool=callgrind), for tproxyd,
# pingora-bare (examples/pingora_bare.rs, Pingora's floor) or HAProxy, in
# the lab: stable on noisy shared machines, where timings are
# not; counted from after start-up; the top 15 functions by inclusive cost
# are printed too. User-space
# instructions only (the kernel's share is the same network work for both).
# Usage: sudo bench/callgrind.sh [tproxyd|tproxyd-nolog|pingora-bare|pingora-bare-timeouts|haproxy] [requests]
#        sudo bench/callgrind.sh [tproxyd-tls|haproxy-tls] [connections]
# The -tls runs pass HTTPS through untouched (tproxyd's tls-passthrough
# listener; HAProxy in TCP mode, bench/haproxy-tcp.cfg), one new TLS
# connection per request: what a connection's setup and teardown cost.
# CALLGRIND_HEAD=browser sends a browser-like head (11 fields, ~480 bytes)
# instead of the minimal one (Host only): costs that grow with the head
# (parsing, header maps) then show at a realistic size.
# CALLGRIND_EXTRA='  admin: { flows: off }' appends YAML to tproxyd's
# `tproxyd:` section (an A/B of one setting); CALLGRIND_CONF=file runs
# tproxyd with that config instead of conf/tproxyd.yaml.
# CALLGRIND_BIN=path runs that binary (tproxyd or pingora_bare, as `who`
# says) instead of building this tree's: an A/B against another build.
# CALLGRIND_OUT=file keeps the profile there (default /tmp/callgrind-WHO.out).
set -euo pipefail
cd "$(dirname "$0")/.."
who=${1:-tproxyd}; n=${2:-}
P=tpxcg$$; work=$(mktemp -d); chmod 755 "$work"
cleanup() { pkill -f "$work" 2>/dev/null || true; sleep 0.5; lab/lab.sh down $P; rm -rf "$work"; }
trap cleanup EXIT
command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null
bin=${CALLGRIND_BIN:-}
case $who in
  tproxyd*) [ -n "$bin" ] || cargo build --release --quiet --bin tproxyd
    bin=${bin:-target/release/tproxyd} ;;
  pingora-bare*) [ -n "$bin" ] || cargo build --release --quiet --bin tproxyd --example pingora_bare
    bin=${bin:-target/release/examples/pingora_bare} ;;
esac
lab/lab.sh up $P >/dev/null
# The floor runs on the same kind of runtime as the shipped config.
stealing=$(sed -n 's/^work_stealing: *\(true\|false\).*/\1/p' conf/tproxyd.yaml)
export PINGORA_BARE_WORK_STEALING=${stealing:-true}
mkdir -p "$work/www"; head -c 100 /dev/zero | tr '\0' x >"$work/www/small.bin"; chmod -R a+rX "$work"
tls=
case $who in *-tls) tls=1 ;; esac
n=${n:-$([ -n "$tls" ] && echo 2000 || echo 20000)}
tls_server=
if [ -n "$tls" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench.test \
    -keyout "$work/key.pem" -out "$work/cert.pem" >/dev/null 2>&1
  tls_server="server { listen 443 ssl; ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem; ssl_session_cache off; ssl_session_tickets off; root $work/www; }"
fi
cat >"$work/nginx.conf" <<NGX
worker_processes 1; pid $work/nginx.pid; error_log $work/nginx.err warn;
events { worker_connections 1000; }
http { access_log off; keepalive_requests 1000000; server { listen 80; root $work/www; } $tls_server }
NGX
ip netns exec $P-srv nginx -c "$work/nginx.conf" -g 'daemon off;' &
if [ "$who" = tproxyd ]; then
  sed "s#/run/tproxyd#$work#" "${CALLGRIND_CONF:-conf/tproxyd.yaml}" >"$work/t.yaml"
  printf '%s\n' "${CALLGRIND_EXTRA:-}" >>"$work/t.yaml"
  cmd=("$bin" -c "$work/t.yaml")
elif [ "$who" = pingora-bare ]; then
  cmd=("$bin" "[::]:8888" 2)
elif [ "$who" = pingora-bare-timeouts ]; then
  export PINGORA_BARE_TIMEOUTS=1
  cmd=("$bin" "[::]:8888" 2)
elif [ "$who" = tproxyd-nolog ]; then
  sed "s#/run/tproxyd#$work#" conf/tproxyd.yaml >"$work/t.yaml"
  printf '  access_log: { enabled: false }\n' >>"$work/t.yaml"
  cmd=("$bin" -c "$work/t.yaml")
elif [ "$who" = tproxyd-tls ]; then
  # The shipped config plus a tls-passthrough listener (as bench.py adds).
  sed -e "s#/run/tproxyd#$work#" -e 's#^  listeners:$#&\n    - { name: lan-tls, address: "[::]:8443", mode: tls-passthrough }#' \
    conf/tproxyd.yaml >"$work/t.yaml"
  cmd=("$bin" -c "$work/t.yaml")
elif [ "$who" = haproxy-tls ]; then
  cmd=(haproxy -db -f bench/haproxy-tcp.cfg)
else
  cmd=(haproxy -db -f bench/haproxy.cfg)
fi
ip netns exec $P-rtr env RUST_LOG=${RUST_LOG:-info} valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "${cmd[@]}" >"$work/proxy.log" 2>&1 &
url=http://198.51.100.10/small.bin
[ -z "$tls" ] || url=https://198.51.100.10/small.bin
for _ in $(seq 100); do
  [ "$(ip netns exec $P-cli curl -sk -o /dev/null -w '%{http_code}' --max-time 2 $url)" = 200 ] && break
  sleep 0.3
done
# Counted from here: start-up and the first requests are not.
pid=$(pgrep -f "callgrind-out-file=$work/cg.out" | head -1)
callgrind_control -z "$pid" >/dev/null
if [ -n "$tls" ]; then
  # One TLS connection per request: handshake, GET, read to the close.
  ip netns exec $P-cli python3 - "$n" <<'PY'
import socket, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
req = b"GET /small.bin HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n"
for _ in range(int(sys.argv[1])):
    with ctx.wrap_socket(socket.create_connection(("198.51.100.10", 443)), server_hostname="bench.test") as s:
        s.sendall(req)
        while s.recv(65536):
            pass
PY
else
# Warm-up, then a fixed number of requests on 4 keep-alive connections.
ip netns exec $P-cli python3 - "$n" "${CALLGRIND_HEAD:-minimal}" <<'PY'
import socket, sys
n = int(sys.argv[1]); conns = [socket.create_connection(("198.51.100.10", 80)) for _ in range(4)]
req = b"GET /small.bin HTTP/1.1\r\nHost: bench\r\n\r\n"
if sys.argv[2] == "browser":
    req = (b"GET /small.bin?v=3 HTTP/1.1\r\nHost: bench.example\r\n"
           b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
           b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
           b"Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate\r\n"
           b"Referer: http://bench.example/index.html\r\nConnection: keep-alive\r\n"
           b"Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark\r\n"
           b"Upgrade-Insecure-Requests: 1\r\nPriority: u=0, i\r\nCache-Control: max-age=0\r\n\r\n")
for i in range(n):
    s = conns[i % 4]; s.sendall(req); data = b""
    while not data.endswith(b"x" * 100):
        data += s.recv(65536)
PY
fi
case $who in haproxy*) kill -TERM "$pid" ;; *) kill -INT "$pid" ;; esac; for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
total=$(grep -hE "^summary:" "$work"/cg.out* | awk '{s+=$2} END {printf "%.0f", s}')
out=${CALLGRIND_OUT:-/tmp/callgrind-$who${CALLGRIND_HEAD:+-$CALLGRIND_HEAD}.out}
cp "$work"/cg.out "$out" 2>/dev/null || true
echo "$who${CALLGRIND_HEAD:+ ($CALLGRIND_HEAD head)}: $total instructions for $n requests: $((total / n)) per request"
# The functions that dominate, by inclusive cost (callgrind_annotate).
callgrind_annotate --inclusive=yes "$out" 2>/dev/null \
  | grep -E "^ *[0-9,]+ \(" | head -16 | sed 's/\[[^]]*\]//g' | cut -c1-160
