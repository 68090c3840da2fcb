"""A local stand-in for a Microsoft Teams Workflows webhook (Teams cannot run here), for the
stack and its demo. Standard library only.

POST /webhook answers as the Workflows webhook does: 202 and the card stored as
`<dir>/cards/<n>.json`; 413 over Teams' 28 KB message limit; 400 for a body that is not JSON.
Faults on demand: a file named `fault` in <dir> holding `429 N` answers the next N posts with
429 and `Retry-After: 1`, `500 N` with 500. GET /cards lists the stored cards' file names.

    python3 teams_sink.py <port> <dir> [--cert PEM --key PEM]

With --cert and --key it serves https, as Teams' webhooks are (the stack's SECURE=1).
"""
import json
import os
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LIMIT = 28 * 1024
LOCK = threading.Lock()


def take_fault(root):
    path = os.path.join(root, "fault")
    with LOCK:
        try:
            with open(path) as f:
                status, left = (f.read().split() + ["1"])[:2]
        except (OSError, ValueError):
            return None
        left = int(left) - 1
        if left > 0:
            with open(path, "w") as f:
                f.write(f"{status} {left}")
        else:
            os.remove(path)
        return int(status)


class Handler(BaseHTTPRequestHandler):
    root = "."

    def answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path != "/cards":
            return self.answer(404)
        names = sorted(os.listdir(os.path.join(self.root, "cards")))
        self.answer(200, json.dumps(names).encode(), [("content-type", "application/json")])

    def do_POST(self):
        if self.path != "/webhook":
            return self.answer(404)
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n)
        fault = take_fault(self.root)
        if fault == 429:
            return self.answer(429, b"Too many requests", [("retry-after", "1")])
        if fault:
            return self.answer(fault, b"fault on demand")
        if n > LIMIT:
            return self.answer(413, b"message over 28 KB")
        try:
            json.loads(body)
        except ValueError:
            return self.answer(400, b"not JSON")
        with LOCK:
            cards = os.path.join(self.root, "cards")
            name = f"{len(os.listdir(cards)) + 1:06d}.json"
            with open(os.path.join(cards, name), "wb") as f:
                f.write(body)
        self.answer(202)

    def log_message(self, fmt, *args):
        sys.stderr.write("teams-sink: " + (fmt % args) + "\n")


def main():
    port, root = int(sys.argv[1]), sys.argv[2]
    opts = dict(zip(sys.argv[3::2], sys.argv[4::2]))
    os.makedirs(os.path.join(root, "cards"), exist_ok=True)
    Handler.root = root
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    if "--cert" in opts:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(opts["--cert"], opts["--key"])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
