#!/usr/bin/env python3
"""Timed bulk TCP transfer, to measure what a shaped link really carries.

  bulk_transfer.py recv HOST TIMEOUT_S   listens on HOST (port picked by the kernel), prints
                                         "port N", receives one connection to its end and prints
                                         "received BYTES SECONDS GBITS" (payload Gbit/s, decimal)
  bulk_transfer.py send HOST PORT BYTES TIMEOUT_S
                                         sends BYTES zero bytes to HOST:PORT

Timing starts at the first received byte and ends at the sender's close, so connection set-up is
not counted. Every socket operation has a timeout; exit status 1 with a message on failure.
"""
import socket
import sys
import time


def recv(host, timeout):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind((host, 0))
    srv.listen(1)
    srv.settimeout(timeout)
    print(f"port {srv.getsockname()[1]}", flush=True)
    conn, _ = srv.accept()
    conn.settimeout(timeout)
    buf = bytearray(1 << 20)
    total, start = 0, None
    while True:
        n = conn.recv_into(buf)
        if n == 0:
            break
        if start is None:
            start = time.monotonic()
        total += n
    conn.close()
    if start is None:
        sys.exit("bulk_transfer: the sender sent nothing")
    seconds = time.monotonic() - start
    print(f"received {total} {seconds:.6f} {total * 8 / seconds / 1e9:.4f}", flush=True)


def send(host, port, size, timeout):
    conn = socket.create_connection((host, port), timeout=timeout)
    chunk = bytes(1 << 20)
    sent = 0
    while sent < size:
        n = min(len(chunk), size - sent)
        conn.sendall(chunk[:n])
        sent += n
    conn.shutdown(socket.SHUT_WR)
    conn.settimeout(timeout)
    conn.recv(1)  # the receiver closes after reading everything
    conn.close()


def main(argv):
    try:
        if len(argv) == 4 and argv[1] == "recv":
            recv(argv[2], float(argv[3]))
        elif len(argv) == 6 and argv[1] == "send":
            send(argv[2], int(argv[3]), int(argv[4]), float(argv[5]))
        else:
            sys.exit(__doc__)
    except OSError as e:
        sys.exit(f"bulk_transfer: {e}")


if __name__ == "__main__":
    main(sys.argv)
