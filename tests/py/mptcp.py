"""MPTCP peers for the subflow attribution test.
server PORT LOG: listens on every address of the namespace, keeps each connection open, logs
  "ready" then "conn PEER" per connection (subflows join the connection and are not accepted).
client ADDR PORT: connects, sends a line, waits for the path manager to open the subflows the
  server announces, and prints {"pid", "ok", "errno", "subflows", "add_addr_accepted"} (from
  MPTCP_INFO) as JSON."""
import json
import os
import socket
import sys
import threading
import time

IPPROTO_MPTCP, SOL_MPTCP, MPTCP_INFO = 262, 284, 1

if sys.argv[1] == "server":
    port, log = int(sys.argv[2]), open(sys.argv[3], "a", buffering=1)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen()
    log.write("ready\n")
    while True:
        c, peer = srv.accept()
        log.write("conn %s\n" % peer[0])
        threading.Thread(target=lambda c=c: (c.recv(100), time.sleep(30)), daemon=True).start()
else:
    addr, port = sys.argv[2], int(sys.argv[3])
    r = {"pid": os.getpid()}
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
    try:
        c.connect((addr, port))
        c.send(b"hello\n")
        r.update(ok=True, errno=0)
    except OSError as e:
        r.update(ok=False, errno=e.errno)
    time.sleep(2)
    if r["ok"]:
        info = c.getsockopt(SOL_MPTCP, MPTCP_INFO, 64)
        r.update(subflows=info[0], add_addr_accepted=info[2])
    print(json.dumps(r))
