"""Dataset browsing, one-at-a-time generation over real HTTP, and the ``serve`` command's errors."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from serve_helpers import LOCAL, TILE, half_mask, png

from histosynth.serve.service import GeneratedTile


def test_datasets_are_listed_paged_and_served_by_index(client) -> None:
    listing = client.get("/api/datasets").json()
    assert listing == [{"name": "run_a", "tiles": 5, "has_report": True},
                       {"name": "run_b", "tiles": 2, "has_report": False}]
    page = client.get("/api/datasets/run_a", params={"offset": 3, "limit": 10}).json()
    assert page["total"] == 5 and [t["index"] for t in page["tiles"]] == [3, 4]
    assert page["tiles"][0]["id"] == "tile_3" and page["tiles"][0]["label"] == "Polyp"
    image = client.get("/api/datasets/run_a/tiles/3/image.png")
    assert image.headers["content-type"] == "image/png" and image.content.startswith(b"\x89PNG")
    assert client.get("/api/datasets/run_a/tiles/0/mask.png").status_code == 200
    report = client.get("/api/datasets/run_a/report")
    assert "audit of run_a" in report.text and "default-src 'none'" in report.headers["content-security-policy"]


@pytest.mark.parametrize("url", [
    "/api/datasets/nope", "/api/datasets/not_a_dataset", "/api/datasets/run_a/tiles/5/image.png",
    "/api/datasets/run_b/tiles/0/mask.png", "/api/datasets/run_a/tiles/0/manifest.png", "/api/datasets/run_b/report",
    "/api/datasets/..%2F..%2Fetc/tiles/0/image.png", "/api/datasets/%2E%2E/report",
])
def test_unknown_datasets_tiles_and_paths_are_404(client, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 404 and list(response.json()) == ["error"]


def test_a_single_dataset_folder_is_browsable_and_new_tiles_appear(tmp_path, tiny_model_dir, make_tile_dataset) -> None:
    from fastapi.testclient import TestClient

    from histosynth.serve.app import create_app

    make_tile_dataset(tmp_path / "single", n=2, size=(TILE, TILE))
    with TestClient(create_app(tiny_model_dir, datasets=tmp_path / "single"), base_url=LOCAL) as client:
        assert client.get("/api/datasets").json()[0]["tiles"] == 2
        time.sleep(0.01)
        make_tile_dataset(tmp_path / "single", n=3, size=(TILE, TILE))  # rewrites manifest.csv
        assert client.get("/api/datasets/single").json()["total"] == 3


def _free_port() -> str:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def _post(url: str) -> int:
    import httpx

    files = {"mask": ("m.png", png(half_mask()), "image/png")}
    return httpx.post(f"{url}/api/generate", data={"mask_encoding": "ids", "steps": "2"}, files=files,
                      timeout=60).status_code


def test_generation_runs_one_at_a_time_off_the_event_loop(live_server) -> None:
    import httpx

    url, app = live_server(max_waiting=8)
    service, active, overlaps, lock = app.state.service, [0], [], threading.Lock()

    def slow_run(request):
        with lock:
            active[0] += 1
            overlaps.append(active[0])
        time.sleep(1.0)
        with lock:
            active[0] -= 1
        return GeneratedTile(np.zeros((TILE, TILE, 3), np.uint8), 1.0)

    service.run = slow_run
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(_post, url) for _ in range(3)]
        time.sleep(0.3)
        started = time.perf_counter()
        assert httpx.get(f"{url}/api/info", timeout=5).status_code == 200  # the loop is not blocked
        assert time.perf_counter() - started < 0.6
        assert [f.result() for f in futures] == [200, 200, 200]
    assert overlaps == [1, 1, 1]


def test_a_full_queue_answers_429(live_server) -> None:
    url, app = live_server(max_waiting=1)

    def slow_run(request):
        time.sleep(0.5)
        return GeneratedTile(np.zeros((TILE, TILE, 3), np.uint8), 0.5)

    app.state.service.run = slow_run
    with ThreadPoolExecutor(4) as pool:
        codes = sorted(pool.map(lambda _: _post(url), range(4)))
    assert codes[:2] == [200, 200] and 429 in codes


def test_real_generation_over_http(live_server) -> None:
    url, _ = live_server()
    assert _post(url) == 200


def test_serve_command_refuses_a_busy_port_in_one_line(tiny_model_dir, capsys) -> None:
    import socket

    from histosynth.cli.serve import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SystemExit) as exit_info:
            main(["--model", str(tiny_model_dir), "--port", str(port)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err == [f"error: cannot listen on 127.0.0.1:{port} (Address already in use)"]


def test_serve_command_fails_in_one_line_on_a_bad_model_or_folder(tmp_path, tiny_model_dir, capsys) -> None:
    from histosynth.cli.serve import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(tmp_path / "missing"), "--port", _free_port()])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err[-1] == f"error: {tmp_path / 'missing'}: model folder not found"
    with pytest.raises(SystemExit) as exit_info:
        main(["--datasets", str(tmp_path / "none"), "--model", str(tiny_model_dir), "--port", _free_port()])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err[-1] == f"error: {tmp_path / 'none'}: dataset folder not found"
