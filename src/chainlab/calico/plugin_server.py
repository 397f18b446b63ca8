"""The plugin's sockets: HTTP over `/run/docker/plugins/calico.sock` and `calico-ipam.sock`.

dockerd's legacy plugin discovery looks for `<name>.sock` in /run/docker/plugins; a plugin
is activated (`POST /Plugin.Activate`) on first use and then called per operation. Each
socket serves one driver. A handler's `PluginError` (or any other failure) is answered with
status 500 and `{"Err": message}`, which Docker turns into the error its caller sees.
"""

from __future__ import annotations

import json
import logging
import os
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from chainlab.calico.plugin import Plugin, PluginError
from chainlab.calico.sockets import PLUGIN_DIR, SOCKETS, socket_paths

CONTENT_TYPE = "application/vnd.docker.plugins.v1+json"
MAX_BODY = 1 << 20
log = logging.getLogger("libnetwork-plugin")
Routes = dict[str, Callable[[dict[str, Any]], dict[str, Any]]]


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def address_string(self) -> str:  # a unix socket has no client address
        return "docker"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        try:
            # the body is read before any answer, also a 404: a client still sending it to a
            # connection closed under it gets a broken pipe instead of the answer
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 <= length <= MAX_BODY:
                raise PluginError(f"request body of {length} bytes")
            body = self.rfile.read(length) if length else b""
        except (PluginError, ValueError) as exc:
            self._answer(400, {"Err": str(exc)})
            return
        handler = self.server.routes.get(self.path)
        if handler is None:
            self._answer(404, {"Err": f"unknown call {self.path}"})
            return
        try:
            request = json.loads(body) if body.strip() else {}
            if not isinstance(request, dict):
                raise PluginError("the request is not a JSON object")
            answer = handler(request)
        except PluginError as exc:
            log.warning("%s: %s", self.path, exc)
            self._answer(500, {"Err": str(exc)})
            return
        except Exception as exc:  # noqa: BLE001 - any failure is Docker's error to show, never the daemon's end
            log.exception("%s failed", self.path)
            self._answer(500, {"Err": f"{self.path}: {exc.__class__.__name__}: {exc}"})
            return
        log.info("%s %s -> %s", self.path, _short(request), _short(answer))
        self._answer(200, answer)


def _short(value: dict[str, Any]) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) < 300 else text[:300] + "…"


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, routes: Routes):
        self.routes = routes
        super().__init__(path, _Handler)


def serve(plugin: Plugin, directory: str = PLUGIN_DIR) -> list[_Server]:
    """Listen on both sockets (root-only, replacing stale ones) in background threads."""
    os.makedirs(directory, mode=0o755, exist_ok=True)
    servers = []
    for name, kind in SOCKETS.items():
        path = Path(directory) / f"{name}.sock"
        path.unlink(missing_ok=True)
        old = os.umask(0o177)
        try:
            server = _Server(str(path), plugin.routes(kind))
        finally:
            os.umask(old)
        threading.Thread(target=server.serve_forever, name=f"plugin-{name}", daemon=True).start()
        servers.append(server)
    return servers


def remove_sockets(directory: str = PLUGIN_DIR) -> None:
    """So that Docker says "plugin not found" at once instead of retrying a dead socket."""
    for path in socket_paths(directory):
        path.unlink(missing_ok=True)
