#!/usr/bin/env python3
"""Opens N keep-alive connections to a target, makes one request on each,
then holds them idle: prints READY and waits until stdin closes. Used by the
benchmark to measure a proxy's memory per idle connection."""
import socket
import sys


def main():
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    conns, failed = [], 0
    req = f"GET /small.bin HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    for _ in range(n):
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect((host, port))
            s.sendall(req)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    raise OSError("closed")
                data += chunk
            conns.append(s)
        except OSError:
            failed += 1
    print(f"READY {len(conns)} {failed}", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
