#!/usr/bin/env python3
"""A TLS origin for the lab tests: HTTPS on [::]:PORT,... (dual-stack) with
the given certificate, serving files from a directory. Usage:
tls_origin.py PORT[,PORT...] CERT KEY DIR"""
import functools
import http.server
import socket
import ssl
import sys
import threading


class DualStack(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class Quiet(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass


def main():
    ports, cert, key, root = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    servers = []
    for port in ports.split(","):
        srv = DualStack(("::", int(port)), functools.partial(Quiet, directory=root))
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
        servers.append(srv)
    for srv in servers[1:]:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    print("READY", flush=True)
    servers[0].serve_forever()


if __name__ == "__main__":
    main()
