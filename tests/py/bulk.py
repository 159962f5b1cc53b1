"""Known transfers, for byte accounting tests.
Server: bulk.py serve tcp|udp ADDR PORT LOG
  tcp: per connection, reads an 8-byte big-endian count D, then everything the client sends until
       it shuts down its side, then sends D bytes and closes; logs "conn <received>".
  udp: echoes every datagram back.
Client (prints one JSON line: pid, sent, received, ok):
  bulk.py tcp ADDR PORT UP DOWN          sends 8 + UP bytes, receives DOWN
  bulk.py udp ADDR PORT N SIZE MODE      MODE connect|sendto: N datagrams of SIZE, counts echoes
  bulk.py spray ADDR PORT N SIZE         N datagrams from one unconnected socket, no echo read
"""
import json
import os
import socket
import struct
import sys
import time

cmd = sys.argv[1]


def fam(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


if cmd == "serve":
    proto, addr, port, log_path = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    log = open(log_path, "a", buffering=1)
    if proto == "tcp":
        s = socket.socket(fam(addr), socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        s.listen(64)
        log.write("ready\n")
        while True:
            c, _ = s.accept()
            hdr = b""
            while len(hdr) < 8:
                chunk = c.recv(8 - len(hdr))
                if not chunk:
                    break
                hdr += chunk
            down = struct.unpack(">Q", hdr)[0] if len(hdr) == 8 else 0
            got = len(hdr)
            while True:
                chunk = c.recv(1 << 16)
                if not chunk:
                    break
                got += len(chunk)
            block = b"d" * (1 << 16)
            left = down
            while left > 0:
                n = c.send(block[: min(left, len(block))])
                left -= n
            c.close()
            log.write("conn %d\n" % got)
    else:
        s = socket.socket(fam(addr), socket.SOCK_DGRAM)
        s.bind((addr, port))
        log.write("ready\n")
        while True:
            data, peer = s.recvfrom(65535)
            s.sendto(data, peer)
    sys.exit(0)

addr, port = sys.argv[2], int(sys.argv[3])
out = {"pid": os.getpid(), "ok": True}
try:
    if cmd == "tcp":
        up, down = int(sys.argv[4]), int(sys.argv[5])
        s = socket.socket(fam(addr), socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect((addr, port))
        s.sendall(struct.pack(">Q", down))
        block = b"u" * (1 << 16)
        left = up
        while left > 0:
            n = min(left, len(block))
            s.sendall(block[:n])
            left -= n
        s.shutdown(socket.SHUT_WR)
        got = 0
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            got += len(chunk)
        # What went on the wire, retransmissions included (tcp_info.tcpi_bytes_sent, at offset
        # 200 of struct tcp_info): the server has read everything, so nothing is left to send.
        wire = 8 + up
        try:
            info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
            if len(info) >= 208:
                wire = struct.unpack_from("Q", info, 200)[0]
        except OSError:
            pass
        s.close()
        out.update(sent=8 + up, received=got, wire_sent=wire, cookie_hint=0)
    elif cmd == "udp":
        n, size, mode = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
        s = socket.socket(fam(addr), socket.SOCK_DGRAM)
        s.settimeout(2)
        if mode == "connect":
            s.connect((addr, port))
        payload = b"x" * size
        got = 0
        for _ in range(n):
            if mode == "connect":
                s.send(payload)
            else:
                s.sendto(payload, (addr, port))
            try:
                got += len(s.recv(65535))
            except socket.timeout:
                pass
        s.close()
        out.update(sent=n * size, received=got)
    elif cmd == "spray":
        n, size = int(sys.argv[4]), int(sys.argv[5])
        s = socket.socket(fam(addr), socket.SOCK_DGRAM)
        payload = b"x" * size
        sent = refused = 0
        for _ in range(n):
            try:
                s.sendto(payload, (addr, port))
                sent += 1
            except PermissionError:
                refused += 1
        s.close()
        out.update(sent=sent, refused=refused)
    else:
        raise SystemExit("unknown command " + cmd)
except OSError as e:
    out.update(ok=False, errno=e.errno, error=str(e))
print(json.dumps(out), flush=True)
