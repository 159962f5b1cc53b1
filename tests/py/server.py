"""Test server: logs every TCP connection, HTTP request or UDP datagram it receives, one line
each, so a test can assert that a refused attempt never reached it.
`lines` keeps each TCP connection open and logs every line it carries ("line PEER TEXT").
Usage: server.py tcp|udp|udplite|http|lines ADDR PORT LOG"""
import http.server
import socket
import sys

proto, addr, port, log_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
family = socket.AF_INET6 if ":" in addr else socket.AF_INET
log = open(log_path, "a", buffering=1)

if proto == "http":

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            log.write("conn %s GET %s\n" % (self.client_address[0], self.path))
            body = b"ok\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(http.server.HTTPServer):
        address_family = family

    srv = Server((addr, port), Handler)
    log.write("ready\n")
    srv.serve_forever()
elif proto == "lines":
    import threading

    def serve(c, peer):
        f = c.makefile("r")
        for line in f:
            log.write("line %s %s\n" % (peer[0], line.strip()))

    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(64)
    log.write("ready\n")
    while True:
        c, peer = s.accept()
        threading.Thread(target=serve, args=(c, peer), daemon=True).start()
elif proto == "tcp":
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accept data in the SYN from TCP Fast Open clients.
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_FASTOPEN, 16)
    s.bind((addr, port))
    s.listen(64)
    log.write("ready\n")
    while True:
        c, peer = s.accept()
        c.settimeout(2)
        try:
            data = c.recv(64)
        except OSError:
            data = b""
        log.write("conn %s %s\n" % (peer[0], data.decode(errors="replace")))
        c.close()
else:
    # udp, or udplite (IPPROTO_UDPLITE, 136)
    s = socket.socket(family, socket.SOCK_DGRAM, 136 if proto == "udplite" else 0)
    s.bind((addr, port))
    log.write("ready\n")
    while True:
        data, peer = s.recvfrom(2048)
        log.write("dgram %s %s\n" % (peer[0], data.decode(errors="replace")))
