"""What a Socket.IO socket keeps after it sent one large message.

N sockets of one user connect to a `btp api` worker (raw WebSocket, Socket.IO CONNECT
with auth), each sends one `sync:pull` event of SIZE bytes (refused by validation, but
read whole by the server), then all stay open and idle. Prints the worker's RSS before
and after the large frames, per socket. Loopback only; run by retained.sh.

Usage: python3 retained.py HOST PORT PID N SIZE
"""
import base64
import json
import os
import socket
import struct
import sys
import time
import urllib.request


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def text_frame(text):
    """A masked client text frame."""
    data = text.encode()
    mask = os.urandom(4)
    n = len(data)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    elif n < 65536:
        head = bytes([0x81, 0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([0x81, 0x80 | 127]) + struct.pack(">Q", n)
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + mask + masked


def drain(sock, wait):
    sock.settimeout(wait)
    try:
        while sock.recv(1 << 20):
            pass
    except (socket.timeout, BlockingIOError):
        pass


def main():
    host, port, pid, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    register = urllib.request.Request(
        f"http://{host}:{port}/api/auth/register",
        data=json.dumps({"email": f"retained{time.time_ns()}@example.ma",
                         "password": "bench-password-1", "name": "Retained"}).encode(),
        headers={"content-type": "application/json"})
    token = json.load(urllib.request.urlopen(register, timeout=10))["token"]

    sockets = []
    for i in range(n):
        sock = socket.create_connection((host, port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {host}\r\n"
                      f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        sock.sendall(text_frame("40" + json.dumps({"token": token, "clientSessionId": f"r{i}"})))
        sockets.append(sock)
    time.sleep(1.5)
    for sock in sockets:
        drain(sock, 0.02)
    time.sleep(1.0)
    before = rss_kib(pid)

    message = text_frame('42["sync:pull",{"padding":"' + "x" * size + '"}]')
    for sock in sockets:
        sock.sendall(message)
        drain(sock, 0.005)
    time.sleep(2.0)
    for sock in sockets:
        drain(sock, 0.02)
    time.sleep(1.0)
    after = rss_kib(pid)
    print(f"{n} sockets, one {size}-byte message each: worker RSS {before} KiB -> {after} KiB, "
          f"{(after - before) / n:.1f} KiB per socket kept after its message")
    for sock in sockets:
        sock.close()


if __name__ == "__main__":
    main()
