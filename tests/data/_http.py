"""A local HTTP server on 127.0.0.1 and archive builders for the download tests (no internet)."""

import hashlib
import http.server
import io
import tarfile
import threading
import zipfile


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def make_tgz(members: dict[str, bytes], links: dict[str, tuple[str, bytes]] = {}) -> bytes:
    """``links``: name -> (target, tarfile.SYMTYPE or LNKTYPE)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, (target, kind) in links.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
    return buffer.getvalue()


class Server:
    """Serves ``routes[path] = body``; paths in ``truncate`` claim a longer Content-Length, paths in
    ``forbidden`` answer 403 (a dead bucket), and paths in ``picky`` answer 403 to Python's default
    User-Agent (``Python-urllib/3.x``), as wikitext.smerity.com does."""

    def __init__(self):
        self.routes: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.forbidden: set[str] = set()
        self.picky: set[str] = set()
        self.requests: list[str] = []
        self.user_agents: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                agent = self.headers.get("User-Agent", "")
                server.user_agents.append(agent)
                refused = self.path in server.picky and agent.startswith("Python-urllib")
                if self.path in server.forbidden or refused:
                    self.send_error(403)
                    return
                body = server.routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                extra = 1000 if self.path in server.truncate else 0
                self.send_header("Content-Length", str(len(body) + extra))
                self.end_headers()
                self.wfile.write(body)  # then the connection closes (HTTP/1.0)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
