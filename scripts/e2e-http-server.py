#!/usr/bin/env python3
"""Tiny HTTP server for flowpath's end-to-end tests and demo.

usage: e2e-http-server.py NAME ADDR PORT

GET / answers "hello from NAME; peer=IP:PORT" (the peer address the server's
socket saw), GET /big adds 256 KiB of payload. Prints "listening" once bound.
"""
import http.server
import socketserver
import sys

name, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        body = f"hello from {name}; peer={self.client_address[0]}:{self.client_address[1]}\n"
        data = body.encode()
        if self.path.startswith("/big"):
            data += b"x" * (256 * 1024) + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    allow_reuse_address = True
    daemon_threads = True


srv = Server((addr, port), Handler)
print("listening", flush=True)
srv.serve_forever()
