"""Schemathesis against the OpenAPI description: no generated request may cause a server error.

The examples per operation are limited so the whole run stays near a minute.
The event stream never ends, so it is left out.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from iotwarden.api.app import create_app  # noqa: E402
from iotwarden.api.tokens import TokenTable  # noqa: E402
from iotwarden.engine import Engine, EngineConfig  # noqa: E402
from iotwarden.pipeline import Replay  # noqa: E402
from iotwarden.simulate import simulate_fleet  # noqa: E402
from iotwarden.store import AlertStore  # noqa: E402


def _build_store() -> tuple[Path, str]:
    folder = Path(tempfile.mkdtemp(prefix="iotwarden-schema-"))
    atexit.register(shutil.rmtree, folder, True)
    path = folder / "fleet.db"
    with AlertStore(path) as store:
        Replay(Engine(EngineConfig()), store=store).run(simulate_fleet(6, 16, seed=2).observations())
        _, secret = TokenTable(store.connection).create("admin", "schemathesis", "test")
    return path, secret


STORE, ADMIN_TOKEN = _build_store()
APP = create_app(STORE)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP).exclude(path="/api/events")


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case) -> None:
    response = case.call(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    case.validate_response(response, checks=[not_a_server_error])
