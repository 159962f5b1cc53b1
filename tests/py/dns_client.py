"""DNS test client: resolves names with glibc (getaddrinfo, so /etc/resolv.conf of the test
namespace) and connects at once to what it got; prints one JSON line.

Usage:
  dns_client.py rounds TEMPLATE N PORT [FAMILY]   resolve TEMPLATE.format(i) and connect, N times
  dns_client.py connect ADDR PORT                 connect only
  dns_client.py resolve NAME                      resolve only
  dns_client.py wait-query NAME TXID SPORT        (held) send one A query for NAME from
                                                  198.18.0.10:SPORT with transaction id TXID,
                                                  print the pid, wait for a line on stdin, then
                                                  report whether an answer arrived and try to
                                                  connect to FORGED:443 (last argument)
  dns_client.py self-spoof NAME TXID SPORT FORGED as wait-query, but the process itself sends a
                                                  forged answer to its own socket from a raw
                                                  socket (spoofing the resolver) before reading
FAMILY: 4, 6 or 46 (alternate). An optional process name can be set with NAME=... in the
environment variable PROC_NAME."""
import ctypes
import errno
import json
import os
import socket
import struct
import sys
import time

if os.environ.get("PROC_NAME"):
    ctypes.CDLL(None).prctl(15, os.environ["PROC_NAME"].encode(), 0, 0, 0)

RESOLVER = ("198.18.0.53", 53)


def connect(addr, port):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((addr, port))
        return 0
    except OSError as e:
        return e.errno or -1
    finally:
        s.close()


def resolve(name, family):
    infos = socket.getaddrinfo(name, 443, family, socket.SOCK_STREAM)
    return infos[0][4][0]


def query(name, txid, qtype=1):
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", qtype, 1)


def answer(name, txid, addrs, ttl=300):
    """A response whose question is NAME and whose answers are A records for ADDRS."""
    msg = query(name, txid)
    msg = struct.pack("!HHHHHH", txid, 0x8180, 1, len(addrs), 0, 0) + msg[12:]
    for a in addrs:
        msg += struct.pack("!HHHIH", 0xC00C, 1, 1, ttl, 4) + socket.inet_aton(a)
    return msg


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def raw_udp(src, sport, dst, dport, payload, bad_checksum=False):
    """Sends an IPv4/UDP datagram with any source from a raw socket (CAP_NET_RAW)."""
    ulen = 8 + len(payload)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, ulen)
    c = csum(pseudo + struct.pack("!HHHH", sport, dport, ulen, 0) + payload) or 0xFFFF
    if bad_checksum:
        c ^= 0x5A5A
    udp = struct.pack("!HHHH", sport, dport, ulen, c) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 0, 0, 64, 17, 0, socket.inet_aton(src),
                     socket.inet_aton(dst))
    r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        r.sendto(ip + udp, (dst, 0))
        return 0
    except OSError as e:
        return e.errno
    finally:
        r.close()


mode = sys.argv[1]
out = {"pid": os.getpid()}
if mode == "rounds":
    template, n, port = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    fam = sys.argv[5] if len(sys.argv) > 5 else "4"
    ok, refused, failed = 0, [], []
    for i in range(n):
        f = {"4": socket.AF_INET, "6": socket.AF_INET6}.get(fam) or (socket.AF_INET if i % 2 == 0 else socket.AF_INET6)
        name = template.format(i)
        try:
            a = resolve(name, f)
        except OSError as e:
            failed.append([name, str(e)])
            continue
        rc = connect(a, port)
        if rc == 0:
            ok += 1
        else:
            refused.append([name, a, errno.errorcode.get(rc, rc)])
    out.update(ok=ok, refused=refused[:20], n_refused=len(refused), failed=failed[:20])
elif mode == "connect":
    out["errno"] = connect(sys.argv[2], int(sys.argv[3]))
elif mode == "resolve":
    fam = socket.AF_INET6 if len(sys.argv) > 3 and sys.argv[3] == "6" else socket.AF_INET
    try:
        out["addr"] = resolve(sys.argv[2], fam)
    except OSError as e:
        out["error"] = str(e)
