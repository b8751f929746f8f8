#!/usr/bin/env python3
"""Tiny HTTP (or UDP) server for flowpath's end-to-end tests and demo.

usage: e2e-http-server.py NAME ADDR PORT [udp]

GET / answers "hello from NAME; peer=IP:PORT" (the peer address the server's
socket saw); GET /big adds 256 KiB of payload and a newline; GET /stream
sends payload until the client goes away (8 KiB every 10 ms). The payload's
byte at offset k is 33 + k % 89 (printable), so a client can check every
byte it got. With `udp`, every datagram is answered with the hello line.
Prints "listening" once bound.
"""
import http.server
import socket
import socketserver
import sys
import time

name, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
PERIOD = 89
# Whole periods, so a chunk that starts at offset 0 ends on a period.
CHUNK = bytes(33 + k % PERIOD for k in range(PERIOD * 92))
BIG = bytes(33 + k % PERIOD for k in range(256 * 1024))


def hello(peer):
    return f"hello from {name}; peer={peer[0]}:{peer[1]}\n".encode()


if len(sys.argv) > 4 and sys.argv[4] == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    print("listening", flush=True)
    while True:
        _, peer = s.recvfrom(2048)
        s.sendto(hello(peer), peer)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        if self.path.startswith("/stream"):
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            try:
                while True:
                    self.wfile.write(CHUNK)
                    self.wfile.flush()
                    time.sleep(0.01)
            except OSError:
                return
        data = hello(self.client_address)
        if self.path.startswith("/big"):
            data += BIG + b"\n"
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

    def server_bind(self):
        # HTTPServer's own looks its name up in DNS (socket.getfqdn): a
        # query through the datapath under test, or a wait for none.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = addr, port


srv = Server((addr, port), Handler)
print("listening", flush=True)
srv.serve_forever()
