"""The bearer token that endpoints changing state require (job triggers).

Read from $PROFILES_API_TOKEN, else from `worker.api_token_file` (default <run_dir>/api-token),
which the first worker or CLI to need it creates with a random token, readable by its owner
only. Reads never need it."""
from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from features.config import ProfileConfig

ENV = "PROFILES_API_TOKEN"


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


def authorized(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries the token (constant-time compare)."""
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].strip().encode(), token.encode())
