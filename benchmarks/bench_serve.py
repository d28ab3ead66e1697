"""Web app latency: time from an HTTP generation request to the decoded image, one 224 px tile.

    .venv/bin/python benchmarks/bench_serve.py --steps 20 50 --repeats 3

Starts ``histosynth serve`` in a subprocess on a free loopback port (or measures ``--url`` of a
running server), waits for the model to load, sends one warm-up request, then for each step count
posts the same procedural mask ``--repeats`` times (DDIM, guidance 2, one class) and records the
wall time from sending the request to holding the decoded PNG, plus the server's own generation
time (the rest is HTTP, form parsing and PNG encoding). Writes ``bench_out/serve.json``.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, server: subprocess.Popen | None, timeout: float = 300) -> float:
    import httpx

    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if server is not None and server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode}")
        try:
            if httpx.get(f"{url}/api/info", timeout=2).status_code == 200:
                return time.perf_counter() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"no answer from {url} within {timeout:.0f} s")


def mask_png(url: str, foreground: float, seed: int) -> bytes:
    import httpx
    import numpy as np
    from PIL import Image

    body = httpx.get(f"{url}/api/procedural-mask", params={"foreground": foreground, "seed": seed}).json()
    ids = np.frombuffer(base64.b64decode(body["ids"]), np.uint8).reshape(body["size"], body["size"])
    buffer = io.BytesIO()
    Image.fromarray(ids).save(buffer, format="PNG")
    return buffer.getvalue()


def timed_request(url: str, mask: bytes, steps: int, label: str, seed: int) -> tuple[float, float, tuple]:
    """(wall seconds request -> decoded image, server generation seconds, image shape)."""
    import httpx
    import numpy as np
    from PIL import Image

    data = {"mode": "generate", "mask_encoding": "ids", "label": label, "steps": str(steps), "guidance": "2",
            "sampler": "ddim", "seed": str(seed)}
    start = time.perf_counter()
    response = httpx.post(f"{url}/api/generate", data=data, files={"mask": ("mask.png", mask, "image/png")},
                          timeout=600)
    if response.status_code != 200:
        raise SystemExit(f"HTTP {response.status_code}: {response.text}")
    body = response.json()
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["image"].split(",", 1)[1]))))
    return time.perf_counter() - start, body["seconds"], image.shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="measure a running server instead of starting one")
    parser.add_argument("--model", help="model folder (default: the shipped one)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--label", default="0", help="class name or id")
    parser.add_argument("--out", default="bench_out/serve.json")
    args = parser.parse_args()

    server = None
    url = args.url
    if url is None:
        port = free_port()
        command = [sys.executable, "-m", "histosynth.cli.serve", "--port", str(port), "--device", args.device,
                   "--max-steps", str(max(args.steps))]
        if args.model:
            command += ["--model", args.model]
        server = subprocess.Popen(command, env=os.environ.copy())
        url = f"http://127.0.0.1:{port}"
    try:
        startup = wait_ready(url, server)
        mask = mask_png(url, 0.45, 0)
        warmup = timed_request(url, mask, 1, args.label, 0)
        rows = []
        for steps in args.steps:
            runs = [timed_request(url, mask, steps, args.label, seed) for seed in range(args.repeats)]
            walls, servers = [r[0] for r in runs], [r[1] for r in runs]
            rows.append({"steps": steps, "tile": list(runs[0][2]), "wall_s": walls, "server_s": servers,
                         "median_wall_s": statistics.median(walls), "median_server_s": statistics.median(servers),
                         "median_overhead_s": statistics.median(w - s for w, s in zip(walls, servers, strict=True))})
            print(f"{steps:>3} steps: request -> image median {rows[-1]['median_wall_s']:.2f} s "
                  f"(runs {', '.join(f'{w:.2f}' for w in walls)}); in the model {rows[-1]['median_server_s']:.2f} s; "
                  f"HTTP + PNG overhead {rows[-1]['median_overhead_s'] * 1000:.0f} ms", flush=True)
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)

    from histosynth.io import write_json

    result = {"machine": machine(), "url": url if args.url else "subprocess on 127.0.0.1", "device": args.device,
              "startup_to_ready_s": startup if server is not None else None, "warmup_wall_s": warmup[0],
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "results": rows}
    write_json(args.out, result)
    print(f"server ready after {startup:.1f} s; warm-up (1 step) {warmup[0]:.2f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
