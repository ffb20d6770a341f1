"""A real registry for the tests (Debian's docker-registry, the CNCF distribution registry) on 127.0.0.1 with a
free port, anonymous or with htpasswd basic auth; skopeo to push; and two small servers of ours in front of
it: a bearer token server with a proxy that asks for its tokens, and a fault proxy (dropped connections,
delays, 500s, Range ignored)."""

from __future__ import annotations

import base64
import contextlib
import http.client
import http.server
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def run_registry(work: Path, htpasswd: tuple[str, str] | None = None):
    """host:port of a registry of our own, stopped on exit; with ``htpasswd`` (user, password) it asks for
    basic auth."""
    exe = shutil.which("docker-registry")
    if exe is None or shutil.which("skopeo") is None:
        pytest.fail("docker-registry and skopeo are needed (make deps installs them)")
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    auth = ""
    if htpasswd is not None:
        if shutil.which("htpasswd") is None:
            pytest.fail("htpasswd is needed for bcrypt entries (apt-get install apache2-utils)")
        users = work / "htpasswd"
        subprocess.run(["htpasswd", "-Bbc", str(users), *htpasswd], check=True, capture_output=True)
        auth = f"auth:\n  htpasswd:\n    realm: test\n    path: {users}\n"
    config = work / "registry.yml"
    config.write_text(
        f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {work / 'registry'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n{auth}"
    )
    proc = subprocess.Popen([exe, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2).close()
                break
            except urllib.error.HTTPError:
                break  # 401: up, and asking for credentials
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("the registry did not start")
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def registry(tmp_path):
    """host:port of an anonymous registry of our own on the loopback address, stopped after the test."""
    with run_registry(tmp_path / "reg") as host:
        yield host


def push(layout: Path, ref: str, creds: str | None = None) -> None:
    """skopeo copy oci:LAYOUT docker://REF."""
    extra = ["--dest-creds", creds] if creds else []
    subprocess.run(
        ["skopeo", "copy", "--dest-tls-verify=false", *extra, f"oci:{layout}", f"docker://{ref}"],
        check=True,
        capture_output=True,
        timeout=120,
    )


def pull(ref: str, layout: Path, creds: str | None = None) -> None:
    """skopeo copy docker://REF oci:LAYOUT."""
    extra = ["--src-creds", creds] if creds else []
    subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", *extra, f"docker://{ref}", f"oci:{layout}"],
        check=True,
        capture_output=True,
        timeout=120,
    )


# ---------------------------------------------------------------------------- servers of ours in front
class Proxy:
    """An HTTP proxy in front of ``upstream`` on a port of its own. ``faults`` is a list the test fills with
    what the next requests meet (each used once, in order): "drop" (connection closed with no answer),
    "drop-body" (headers, then half the body, then closed), "500", "delay" (2 s before answering), "corrupt" (the first byte of the body flipped), "shift-range" (a Range
    asked for one byte further on, so the answer holds other bytes than asked for), "long-range" (a Range
    answered with one byte more and no Content-Range). With
    ``ignore_range`` every Range header is dropped. With ``token`` the proxy asks for a bearer token from
    the token server at ``realm`` (and refuses any other), as registries behind an auth service do.
    ``seen`` keeps (method, path, authorization) of every request, for the tests to read."""

    def __init__(self, upstream: str, *, token: str | None = None, realm: str | None = None) -> None:
        self.upstream = upstream
        self.faults: list[str] = []
        self.ignore_range = False
        self.fault_path = "/v2/"  # faults hit only requests whose path holds this
        self.token = token
        self.realm = realm
        self.seen: list[tuple[str, str, str | None]] = []
        self.redirect_to: str | None = None  # blob GETs answered with a redirect to this host:port
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a) -> None:
                pass

            def _any(self) -> None:
                proxy.seen.append((self.command, self.path, self.headers.get("Authorization")))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = proxy.faults.pop(0) if proxy.faults and proxy.fault_path in self.path else None
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault == "500":
                    self._reply(500, b'{"errors":[{"code":"UNKNOWN","message":"injected"}]}')
                    return
                if fault == "delay":
                    time.sleep(2)
                if proxy.token is not None and self.path.startswith("/v2/"):
                    if self.headers.get("Authorization") != f"Bearer {proxy.token}":
                        scope = ""
                        parts = self.path.split("/")
                        if len(parts) > 4:
                            repo = "/".join(parts[2:-2])
                            scope = f',scope="repository:{repo}:pull"'
                        self._reply(
                            401,
                            b"{}",
                            {"WWW-Authenticate": f'Bearer realm="{proxy.realm}",service="test"{scope}'},
                        )
                        return
                if proxy.redirect_to and self.command == "GET" and "/blobs/sha256:" in self.path:
                    self._reply(307, b"", {"Location": f"http://{proxy.redirect_to}{self.path}"})
                    return
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "authorization")
                }
                if proxy.ignore_range:
                    headers.pop("Range", None)
                if fault in ("shift-range", "long-range") and "Range" in headers:
                    first, last = headers["Range"].removeprefix("bytes=").split("-")
                    shift = 1 if fault == "shift-range" else 0
                    headers["Range"] = f"bytes={int(first) + shift}-{int(last) + 1}"
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                out = {
                    k: v
                    for k, v in resp.getheaders()
                    if k.lower() not in ("content-length", "transfer-encoding", "connection")
                }
                if fault == "long-range":
                    out = {k: v for k, v in out.items() if k.lower() != "content-range"}
                if fault == "corrupt" and data:
                    data = bytes([data[0] ^ 1]) + data[1:]
                if fault == "drop-body" and len(data) > 1:
                    self.send_response(resp.status)
                    for k, v in out.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self._reply(resp.status, data, out)
                conn.close()

            def _reply(self, status: int, data: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class TokenServer:
    """A bearer token service: GET /token?scope=…&service=… with basic credentials ``user:password`` answers
    {"token": TOKEN}; anything else 401."""

    def __init__(self, user: str, password: str, token: str) -> None:
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a) -> None:
                pass

            def do_GET(self) -> None:
                outer.requests.append(self.path)
                ok = self.headers.get("Authorization") == expected and self.path.startswith("/token")
                body = (f'{{"token": "{token}"}}' if ok else "{}").encode()
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
