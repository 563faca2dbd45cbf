#!/usr/bin/env python3
"""A tiny HTTP origin for the lab demo: answers every request with what it
saw — who connected (the peer), which address was dialed (the local
address) and the request headers — so you can see tproxyd at work."""
import http.server
import socket
import sys
import threading


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        peer = self.client_address[0].removeprefix("::ffff:")
        local = self.connection.getsockname()
        local_ip = local[0].removeprefix("::ffff:")
        lines = [
            f"origin {local_ip} port {local[1]} answered {self.command} {self.path}",
            f"  connection came from {peer} (the router, not the client)",
        ]
        lines += [f"  {k}: {v}" for k, v in self.headers.items()]
        body = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stderr.write("origin: " + (fmt % args) + "\n")


class DualStackServer(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def main():
    ports = [int(p) for p in sys.argv[1:]] or [80]
    servers = [DualStackServer(("::", p), Handler) for p in ports]
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    servers[0].serve_forever()


if __name__ == "__main__":
    main()
