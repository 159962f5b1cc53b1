"""Tries every (family, type, protocol) an IPv4/IPv6 socket can be asked for, and through each
socket created sends a marker to a denied address (connect then send, and sendto). Prints one
JSON line: a list of {"family", "type", "proto", "errno" (0: created), "sent": what the kernel
accepted to send ("connect+send", "sendto", or null)}.
Usage: sockets.py ADDR4 ADDR6 PORT"""
import errno
import json
import socket
import sys

addr4, addr6, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
TYPES = [socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_RAW, socket.SOCK_RDM, socket.SOCK_SEQPACKET, 6]
out = []
for family, addr in ((socket.AF_INET, addr4), (socket.AF_INET6, addr6)):
    for ty in TYPES:
        for proto in list(range(256)) + [262]:
            entry = {"family": int(family), "type": ty, "proto": proto, "errno": 0, "sent": None}
            try:
                s = socket.socket(family, ty, proto)
            except OSError as e:
                entry["errno"] = e.errno
                if e.errno not in (errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT, errno.EINVAL,
                                   errno.EAFNOSUPPORT, errno.EPROTOTYPE):
                    out.append(entry)
                continue
            s.settimeout(0.5)
            # ICMP echo request (type 8 / 128), so that a ping socket takes it.
            marker = bytes([8 if family == socket.AF_INET else 128, 0, 0, 0, 0, 1, 0, 1]) + b"marker"
            try:
                s.connect((addr, port))
                s.send(marker)
                entry["sent"] = "connect+send"
            except OSError:
                pass
            try:
                s.sendto(marker, (addr, port))
                entry["sent"] = entry["sent"] or "sendto"
            except OSError:
                pass
            s.close()
            out.append(entry)
print(json.dumps(out))
