"""An HTTPS front for a schema registry that enforces HTTP basic authentication, as a
registry with TLS and authentication does (Confluent Cloud, or Confluent Platform with
`authentication.method=BASIC`): the tests run the registry client against it.

    python3 registry_gate.py CERT KEY USER PASSWORD UPSTREAM_URL

Listens on an ephemeral 127.0.0.1 port, prints it on stdout, and forwards each authenticated
request to UPSTREAM_URL; a request without the credentials gets 401.
"""
import base64
import http.server
import ssl
import sys
import urllib.error
import urllib.request

cert, key, user, password, upstream = sys.argv[1:6]
expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Gate(http.server.BaseHTTPRequestHandler):
    def forward(self):
        if self.headers.get("Authorization") != expected:
            body = b'{"error_code":401,"message":"Unauthorized"}'
            self.send_response(401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else None
        request = urllib.request.Request(upstream + self.path, data=data, method=self.command)
        for name in ("Content-Type", "Accept"):
            if self.headers.get(name):
                request.add_header(name, self.headers[name])
        try:
            with urllib.request.urlopen(request, timeout=15) as answer:
                status, body = answer.status, answer.read()
        except urllib.error.HTTPError as refused:
            status, body = refused.code, refused.read()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = forward
    do_POST = forward
    do_PUT = forward

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gate)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
