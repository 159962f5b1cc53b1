"""Connects in a loop for a while, to a port every policy allows and to one no policy allows,
and reports how many attempts got the wrong outcome. Usage: loop.py ADDR OK_PORT DENIED_PORT SECONDS"""
import errno
import json
import socket
import sys
import time

addr, ok_port, denied_port, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
family = socket.AF_INET6 if ":" in addr else socket.AF_INET
res = {"attempts": 0, "ok_refused": 0, "denied_passed": 0, "errors": []}
end = time.monotonic() + seconds
while time.monotonic() < end:
    for port, should_pass in ((ok_port, True), (denied_port, False)):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect((addr, port))
            passed = True
        except OSError as e:
            passed = False
            if e.errno != errno.EPERM and len(res["errors"]) < 5:
                res["errors"].append("%d: %s" % (port, e))
        finally:
            s.close()
        res["attempts"] += 1
        if should_pass and not passed:
            res["ok_refused"] += 1
        if passed and not should_pass:
            res["denied_passed"] += 1
print(json.dumps(res), flush=True)
