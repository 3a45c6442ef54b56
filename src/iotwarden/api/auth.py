"""Bearer-token authentication and role checks for the REST API."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from iotwarden.api.tokens import TokenInfo, role_allows

__all__ = ["require"]

_bearer = HTTPBearer(auto_error=False, description="An API token from `iotwarden token create --role viewer|analyst|admin`.")


def require(role: str) -> Callable[..., TokenInfo]:
    """Return a dependency that authenticates the request's bearer token and checks it has ``role``."""

    def dependency(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> TokenInfo:
        if credentials is None or not credentials.credentials:
            raise HTTPException(401, "missing API token: send 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"})
        backend = request.app.state.backend
        with backend.lock:
            info = backend.tokens.authenticate(credentials.credentials)
            if info is not None:
                backend.tokens.touch(info.id, time.time())
        if info is None:
            raise HTTPException(401, "invalid or revoked API token", headers={"WWW-Authenticate": "Bearer"})
        if not role_allows(info.role, role):
            raise HTTPException(403, f"this needs the {role} role; token {info.id} has role {info.role}")
        request.state.token = info
        return info

    dependency.__name__ = f"require_{role}"
    return dependency
