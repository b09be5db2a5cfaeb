"""A 127.0.0.1 HTTP server that misbehaves on purpose, one behaviour per first path segment:

  endless  200, no Content-Length, zeros for ever          trickle  200, 10 MB announced, 2 bytes a second
  stall    200, 5000 bytes then silence (Range honoured)   short    Content-Length 100000, 10 bytes, then closes
  err500   500 every time                                  huge     announces 10 GB, sends nothing more
  garbage  200, 1000 random bytes (not a checkpoint)
"""
from __future__ import annotations

import http.server
import re
import threading
import time

import numpy as np


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):  # noqa: N802
        mode = self.path.strip("/").split("/")[0]
        try:
            getattr(self, f"_{mode}", self._missing)()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should

    def _head(self, code: int, length=None, extra=()):
        self.send_response(code)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()

    def _missing(self):
        self._head(404, 0)

    def _endless(self):
        self.close_connection = True
        self._head(200)
        block = bytes(1 << 16)
        while not self.server.stopping.is_set():
            self.wfile.write(block)

    def _trickle(self):
        self.close_connection = True
        self._head(200, 10_000_000)
        while not self.server.stopping.is_set():
            self.wfile.write(b"\x00")
            self.wfile.flush()
            time.sleep(0.5)

    def _stall(self):
        self.close_connection = True
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        start = int(m.group(1)) if m else 0
        total = 1_000_000
        if m:
            self._head(206, total - start, [("Content-Range", f"bytes {start}-{total - 1}/{total}")])
        else:
            self._head(200, total)
        self.wfile.write(bytes(5000))
        self.wfile.flush()
        self.server.stopping.wait(30)

    def _short(self):
        self.close_connection = True
        self._head(200, 100_000)
        self.wfile.write(b"0123456789")
        self.wfile.flush()

    def _err500(self):
        self._head(500, 0)

    def _huge(self):
        self.close_connection = True
        self._head(200, 10_000_000_000)
        self.wfile.flush()
        self.server.stopping.wait(30)

    def _garbage(self):
        data = np.random.default_rng(2).integers(0, 256, 1000, np.uint8).tobytes()
        self._head(200, len(data))
        self.wfile.write(data)


class Server:
    def __init__(self):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.stopping = threading.Event()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
