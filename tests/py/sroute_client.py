"""A client that source-routes its packets through HOP on the way to ADDR:PORT, and prints what
happened as one JSON line ({"ok", "errno", "pid"}).
MODE: rthdr-udp (setsockopt IPV6_RTHDR, a type 4 segment routing header, then connect and send),
rthdr-tcp (the same, TCP connect), rthdr-cmsg (a type 2 routing header, the only kind the kernel
takes as ancillary data, of an unconnected sendmsg), lsrr-udp (setsockopt IP_OPTIONS with a loose source route; needs CAP_NET_RAW).
Usage: sroute_client.py MODE ADDR PORT HOP"""
import json
import os
import socket
import struct
import sys

mode, addr, port, hop = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
IPV6_RTHDR = 57


def srh(final, first):
    # Segment list in reverse order: segment[0] is the final destination, the last one the first
    # hop; the kernel puts the first hop in the IPv6 destination.
    segs = [socket.inet_pton(socket.AF_INET6, final), socket.inet_pton(socket.AF_INET6, first)]
    return struct.pack("!BBBBBBH", 0, 2 * len(segs), 4, len(segs) - 1, len(segs) - 1, 0, 0) + b"".join(segs)


def type2(first):
    # A type 2 routing header (one address): what ancillary data may carry; the packet goes to
    # that address first.
    return struct.pack("!BBBB", 0, 2, 2, 1) + b"\x00" * 4 + socket.inet_pton(socket.AF_INET6, first)


def lsrr(final, first):
    # Type 0x83, length, pointer 4, then the route; the kernel sends to the first address and
    # puts the final destination last.
    route = socket.inet_aton(first) + socket.inet_aton(final)
    opt = struct.pack("!BBB", 0x83, 3 + len(route), 4) + route
    return opt + b"\x00" * (-len(opt) % 4)


out = {"ok": True, "errno": 0, "pid": os.getpid()}
try:
    if mode == "rthdr-udp":
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_RTHDR, srh(addr, hop))
        s.connect((addr, port))
        s.send(b"source-routed\n")
    elif mode == "rthdr-tcp":
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_RTHDR, srh(addr, hop))
        s.settimeout(2)
        s.connect((addr, port))
        s.sendall(b"source-routed\n")
    elif mode == "rthdr-cmsg":
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.sendmsg([b"source-routed\n"], [(socket.IPPROTO_IPV6, IPV6_RTHDR, type2(hop))], 0, (addr, port))
    elif mode == "lsrr-udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, lsrr(addr, hop))
        s.connect((addr, port))
        s.send(b"source-routed\n")
    else:
        raise SystemExit("unknown mode " + mode)
except OSError as e:
    out = {"ok": False, "errno": e.errno, "pid": os.getpid()}
print(json.dumps(out))
