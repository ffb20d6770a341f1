"""A client of the OCI distribution API (``/v2/``) over httpx: manifests and blobs pulled with their digests
checked, blobs and manifests pushed (existence check and cross-repository mount first), and the auth flows
registries use (anonymous, basic, bearer tokens from a ``WWW-Authenticate`` challenge).

Credentials are kept out of every message this module makes: errors name the registry, repository and
digest, never a header or a token. Redirects are followed by hand, so that the ``Authorization`` header
goes only to the host it was meant for (blob storage behind a redirect gets none).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
import urllib.parse
from dataclasses import dataclass, field

from .errors import NydusInspectError, UsageError
from .oci import DOCKER_LIST, DOCKER_MANIFEST, MAX_JSON, OCI_INDEX, OCI_MANIFEST

MANIFEST_ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")


class RegistryError(NydusInspectError):
    """A registry that cannot be reached, refuses us, or sends bytes that are not what was asked for."""


class RegistryUnreachable(RegistryError):
    """No answer at all (cannot connect, timed out, connection dropped), after the retries."""


class RangeIgnored(RegistryError):
    """The registry answered a Range request with the whole blob (200): its offsets cannot be trusted for a
    part, so the caller fetches the blob whole (and checks its digest) instead."""


@dataclass
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never printed, even by a debugging repr
        return "Credentials(<hidden>)"

    @classmethod
    def parse(cls, text: str) -> Credentials:
        user, sep, password = text.partition(":")
        if not sep or not user:
            raise UsageError("--creds: expected USER:PASSWORD")
        return cls(user, password)


def docker_config_credentials(host: str, path: str | None = None) -> Credentials | None:
    """The credentials ``docker login`` stored for ``host`` (``auths`` in ``~/.docker/config.json``, or in
    ``$DOCKER_CONFIG/config.json``), or None."""
    if path is None:
        base = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
        path = os.path.join(base, "config.json")
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read(MAX_JSON))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: unreadable docker config ({type(exc).__name__})") from None
    auths = doc.get("auths") if isinstance(doc, dict) else None
    if not isinstance(auths, dict):
        return None
    for key in (host, f"https://{host}", f"http://{host}", f"https://{host}/v2/", f"https://{host}/v1/"):
        entry = auths.get(key)
        if isinstance(entry, dict):
            if isinstance(entry.get("auth"), str):
                try:
                    user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
                except ValueError:
                    raise UsageError(f"{path}: auths[{key!r}].auth is not base64 USER:PASSWORD") from None
                if sep:
                    return Credentials(user, password)
            if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
                return Credentials(entry["username"], entry["password"])
    return None


def is_local(host: str) -> bool:
    return host.rsplit(":", 1)[0] in _LOCAL_HOSTS or host in _LOCAL_HOSTS


@dataclass
class Stats:
    """What a session moved over the network (payload bytes of blobs and manifests)."""

    fetched: int = 0
    pushed: int = 0
    requests: int = 0
    retries: int = 0
    #: Blobs read lazily (by Range): their total size, and how much of it was fetched.
    blob_bytes: int = 0
    blob_fetched: int = 0


@dataclass
class Registry:
    """One registry host, reached over https (or http for localhost or when ``insecure``)."""

    host: str
    creds: Credentials | None = None
    insecure: bool = False
    timeout: float = 30.0
    retries: int = 4
    backoff: float = 0.2
    stats: Stats = field(default_factory=Stats)

    def __post_init__(self) -> None:
        import httpx

        self._httpx = httpx
        scheme = "http" if (self.insecure or is_local(self.host)) else "https"
        self.base = f"{scheme}://{self.host}"
        self._client = httpx.Client(timeout=self.timeout, follow_redirects=False, trust_env=False)
        self._auth: dict[str, str] = {}  # scope -> Authorization header value
        self._basic = False

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -------------------------------------------------------------- requests
    def _where(self, path: str) -> str:
        return f"{self.host}{path.split('?', 1)[0]}"

    def request(
        self,
        method: str,
        path: str,
        *,
        scope: str,
        headers: dict | None = None,
        content=None,
        stream: bool = False,
        ok=(200,),
    ):
        """One request with auth, retries and redirects handled; the response (open when ``stream``)."""
        url = path if path.startswith(("http://", "https://")) else self.base + path
        for attempt in range(self.retries + 1):
            try:
                resp = self._send(method, url, scope, headers or {}, content, stream)
            except self._httpx.TransportError as exc:
                if attempt < self.retries and _replayable(content):
                    self._sleep(attempt)
                    continue
                raise RegistryUnreachable(f"{self._where(path)}: {_transport_reason(exc)}") from None
            if resp.status_code >= 500 and attempt < self.retries and _replayable(content):
                resp.close()
                self._sleep(attempt)
                continue
            if resp.status_code not in ok:
                status = resp.status_code
                detail = _error_detail(resp)
                resp.close()
                if status in (401, 403):
                    who = (
                        "with the credentials given"
                        if self.creds
                        else "anonymously (give --creds or docker login)"
                    )
                    raise RegistryError(f"{self._where(path)}: access denied ({status}) {who}{detail}")
                raise RegistryError(f"{self._where(path)}: {method} answered {status}{detail}")
            return resp
        raise AssertionError("unreachable")

    def _sleep(self, attempt: int) -> None:
        self.stats.retries += 1
        time.sleep(self.backoff * (2**attempt))

    def _send(self, method, url, scope, headers, content, stream):
        for _hop in range(6):
            same_host = urllib.parse.urlsplit(url).netloc == self.host
            hdrs = dict(headers)
            if same_host and scope in self._auth:
                hdrs["Authorization"] = self._auth[scope]
            self.stats.requests += 1
            # A body given as a function is made anew for each send (auth challenge, redirect, retry).
            body = content() if callable(content) else content
            req = self._client.build_request(method, url, headers=hdrs, content=body)
            resp = self._client.send(req, stream=True)
            if resp.status_code == 401 and same_host and scope not in self._auth:
                resp.read()
                if self._authenticate(resp.headers.get("www-authenticate", ""), scope):
                    continue
                return resp
            if resp.status_code in (301, 302, 303, 307, 308) and "location" in resp.headers:
                # Followed by hand: the next hop gets Authorization only if it is this registry again.
                url = urllib.parse.urljoin(url, resp.headers["location"])
                resp.close()
                if resp.status_code == 303:
                    method, content = "GET", None
                continue
            if not stream:
                resp.read()
            return resp
        raise RegistryError(f"{self._where(url)}: too many redirects")

    def _authenticate(self, challenge: str, scope: str) -> bool:
        kind, _, rest = challenge.partition(" ")
        params = {
            m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
            for m in _CHALLENGE_PARAM.finditer(rest)
        }
        if kind.lower() == "basic":
            if self.creds is None:
                return False
            token = base64.b64encode(f"{self.creds.username}:{self.creds.password}".encode()).decode()
            self._auth[scope] = f"Basic {token}"
            return True
        if kind.lower() != "bearer" or "realm" not in params:
            return False
        realm = params["realm"]
        if not realm.startswith("https://") and not (
            realm.startswith("http://") and (self.insecure or is_local(urllib.parse.urlsplit(realm).netloc))
        ):
            raise RegistryError(
                f"{self.host}: token realm {realm!r} is not https; refusing to send credentials there"
            )
        query = {"scope": scope}
        if params.get("service"):
            query["service"] = params["service"]
        auth = (self.creds.username, self.creds.password) if self.creds else None
        try:
            resp = self._client.get(realm, params=query, auth=auth)
        except self._httpx.TransportError as exc:
            raise RegistryError(f"token server {_netloc(realm)}: {_transport_reason(exc)}") from None
        if resp.status_code != 200:
            raise RegistryError(
                f"token server {_netloc(realm)}: answered {resp.status_code} for scope {scope}"
            )
        try:
            doc = resp.json()
            token = doc.get("token") or doc.get("access_token")
        except ValueError:
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"token server {_netloc(realm)}: no token in its answer")
        self._auth[scope] = f"Bearer {token}"
        return True

    # -------------------------------------------------------------- pulling
    def manifest(self, repo: str, reference: str) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest or index; checked when ``reference`` is a digest."""
        scope = f"repository:{repo}:pull"
        resp = self.request(
            "GET",
            f"/v2/{repo}/manifests/{reference}",
            scope=scope,
            headers={"Accept": MANIFEST_ACCEPT},
            ok=(200,),
        )
        raw = resp.content
        if len(raw) > MAX_JSON:
            raise RegistryError(f"{self.host}/{repo}:{reference}: manifest too large")
        self.stats.fetched += len(raw)
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise RegistryError(
                f"{self.host}/{repo}@{reference}: the registry sent a manifest whose digest is {digest}"
            )
        media_type = resp.headers.get("content-type", "").split(";")[0].strip()
        try:
            media_type = json.loads(raw).get("mediaType") or media_type
        except (ValueError, AttributeError):
            raise RegistryError(
                f"{self.host}/{repo}:{reference}: the manifest is not a JSON object"
            ) from None
        return raw, media_type, digest

    def blob_to(self, repo: str, desc: dict, path: str) -> int:
        """Fetch the blob of ``desc`` into the file ``path`` (written whole, then renamed) after checking its
        size and sha256; the number of bytes."""
        digest, size = desc["digest"], desc.get("size")
        tmp = f"{path}.{os.getpid()}.part"
        for attempt in range(self.retries + 1):
            h = hashlib.sha256()
            got = 0
            try:
                resp = self.request(
                    "GET", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull", stream=True
                )
                try:
                    with open(tmp, "wb") as f:
                        for block in resp.iter_bytes(1 << 20):
                            got += len(block)
                            if isinstance(size, int) and got > size:
                                break
                            h.update(block)
                            f.write(block)
                finally:
                    resp.close()
            except self._httpx.TransportError as exc:
                # The connection dropped in the middle of the body: start the blob again.
                self.stats.fetched += got
                if attempt < self.retries:
                    self._sleep(attempt)
                    continue
                _unlink(tmp)
                raise RegistryError(f"{self.host}/{repo}@{digest}: {_transport_reason(exc)}") from None
            self.stats.fetched += got
            if "sha256:" + h.hexdigest() == digest and (not isinstance(size, int) or got == size):
                os.replace(tmp, path)
                return got
            if got < (size or 0) and attempt < self.retries:
                self._sleep(attempt)  # a short body: the connection ended early
                continue
            _unlink(tmp)
            raise RegistryError(
                f"{self.host}/{repo}@{digest}: the registry sent {got} bytes that do not match the digest "
                f"(expected {size} bytes); refused"
            )
        raise AssertionError("unreachable")

    def blob_range(self, repo: str, digest: str, offset: int, size: int) -> bytes:
        """Bytes ``[offset, offset + size)`` of the blob ``digest`` by one Range request: retried on 5xx, dropped
        connections and short bodies; a 206 whose Content-Range is not the range asked for is refused, and a 200
        (Range ignored) raises :class:`RangeIgnored` before its body is read."""
        where = f"{self.host}/{repo}@{digest} bytes {offset}-{offset + size - 1}"
        last = "no answer"
        for attempt in range(self.retries + 1):
            try:
                resp = self.request(
                    "GET",
                    f"/v2/{repo}/blobs/{digest}",
                    scope=f"repository:{repo}:pull",
                    headers={"Range": f"bytes={offset}-{offset + size - 1}"},
                    stream=True,
                    ok=(200, 206),
                )
            except RegistryError as exc:
                raise type(exc)(f"{where}: {str(exc).split(': ', 1)[-1]}") from None
            try:
                if resp.status_code == 200:
                    raise RangeIgnored(
                        f"{where}: the registry ignores Range (answered 200 with the whole blob)"
                    )
                got = _content_range(resp.headers.get("content-range", ""))
                if got is not None and got != (offset, offset + size - 1):
                    raise RegistryError(
                        f"{where}: the registry answered with bytes {got[0]}-{got[1]} instead; refused"
                    )
                parts, got = [], 0
                for block in resp.iter_bytes(1 << 20):
                    parts.append(block)
                    got += len(block)
                    if got > size:
                        break  # more than asked for: never held whole
                data = b"".join(parts)
            except self._httpx.TransportError as exc:
                last = _transport_reason(exc).removesuffix(" (after retries)")
                data = None
            finally:
                resp.close()
            if data is not None:
                self.stats.fetched += len(data)
                if len(data) == size:
                    return data
                if len(data) > size:
                    raise RegistryError(f"{where}: the registry sent more than {size} bytes; refused")
                last = f"a short answer ({len(data)} of {size} bytes)"
            if attempt < self.retries:
                self._sleep(attempt)
        raise RegistryError(f"{where}: {last} (after retries)")

    # -------------------------------------------------------------- pushing
    def has_blob(self, repo: str, digest: str) -> bool:
        resp = self.request(
            "HEAD", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull,push", ok=(200, 404)
        )
        return resp.status_code == 200

    def push_blob(self, repo: str, digest: str, path: str, mount_from: str | None = None) -> bool:
        """Make the blob ``digest`` (the file ``path``) present in ``repo``: an existence check, then a
        cross-repository mount from ``mount_from`` if given, then an upload. True if bytes were sent."""
        scope = f"repository:{repo}:pull,push"
        if self.has_blob(repo, digest):
            return False
        query = ""
        if mount_from and mount_from != repo:
            query = "?" + urllib.parse.urlencode({"mount": digest, "from": mount_from})
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/{query}", scope=scope, ok=(201, 202))
        if resp.status_code == 201:
            return False  # mounted
        location = resp.headers.get("location")
        if not location:
            raise RegistryError(f"{self.host}/{repo}: the upload answer has no Location")
        url = urllib.parse.urljoin(self.base + "/", location)
        sep = "&" if "?" in url else "?"
        size = os.path.getsize(path)

        def body():
            # Streamed from the file, so a large blob is never held in memory.
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    yield block

        self.request(
            "PUT",
            f"{url}{sep}digest={urllib.parse.quote(digest)}",
            scope=scope,
            content=body,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            ok=(201,),
        )
        self.stats.pushed += size
        return True

    def put_manifest(self, repo: str, reference: str, raw: bytes, media_type: str) -> None:
        self.request(
            "PUT",
            f"/v2/{repo}/manifests/{reference}",
            scope=f"repository:{repo}:pull,push",
            content=raw,
            headers={"Content-Type": media_type},
            ok=(201,),
        )
        self.stats.pushed += len(raw)


def _replayable(content) -> bool:
    return content is None or isinstance(content, bytes) or callable(content)


def _content_range(value: str) -> tuple[int, int] | None:
    """(first, last) of a ``Content-Range: bytes FIRST-LAST/TOTAL`` header; None when absent or unreadable."""
    m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(?:\d+|\*)\s*", value)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _netloc(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc


def _transport_reason(exc) -> str:
    name = type(exc).__name__
    reason = {
        "ConnectError": "cannot connect",
        "ConnectTimeout": "timed out connecting",
        "ReadTimeout": "timed out waiting for the registry",
        "RemoteProtocolError": "the connection was dropped",
        "ReadError": "the connection was dropped",
    }.get(name, name)
    return f"{reason} (after retries)"


def _error_detail(resp) -> str:
    try:
        errors = json.loads(resp.read()).get("errors") or []
        first = errors[0]
        return f": {first.get('code')} {first.get('message')}"
    except Exception:
        return ""


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
