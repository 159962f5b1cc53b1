"""A stand-in for the Kubernetes API server's pod list, over TLS: answers GET /api/v1/pods with
the PodList in PODS (read again for every request, so a test can relabel pods), only to the
bearer token in TOKEN; logs each request (path, query, whether the token matched) as a JSON line.
Usage: kube_api.py PORT CERT KEY PODS TOKEN LOG"""
import http.server
import json
import ssl
import sys

port, cert, key, pods, token, log_path = int(sys.argv[1]), *sys.argv[2:7]
log = open(log_path, "a", buffering=1)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        want = "Bearer " + open(token).read().strip()
        authorised = self.headers.get("Authorization") == want
        log.write(json.dumps({"path": self.path, "authorised": authorised}) + "\n")
        if not authorised:
            body, code = b'{"kind":"Status","code":401}', 401
        elif not self.path.startswith("/api/v1/pods?"):
            body, code = b'{"kind":"Status","code":404}', 404
        else:
            body, code = open(pods, "rb").read(), 200
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
log.write(json.dumps({"ready": True}) + "\n")
srv.serve_forever()
