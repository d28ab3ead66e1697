"""Fixtures for the web app: a TestClient over the tiny model, PNG helpers, and a live uvicorn server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="histosynth serve needs fastapi (pip install 'histosynth[serve]')")

from histosynth.serve.service import ServeLimits  # noqa: E402

from serve_helpers import (  # noqa: E402, F401
    LOCAL, SECRET, TILE, decode_data_url, half_mask, png, write_hostile_datasets, write_outside)


@pytest.fixture
def synthetic_root(tmp_path: Path, make_tile_dataset) -> Path:
    """A folder of two synthetic datasets; ``run_a`` has an audit report."""
    root = tmp_path / "synthetic"
    make_tile_dataset(root / "run_a", n=5, size=(TILE, TILE))
    make_tile_dataset(root / "run_b", n=2, size=(TILE, TILE), masks=False)
    (root / "run_a" / "audit").mkdir()
    (root / "run_a" / "audit" / "report.html").write_text("<!doctype html><h1>audit of run_a</h1>")
    (root / "not_a_dataset").mkdir()
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Files outside the browsed folder (see ``serve_helpers.write_outside``)."""
    return write_outside(tmp_path / "outside")


@pytest.fixture
def hostile(synthetic_root: Path, outside: Path) -> Path:
    """``synthetic_root`` plus datasets that point outside or hold broken files (``write_hostile_datasets``)."""
    write_hostile_datasets(synthetic_root, outside)
    return synthetic_root


@pytest.fixture
def expect(tmp_path: Path) -> Callable[..., str]:
    """``expect(response, *statuses)`` -> the error message, checking it is one line naming no server path
    (nor leaking a traceback or the secret file)."""
    leaks = {str(tmp_path), str(tmp_path.resolve()), "pytest-of-", "Traceback", SECRET.decode()}

    def check(response, *statuses: int) -> str:
        assert response.status_code in statuses, (response.status_code, response.text)
        assert not any(leak in response.text for leak in leaks), response.text
        message = response.json()["error"]
        assert list(response.json()) == ["error"] and "\n" not in message and len(message) <= 300
        return message

    return check


@pytest.fixture
def make_client(tiny_model_dir: Path, synthetic_root: Path) -> Iterator[Callable[..., object]]:
    """``make_client(**limits)`` -> a started ``TestClient`` on the tiny model, browsing ``synthetic_root``."""
    from fastapi.testclient import TestClient

    from histosynth.serve.app import create_app

    clients = []

    def make(**limits) -> TestClient:
        client = TestClient(create_app(tiny_model_dir, "cpu", ServeLimits(**limits), synthetic_root), base_url=LOCAL)
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


@pytest.fixture
def live_server(tiny_model_dir: Path, synthetic_root: Path) -> Iterator[Callable[..., tuple[str, object]]]:
    """``live_server(**limits)`` -> (base URL, app) of a uvicorn server (in a thread) on a free loopback port."""
    import uvicorn

    from histosynth.serve.app import create_app

    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**limits) -> tuple[str, object]:
        app = create_app(tiny_model_dir, "cpu", ServeLimits(**limits), synthetic_root)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        servers.append((server, thread))
        port = server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}", app

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)
