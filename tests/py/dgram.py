"""Datagrams from the sockets the `skb_dgram` program decides: ICMP echo requests through an
unprivileged ping socket, and UDP-Lite. Prints one JSON line: {"ok": did every request get its
reply (ICMP) / was every datagram sent (UDP-Lite), "errno": the first error (0: none), "sent",
"replies", "pid"}.
Usage: dgram.py MODE ADDR PORT COUNT [HOLD]
MODE: ping-sendto, ping-connect (echo, then wait for the reply), lite-sendto, lite-connect.
HOLD: a path; the socket is created first, then "ready" is written to HOLD, and the datagrams
go once HOLD.go exists (a socket that was open before the agent started)."""
import json
import os
import socket
import sys
import time

mode, addr, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
hold = sys.argv[5] if len(sys.argv) > 5 else None
v6 = ":" in addr
family = socket.AF_INET6 if v6 else socket.AF_INET
ping = mode.startswith("ping")
proto = (socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP) if ping else 136
out = {"ok": False, "errno": 0, "sent": 0, "replies": 0, "pid": os.getpid()}
try:
    s = socket.socket(family, socket.SOCK_DGRAM, proto)
except OSError as e:
    out["errno"] = e.errno
    print(json.dumps(out))
    sys.exit(0)
s.settimeout(1.0)
if hold:
    with open(hold, "w") as f:
        f.write("ready\n")
    while not os.path.exists(hold + ".go"):
        time.sleep(0.05)
try:
    if mode.endswith("connect"):
        s.connect((addr, port))
    for seq in range(count):
        if ping:
            msg = bytes([128 if v6 else 8, 0, 0, 0, 0, 0, 0, seq + 1]) + b"egress-agent"
        else:
            msg = b"egress-agent %d" % seq
        if mode.endswith("connect"):
            s.send(msg)
        else:
            s.sendto(msg, (addr, port))
        out["sent"] += 1
        if ping:
            reply = s.recv(1500)
            # An echo reply (type 0 / 129) with our payload.
            if reply[0] in (0, 129) and reply.endswith(b"egress-agent"):
                out["replies"] += 1
except OSError as e:
    out["errno"] = e.errno or -1
out["ok"] = out["errno"] == 0 and (out["replies"] == count if ping else out["sent"] == count)
print(json.dumps(out))
