"""ASGI guards of ``histosynth serve``: a Host/Origin allow-list, a request-body limit, and error redaction.

The Host check defends against DNS rebinding (a web page whose name resolves to 127.0.0.1 would
otherwise talk to the app as if it were the app's own page); the Origin check refuses requests that
other web sites' pages send (cross-site POSTs need no CORS permission to reach the server).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from histosynth.errors import HistosynthError

#: What the app answers to when no allow-list is given: loopback names, any port.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
WILDCARD_BINDS = ("", "0.0.0.0", "::", "[::]")
DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
MAX_MESSAGE = 300

_NAME = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9_.-]*[a-z0-9])?)$")
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])(?:[A-Za-z]:)?[/\\][^\s'\"`,;:()<>]+")


def split_host(value: str) -> tuple[str, int | None] | None:
    """``"Name:port"`` -> ``("name", port)``; ``("name", None)`` without a port; ``None`` when malformed.

    Bare IPv6 addresses (``::1``) are bracketed; names are lower-cased.
    """
    value = value.strip().lower()
    if value.count(":") > 1 and not value.startswith("["):
        value = f"[{value}]"  # a bare IPv6 address, as given on the command line
    name, port = value, None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[:end + 1], value[end + 1:]
        if rest:
            if not rest.startswith(":"):
                return None
            port = rest[1:]
    elif ":" in value:
        name, port = value.split(":", 1)
    if not _NAME.match(name):
        return None
    if port is None:
        return name, None
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        return None
    return name, int(port)


def allowed_hosts(bind_host: str, port: int, extra: Iterable[str] = ()) -> list[str]:
    """The Host headers ``histosynth serve`` answers: the bound host (unless a wildcard) and the loopback names
    on ``port``, then ``extra`` (``NAME`` on any port, ``NAME:PORT`` on that port only)."""
    names = [] if bind_host.strip() in WILDCARD_BINDS else [bind_host]
    out = []
    for name in [*names, *LOOPBACK_HOSTS]:
        parsed = split_host(name)
        if parsed is not None and f"{parsed[0]}:{port}" not in out:
            out.append(f"{parsed[0]}:{port}")
    return out + [entry for entry in extra if entry not in out]


def _error(status: int, message: str) -> tuple[dict, bytes]:
    body = json.dumps({"error": message}).encode()
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
    return start, body


async def _refuse(send, status: int, message: str) -> None:
    start, body = _error(status, message)
    await send(start)
    await send({"type": "http.response.body", "body": body})


class HostGuard:
    """ASGI middleware: answer only requests whose ``Host`` is allowed (else 400, ``invalid host header``) and
    whose ``Origin``, when sent, is an allowed host too (else 403, ``cross-origin request refused``).

    ``allowed`` entries are ``name`` (any port) or ``name:port``; a Host header without a port means the
    scheme's default port.
    """

    def __init__(self, app, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed: set[tuple[str, int | None]] = set()
        for entry in allowed:
            parsed = split_host(entry)
            if parsed is None:
                raise ValueError(f"not a host name: {entry!r}")
            self.allowed.add(parsed)

    def allows(self, value: str, scheme: str) -> bool:
        """Whether a ``Host``-style ``name[:port]`` is on the list."""
        parsed = split_host(value) if value and value == value.strip() else None
        if parsed is None:
            return False
        name, port = parsed
        port = DEFAULT_PORTS.get(scheme, 80) if port is None else port
        return (name, None) in self.allowed or (name, port) in self.allowed

    def origin_allowed(self, origin: str) -> bool:
        """Whether an ``Origin`` header names an allowed host (``null`` and malformed origins do not)."""
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or "@" in parts.netloc:
            return False
        return self.allows(parts.netloc, parts.scheme)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers: dict[bytes, list[bytes]] = {}
        for key, value in scope.get("headers", []):
            headers.setdefault(key.lower(), []).append(value)
        hosts, origins = headers.get(b"host", []), headers.get(b"origin", [])
        status, message = 0, ""
        if len(hosts) != 1 or not self.allows(hosts[0].decode("latin-1"), scope.get("scheme", "http")):
            status, message = 400, "invalid host header"
        elif len(origins) > 1 or (origins and not self.origin_allowed(origins[0].decode("latin-1"))):
            status, message = 403, "cross-origin request refused"
        if not status:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        await _refuse(send, status, message)


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with HTTP 413 (declared or streamed)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = f"upload too large: at most {self.max_bytes / 2**20:g} MiB per request"
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _refuse(send, 413, message)
        received, started = 0, False

        async def limited_receive():
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return event

        async def tracked_send(event):
            nonlocal started
            started = started or event["type"] == "http.response.start"
            await send(event)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except _TooLarge:
            if not started:
                await _refuse(send, 413, message)


def public_message(text: str) -> str:
    """One line, at most :data:`MAX_MESSAGE` characters, with absolute paths replaced by ``<path>``."""
    text = _ABSOLUTE_PATH.sub("<path>", " ".join(str(text).split()))
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 3] + "..."


def public_error(error: HistosynthError) -> str:
    """A package error's message for a client: a form field name stays as its prefix, a file path does not."""
    text = str(error)
    path = error.path
    if path is not None and (path.is_absolute() or len(path.parts) > 1 or path.suffix):
        prefix = f"{path}: "
        text = text[len(prefix):] if text.startswith(prefix) else text
    return public_message(text)

