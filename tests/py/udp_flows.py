"""Many concurrent UDP flows: opens COUNT UDP sockets, each bound to one of SRCS (port chosen by
the kernel) and connected to DST:PORT, sends one datagram on each, and holds them open.
Prints one JSON line {"open", "errors", "first_error", "procs", "secs"} once they are open,
waits for a line on stdin, closes them all, and prints "closed".

The file limit is raised to COUNT + 1024 when allowed (root with CAP_SYS_RESOURCE); otherwise
the sockets are spread over forked children, each within the hard limit. Children stay in the
caller's cgroup.
Usage: udp_flows.py DST PORT COUNT SRC[,SRC...]"""
import json
import os
import resource
import socket
import sys
import time

dst, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
srcs = sys.argv[4].split(",")

need = count + 1024
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
try:
    if hard < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
    elif soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
except (ValueError, OSError):
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
per_proc = max(1, min(count, limit - 256))


def open_range(start, end):
    socks, errors, first_error = [], 0, None
    for i in range(start, end):
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        except OSError as e:
            errors += end - i
            first_error = first_error or repr(e)
            break
        try:
            s.bind((srcs[i % len(srcs)], 0))
            s.connect((dst, port))
            s.send(b"x")
            socks.append(s)
        except OSError as e:
            errors += 1
            first_error = first_error or repr(e)
            s.close()
    return socks, errors, first_error


t0 = time.monotonic()
children = []  # (pid, report, release pipe's write end)
for start in range(0, count, per_proc):
    end = min(count, start + per_proc)
    rep_r, rep_w = os.pipe()
    rel_r, rel_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rep_r)
        os.close(rel_w)
        for _, _, w in children:
            os.close(w)  # earlier children's release pipes
        socks, errors, first_error = open_range(start, end)
        os.write(rep_w, json.dumps({"open": len(socks), "errors": errors, "first_error": first_error}).encode())
        os.close(rep_w)
        os.read(rel_r, 1)  # EOF when the parent releases
        for s in socks:
            s.close()
        os._exit(0)
    os.close(rep_w)
    os.close(rel_r)
    children.append((pid, rep_r, rel_w))
    # One child at a time: the kernel's port search per source address stays predictable.
    data = b""
    while True:
        chunk = os.read(rep_r, 4096)
        if not chunk:
            break
        data += chunk
    os.close(rep_r)
    children[-1] = (pid, json.loads(data or b'{"open": 0, "errors": 0, "first_error": "child died"}'), rel_w)

total = {"open": 0, "errors": 0, "first_error": None, "procs": len(children)}
for _, rep, _ in children:
    total["open"] += rep["open"]
    total["errors"] += rep["errors"]
    total["first_error"] = total["first_error"] or rep["first_error"]
total["secs"] = time.monotonic() - t0
print(json.dumps(total), flush=True)
sys.stdin.readline()
for pid, _, w in children:
    os.close(w)
for pid, _, _ in children:
    os.waitpid(pid, 0)
print("closed", flush=True)
