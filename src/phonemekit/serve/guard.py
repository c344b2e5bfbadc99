"""The server's front door, checked before any route runs (HTTP and
WebSocket alike): the Host header, the browser's Origin, and the token.

- Host: a server on loopback answers only loopback names (plus the names
  given with `--allowed-host`), so a page whose DNS name rebinds to
  127.0.0.1 is turned away (421) instead of reading the model or saving
  recordings.
- Origin: a browser request (or WebSocket upgrade) from another origin is
  refused (403) unless `--cors` names it. Browsers send Origin on every
  cross-origin fetch, form post and WebSocket, so this closes cross-site
  request forgery and cross-site WebSocket use; clients that are not
  browsers send no Origin and are unaffected.
- Token: with `--token`, every route but `/health` needs it, as
  `Authorization: Bearer T`, or for a WebSocket as the subprotocol
  `bearer.T` (browsers cannot set headers on a WebSocket). The page's
  static shell (HTML, scripts, styles, WASM: the same public files as the
  source tree, no model and no data) loads without it, so that the page can
  ask for the token; everything it then fetches carries the token.

Query strings never reach the access log (`QueryStripper`): the collection
API takes names in the body, and a stray `?speaker=` must not print one.
"""

from __future__ import annotations

import hmac
import json
import logging

from starlette.datastructures import Headers

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
# The page's static shell: public code that the browser fetches before it can send a token.
PUBLIC_SUFFIXES = (".html", ".js", ".mjs", ".css", ".wasm", ".map", ".png", ".svg", ".ico")
SUBPROTOCOL = "phonemekit"
TOKEN_PREFIX = "bearer."


def host_name(host: str) -> str:
    """The name in a Host header, without its port ("[::1]:8000" -> "::1")."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def offered_token(headers: Headers, websocket: bool) -> str | None:
    auth = headers.get("authorization", "")
    if auth.startswith("Bearer "):
        return auth[7:]
    if websocket:
        for proto in headers.get("sec-websocket-protocol", "").split(","):
            proto = proto.strip()
            if proto.startswith(TOKEN_PREFIX):
                return proto[len(TOKEN_PREFIX) :]
    return None


def token_ok(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


class Guard:
    """Pure ASGI middleware: refuses a request before the app sees it."""

    def __init__(self, app, *, token: str | None, allowed_hosts: tuple[str, ...], cors_origins: tuple[str, ...]) -> None:
        self.app, self.token = app, token
        self.any_host = "*" in allowed_hosts
        self.hosts = {host_name(h) for h in allowed_hosts}
        self.origins = set(cors_origins)

    def own_origin(self, scope, host: str) -> str:
        scheme = {"ws": "http", "wss": "https"}.get(scope.get("scheme", "http"), scope.get("scheme", "http"))
        return f"{scheme}://{host}"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        ws = scope["type"] == "websocket"
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if not self.any_host and host_name(host) not in self.hosts:
            return await self.refuse(
                scope,
                send,
                421,
                "unknown_host",
                f"this server does not answer to Host {host[:100]!r}; start it with --allowed-host NAME for a name of your own",
            )
        origin = headers.get("origin")
        if origin is not None and origin != self.own_origin(scope, host) and origin not in self.origins:
            return await self.refuse(scope, send, 403, "origin_refused", f"requests from {origin[:100]!r} are not allowed (see --cors)")
        path = scope.get("path", "")
        public = path == "/health" or (not ws and scope.get("method") in ("GET", "HEAD") and (path == "/" or path.endswith(PUBLIC_SUFFIXES)))
        if self.token is not None and not public and not token_ok(offered_token(headers, ws), self.token):
            return await self.refuse(scope, send, 401, "unauthorised", "a valid bearer token is required", {"www-authenticate": "Bearer"})
        await self.app(scope, receive, send)

    @staticmethod
    async def refuse(scope, send, status: int, error: str, detail: str, headers: dict | None = None) -> None:
        log.info("refused %s %s: %s", scope["type"], scope.get("path", "")[:100], error)
        body = json.dumps({"error": error, "detail": detail}).encode()
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        if scope["type"] == "websocket":
            if "websocket.http.response" not in scope.get("extensions", {}):  # a close before accept: the client sees 403
                await send({"type": "websocket.close", "code": 1008, "reason": error})
                return
            prefix = "websocket.http.response"  # the handshake answered with this status and body (ASGI denial response)
        else:
            prefix = "http.response"
        await send({"type": f"{prefix}.start", "status": status, "headers": raw})
        await send({"type": f"{prefix}.body", "body": body})


class QueryStripper(logging.Filter):
    """Drops the query string from request paths in uvicorn's log lines
    (access lines, and the WebSocket lines of its error logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(a.split("?", 1)[0] if isinstance(a, str) and a.startswith("/") and "?" in a else a for a in record.args)
        return True


def strip_queries_from_logs() -> None:
    """Install `QueryStripper` on uvicorn's loggers, once."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, QueryStripper) for f in logger.filters):
            logger.addFilter(QueryStripper())
