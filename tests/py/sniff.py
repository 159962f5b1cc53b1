"""Counts the packets on the namespace's loopback whose destination is ADDR (as they leave: each
packet is seen twice on lo, once going out and once coming in; both are counted), for SECONDS.
Writes "ready" to the log once listening, then the count as JSON at the end.
Usage: sniff.py ADDR SECONDS LOG"""
import json
import socket
import sys
import time

addr, seconds, log_path = sys.argv[1], float(sys.argv[2]), sys.argv[3]
v6 = ":" in addr
want = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, addr)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
s.bind(("lo", 0))
s.settimeout(0.2)
log = open(log_path, "a", buffering=1)
log.write("ready\n")
n, first = 0, None
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        f = s.recv(65535)
    except socket.timeout:
        continue
    ip = f[14:]
    if v6 and len(ip) >= 40 and ip[0] >> 4 == 6 and ip[24:40] == want:
        n += 1
        first = first if first is not None else ip[6]
    elif not v6 and len(ip) >= 20 and ip[0] >> 4 == 4 and ip[16:20] == want:
        n += 1
        first = first if first is not None else ip[9]
log.write(json.dumps({"count": n, "first_next_header": first}) + "\n")
