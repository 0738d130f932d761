"""The local HTTP server the model-fetch tests download from (127.0.0.1, never the internet), and the
weights cards they write; shared by tests/models/test_fetch.py and tests/cli/test_models.py (the `server`
and `weights` fixtures built on it are in conftest.py)."""
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import yaml


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        srv = self.server
        path, _, query = self.path.partition("?")
        name = path.lstrip("/")
        srv.requests.append((name, self.headers.get("Range")))
        q = {k: v[0] for k, v in parse_qs(query).items()}
        if name == "uc":  # Google Drive's large-file page: a form whose fields lead to the file
            return self._page(f'<html><title>Google Drive - Virus scan warning</title><form id="download-form" '
                              f'action="/usercontent" method="get"><input type="hidden" name="id" value="{q["id"]}">'
                              f'<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" '
                              f'value="abc-1"></form></html>')
        if name == "uc-cookie":  # the older form: a download_warning cookie holds the token
            if q.get("confirm") == "TOKEN9":
                return self._file(q["id"])
            return self._page("<html><title>Warning</title>large file</html>",
                              cookie="download_warning_1234=TOKEN9; Path=/")
        if name == "quota":
            return self._page("<html><title>Google Drive - Quota exceeded</title>Too many users have viewed or "
                              "downloaded this file recently.</html>")
        if name == "usercontent":
            if q.get("confirm") != "t" or q.get("uuid") != "abc-1":
                return self._page("<html><title>no</title></html>")
            return self._file(q["id"])
        self._file(name)

    def _page(self, text, cookie=None):
        body = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if cookie:
            self.send_header("Set-Cookie", cookie)
        self.end_headers()
        self.wfile.write(body)

    def _file(self, name):
        srv = self.server
        if name not in srv.files:
            self.send_error(404, "Not Found")
            return
        data = srv.files[name]
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and name not in srv.no_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data) + srv.extra_length.get(name, 0)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        announced = len(body) + srv.extra_length.get(name, 0)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(announced))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data) + srv.extra_length.get(name, 0)}")
        self.end_headers()
        cut = srv.drop_after.pop(name, None)
        if cut is not None or announced != len(body):  # send part of what was announced, then hang up
            self.wfile.write(body[:cut] if cut is not None else body)
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


def start_server():
    """A ThreadingHTTPServer on a free port of 127.0.0.1 serving srv.files; stop it with stop_server."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.files, srv.requests, srv.drop_after, srv.extra_length, srv.no_range = {}, [], {}, {}, set()
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    return srv


def stop_server(srv):
    srv.shutdown()
    srv.server_close()


def write_card(cards, hp, url, sha256=None, name="tiny", file="tiny_1000.pt"):
    cards.joinpath(f"{name}.yaml").write_text(yaml.safe_dump(
        {"name": name, "file": file, "url": url, "sha256": sha256, "size": "about 1 MB", "hparams": hp}))
    return cards


def use_cards(monkeypatch, w, cards):
    """The card in a second weights folder after the (writable, first) download folder."""
    monkeypatch.setenv("REPAINT_WEIGHTS", f"{w}{os.pathsep}{cards}")
