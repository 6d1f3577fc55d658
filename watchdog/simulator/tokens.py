"""JWT tokens for ``auth.login``, built with the standard library (HS256).

The SDK decodes the token WITHOUT verifying it and reads ``exp``, ``api_version``,
``server_version`` and ``feature_set`` (backend_api/session/session.py): api_version >= 2.23
makes it call ``/v2.23/...``; feature_set "basic" keeps it away from enterprise endpoints. The
simulator verifies its own signature and expiry on every call. Caller: server.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

from . import errors
from .clock import SimClock
from .config import SimulatorConfig
from .state import Identity


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenIssuer:
    """Issues and checks bearer tokens; the key lives as long as the simulator (survives a
    listener restart, so clients keep their tokens)."""

    def __init__(self, config: SimulatorConfig, clock: SimClock, key: bytes | None = None) -> None:
        self._config = config
        self._clock = clock
        self._key = key or secrets.token_bytes(32)

    def issue(self, identity: Identity, expiration_s: float | None = None) -> str:
        now = int(self._clock.now())
        ttl = self._config.token_ttl_s
        if expiration_s and expiration_s > 0:
            ttl = min(ttl, expiration_s)
        payload: dict[str, Any] = {
            "identity": identity.to_dict(),
            "iat": now,
            "exp": now + int(ttl),
            "env": "simulator",
            "api_version": self._config.api_version,
            "server_version": self._config.server_version,
            "server_build": "sim",
            "feature_set": self._config.feature_set,
            "auth_type": "Bearer",
            "session_id": secrets.token_hex(16),
        }
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{header}.{body}.{self._sign(f'{header}.{body}')}"

    def verify(self, token: str) -> Identity:
        """The identity inside a valid, unexpired token; InvalidToken (401/30) otherwise."""
        try:
            header, body, signature = token.split(".")
            if not hmac.compare_digest(signature, self._sign(f"{header}.{body}")):
                raise errors.INVALID_TOKEN("invalid jwt token", reason="Signature verification failed")
            payload = json.loads(_unb64(body))
            ident = payload["identity"]
            identity = Identity(
                company=ident["company"],
                company_name=ident.get("company_name", ""),
                user=ident["user"],
                user_name=ident.get("user_name", ""),
                role=ident.get("role", "user"),
            )
            exp = float(payload["exp"])
        except errors.ApiError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise errors.INVALID_TOKEN("invalid jwt token", reason=str(exc)) from exc
        if exp <= self._clock.now():
            raise errors.INVALID_TOKEN("invalid jwt token", reason="Signature has expired")
        return identity

    def _sign(self, signing_input: str) -> str:
        return _b64(hmac.new(self._key, signing_input.encode("ascii"), hashlib.sha256).digest())
