"""Test client: makes one outbound attempt and prints what happened as one JSON line.
Usage: client.py MODE ADDR PORT [HOLD_SECONDS]
MODE: tcp | udp-connect | udp-sendto | tfo | fork-tcp (a forked child makes the TCP attempt)."""
import errno
import json
import os
import socket
import sys
import time

mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
hold = float(sys.argv[4]) if len(sys.argv) > 4 else 0.3
family = socket.AF_INET6 if ":" in addr else socket.AF_INET
target = (addr, port)


def attempt(kind):
    try:
        if kind == "tcp":
            s = socket.socket(family, socket.SOCK_STREAM)
            s.settimeout(3)
            s.connect(target)
            s.sendall(b"hello")
        elif kind == "udp-connect":
            s = socket.socket(family, socket.SOCK_DGRAM)
            s.connect(target)
            s.send(b"hello")
        elif kind == "udp-sendto":
            s = socket.socket(family, socket.SOCK_DGRAM)
            s.sendto(b"hello", target)
        elif kind == "tfo":
            # Blocking: with a timeout set, Python makes the socket non-blocking and the
            # Fast Open sendto() returns EINPROGRESS instead of completing.
            s = socket.socket(family, socket.SOCK_STREAM)
            s.sendto(b"hello", socket.MSG_FASTOPEN, target)
        else:
            raise SystemExit("unknown mode " + kind)
        time.sleep(0.1)
        s.close()
        return {"ok": True, "errno": 0}
    except OSError as e:
        return {"ok": False, "errno": e.errno, "error": errno.errorcode.get(e.errno, str(e))}


if mode == "fork-tcp":
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(r)
        res = attempt("tcp")
        res["pid"] = os.getpid()
        os.write(w, json.dumps(res).encode())
        time.sleep(hold)
        os._exit(0)
    os.close(w)
    out = json.loads(os.read(r, 4096))
    os.waitpid(child, 0)
    out["parent_pid"] = os.getpid()
    print(json.dumps(out), flush=True)
else:
    out = attempt(mode)
    out["pid"] = os.getpid()
    print(json.dumps(out), flush=True)
    # Stay alive a moment so the agent can read /proc for this pid.
    time.sleep(hold)