elif mode in ("wait-query", "self-spoof"):
    name, txid, sport, forged = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("198.18.0.10", sport))
    s.sendto(query(name, txid), RESOLVER)
    print(os.getpid(), flush=True)
    sys.stdin.readline()
    if mode == "self-spoof":
        out["spoof_errno"] = raw_udp(RESOLVER[0], 53, "198.18.0.10", sport,
                                     answer(name, txid, [forged] + ["198.18.250.%d" % i for i in range(1, 11)]))
    s.settimeout(0.5)
    try:
        data, frm = s.recvfrom(4096)
        out["received_from"] = list(frm)
    except socket.timeout:
        out["received_from"] = None
    out["errno"] = connect(forged, 443)
elif mode == "smuggle":
    # A query for an allowed name carrying more than its question: trailing bytes, a second
    # query in the same datagram (GSO) or TCP segment. Prints the errno of the send (UDP) or
    # whether any answer came back (TCP).
    kind, listed, unlisted = sys.argv[2], sys.argv[3], sys.argv[4]
    q1, q2 = query(listed, 1), query(unlisted, 2)
    if kind == "udp-trailing":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.sendto(q1 + b"exfiltrated-data", RESOLVER)
            out["errno"] = 0
        except OSError as e:
            out["errno"] = e.errno
    elif kind == "udp-gso":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        UDP_SEGMENT = 103
        q2 = q2 + b"\0" * (len(q1) - len(q2)) if len(q2) < len(q1) else q2[: len(q1)]
        s.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, len(q1))
        try:
            s.sendto(q1 + q2, RESOLVER)
            out["errno"] = 0
        except OSError as e:
            out["errno"] = e.errno
    elif kind in ("tcp-split", "tcp-gso-opt"):
        # tcp-split: the unlisted query written a few bytes at a time, so that no segment holds
        # a whole message.
        s = socket.create_connection(RESOLVER, timeout=2)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data = struct.pack("!H", len(q2)) + q2
        for i in range(0, len(data), 7):
            s.send(data[i:i + 7])
            time.sleep(0.05)
        s.settimeout(1.5)
        try:
            out["answer_bytes"] = len(s.recv(4096))
        except (socket.timeout, OSError):
            out["answer_bytes"] = 0
    elif kind == "tcp-pipelined":
        s = socket.create_connection(RESOLVER, timeout=2)
        s.sendall(struct.pack("!H", len(q1)) + q1 + struct.pack("!H", len(q2)) + q2)
        s.settimeout(1.5)
        try:
            out["answer_bytes"] = len(s.recv(4096))
        except (socket.timeout, OSError):
            out["answer_bytes"] = 0
elif mode == "flood":
    # N queries with distinct transaction ids for a name the resolver never answers.
    n = int(sys.argv[2])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = 0
    for i in range(n):
        try:
            s.sendto(query("silent.fx.test", i & 0xFFFF), RESOLVER)
            sent += 1
        except OSError:
            pass
    out["sent"] = sent
elif mode == "userns-forge":
    # Run inside a network namespace of its own (unshare -Urn: no privilege needed), where the
    # process can be its own resolver on 127.0.0.53:53: asks NAME, answers FORGED.
    name, forged = sys.argv[2], sys.argv[3]
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.53", 53))
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(2)
    c.sendto(query(name, 7), ("127.0.0.53", 53))
    q, frm = server.recvfrom(4096)
    server.sendto(answer(name, 7, [forged], ttl=3600), frm)
    data, _ = c.recvfrom(4096)
    out["answered"] = len(data) > 0
    out["uid"] = os.getuid()
    out["errno"] = connect(forged, 443)
elif mode == "forge":
    # Run outside the watched cgroup, as the network would: FORGE KIND NAME TXID DPORT FORGED
    kind, name, txid, dport, forged = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
    # Padding records: a datagram over 76 bytes has its checksum checked late by the kernel
    # (after the DNS program ran), which is the case the program must check itself.
    extra = ["198.18.250.%d" % i for i in range(1, 11)]
    if kind == "wrong-source":
        f = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        f.bind(("198.18.0.54", 53))
        f.sendto(answer(name, txid, [forged] + extra), ("198.18.0.10", dport))
        out["errno"] = 0
    else:
        q_name = "other." + name if kind == "wrong-question" else name
        t = txid + 1 if kind == "wrong-txid" else txid
        out["errno"] = raw_udp(RESOLVER[0], 53, "198.18.0.10", dport, answer(q_name, t, [forged] + extra),
                               bad_checksum=(kind == "bad-checksum"))
print(json.dumps(out), flush=True)
