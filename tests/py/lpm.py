"""Makes one UDP connect() per line of a file of "ADDR PORT" and prints the errno of each
(0 when the hook let it through). The test namespace has no route off its loopback, so an
attempt the hook allows fails with ENETUNREACH and nothing is ever sent: only the verdict is
observed. Usage: lpm.py FILE"""
import socket
import sys

out = []
for line in open(sys.argv[1]):
    addr, port = line.split()
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        s.connect((addr, int(port)))
        out.append("0")
    except OSError as e:
        out.append(str(e.errno))
    finally:
        s.close()
print(" ".join(out), flush=True)
