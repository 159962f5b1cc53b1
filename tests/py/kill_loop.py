"""The kill switch's client: keeps one TCP connection open to ADDR:LIVE_PORT, sending a numbered
line on it every round, and every round also opens a new connection to ADDR:PORT. Prints one
JSON line per round: {"t": CLOCK_MONOTONIC seconds at the start of the round, "ok": the new connection succeeded,
"errno": its error, "seq": the line number sent on the live connection (null once sending
failed)}. Usage: kill_loop.py ADDR PORT LIVE_PORT SECONDS"""
import json
import socket
import sys
import time

addr, port, live_port, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
family = socket.AF_INET6 if ":" in addr else socket.AF_INET
live = socket.create_connection((addr, live_port), timeout=2)
seq = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    t = time.monotonic()
    sent = None
    if live is not None:
        try:
            live.sendall(b"seq %d\n" % seq)
            sent = seq
        except OSError:
            live = None
    seq += 1
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect((addr, port))
        ok, err = True, 0
    except OSError as e:
        ok, err = False, e.errno or -1
    finally:
        s.close()
    print(json.dumps({"t": t, "ok": ok, "errno": err, "seq": sent}), flush=True)
    time.sleep(0.02)
