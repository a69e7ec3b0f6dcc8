"""The bearer token and which endpoints require it.

The token is read from $PROFILES_API_TOKEN, else from `worker.api_token_file` (default
<run_dir>/api-token), which the first worker or CLI to need it creates with a random token,
readable by its owner only.

`worker.auth: writes` (the default): endpoints that change state (job triggers, restarts) and the
cluster relay require it. `worker.auth: all`: every endpoint but /health and /metrics does
(profiles are personal data). Workers send it on every call to each other (`peer_session`)."""
from __future__ import annotations

import hmac
import logging
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from features.config import ProfileConfig

if TYPE_CHECKING:
    import aiohttp
    from aiohttp import web

ENV = "PROFILES_API_TOKEN"
# Open in every mode: probes and Prometheus scrapes carry no token. The dashboard page is a
# constant file with no data (it asks for the token to read /dashboard/data).
OPEN_PATHS = frozenset({"/health", "/metrics", "/dashboard"})
ALWAYS_PROTECTED = ("/cluster/relay",)        # reaches every member: an operator's tool
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HINT = (f"the workers and this command need the same token: ${ENV} or the file of "
        "worker.api_token_file")

log = logging.getLogger(__name__)


def api_token(cfg: ProfileConfig) -> str:
    env = os.environ.get(ENV, "").strip()
    if env:
        return env
    path: Path = cfg.api_token_path
    try:
        token = path.read_text().strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:             # another process made it just now
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def client_token(cfg: ProfileConfig) -> str | None:
    """The token a command sends: $PROFILES_API_TOKEN or the token file when it exists (a
    command never creates one: a token no worker has would be refused anyway)."""
    env = os.environ.get(ENV, "").strip()
    if env:
        return env
    try:
        return cfg.api_token_path.read_text().strip() or None
    except OSError:
        return None


def authorized(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries the token (constant-time compare)."""
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].strip().encode(), token.encode())


def needs_token(mode: str, method: str, path: str) -> bool:
    """Whether a request must carry the token under `worker.auth` = mode."""
    if path.startswith(ALWAYS_PROTECTED):
        return True
    if method.upper() not in SAFE_METHODS:
        return True
    return mode == "all" and path not in OPEN_PATHS


def auth_middleware(cfg: ProfileConfig) -> Callable:
    """aiohttp middleware refusing requests without the token (401) where `needs_token`."""
    from aiohttp import web
    mode = cfg.worker.auth
    token: list[str] = []                   # read on first use: building an app writes nothing
    if mode == "writes" and cfg.worker.web_host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("web_host %s is reachable beyond this machine and worker.auth is 'writes': "
                    "profiles can be read without a token (set worker.auth: all)",
                    cfg.worker.web_host)

    def the_token() -> str:
        if not token:
            token.append(api_token(cfg))
        return token[0]

    @web.middleware
    async def require_token(request: "web.Request", handler) -> "web.StreamResponse":
        if needs_token(mode, request.method, request.path) and \
                not authorized(request.headers.get("Authorization"), the_token()):
            return web.json_response({"error": "a bearer token is required (Authorization: "
                                      f"Bearer <token>); {HINT}"}, status=401)
        return await handler(request)
    return require_token


def peer_headers(cfg: ProfileConfig) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_token(cfg)}"}


def peer_session(cfg: ProfileConfig, timeout: float) -> "aiohttp.ClientSession":
    """An HTTP session for calls from this worker to another member of the group: every
    request carries the token (the members share it)."""
    import aiohttp
    return aiohttp.ClientSession(headers=peer_headers(cfg),
                                 timeout=aiohttp.ClientTimeout(total=timeout))
