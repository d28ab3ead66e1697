"""K probe: the shipped denoiser's guided forward in eager PyTorch vs ONNX Runtime and OpenVINO on this CPU.

    pip install onnx onnxruntime openvino   # not project dependencies; the probe skips what is missing
    .venv/bin/python benchmarks/bench_runtimes.py --threads 2 --batch 32
    .venv/bin/python benchmarks/bench_runtimes.py --threads 2 --batch 32 --compile   # + torch.compile (minutes)

Exports the denoiser (float32) to ONNX once, then times one forward of ``--batch`` latents (a guided step of
``batch / 2`` tiles) in each runtime, the runtimes taking turns, best of ``--repeats``, and reports the largest
difference from eager PyTorch's float32 output: a float32 runtime counts only if it is faster *and* matches up
to noise; bfloat16 rows change the arithmetic (they count only at measured equal FID).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402


def interleaved_best(runs: dict[str, Callable[[], np.ndarray]], repeats: int) -> dict[str, tuple[float, np.ndarray]]:
    """Best wall time of each runner, the runners taking turns (so a change of machine load hits all alike)."""
    outputs = {name: np.asarray(run()) for name, run in runs.items()}  # warm-up (compilation, allocations)
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: (best[name], outputs[name]) for name in runs}


def add_runtimes(folder: str, inputs: dict[str, torch.Tensor], feed: dict[str, np.ndarray],
             denoiser: torch.nn.Module, threads: int, runs: dict[str, Callable[[], np.ndarray]]) -> None:
    """Add ONNX Runtime and OpenVINO runners of the denoiser, exported to ONNX in ``folder``."""
    onnx_path = str(Path(folder) / "denoiser.onnx")
    torch.onnx.export(denoiser, tuple(inputs.values()), onnx_path, opset_version=17, dynamo=False,
                      input_names=list(inputs), output_names=["output"])
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        runs["onnxruntime float32"] = lambda: session.run(None, feed)[0]
    except ImportError:
        print("onnxruntime not installed: skipped", file=sys.stderr)
    try:
        import openvino as ov

        core = ov.Core()
        network = core.read_model(onnx_path)
        for hint in ("f32", "bf16"):
            compiled = core.compile_model(network, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                           "INFERENCE_NUM_THREADS": threads,
                                                           "PERFORMANCE_HINT": "LATENCY"})
            request, output = compiled.create_infer_request(), compiled.outputs[0]
            runs[f"openvino {hint}"] = lambda request=request, output=output: request.infer(feed)[output]
    except ImportError:
        print("openvino not installed: skipped", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="src/histosynth/weights/default")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true",
                        help="add torch.compile (inductor, weights frozen: the CPU's prepacked convolutions)")
    parser.add_argument("--skip-runtimes", action="store_true", help="time only torch (no ONNX export)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from histosynth.models.pipeline import LatentDiffusionModel

    denoiser = LatentDiffusionModel.load(args.model).denoiser.eval()
    config = denoiser.config
    generator = torch.Generator().manual_seed(0)
    size, batch = config.latent_size, args.batch
    inputs = {"latent": torch.randn(batch, config.latent_channels, size, size, generator=generator),
              "timestep": torch.full((batch,), 500, dtype=torch.long),
              "labels": torch.randint(0, config.num_labels + 1, (batch,), generator=generator),
              "fractions": torch.rand(batch, config.num_mask_classes, size, size, generator=generator)}
    feed = {name: value.numpy() for name, value in inputs.items()}

    def eager(precision: torch.dtype) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision != torch.float32):
                return denoiser(*inputs.values()).float().numpy()
        return run

    runs = {"torch eager float32": eager(torch.float32), "torch autocast bfloat16": eager(torch.bfloat16)}
    if args.compile:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # constant-folds the weights and prepacks them for oneDNN convolutions
        compiled_denoiser = torch.compile(denoiser)

        def compiled() -> np.ndarray:
            with torch.no_grad():
                return compiled_denoiser(*inputs.values()).float().numpy()

        started = time.perf_counter()
        compiled()
        print(f"torch.compile (freezing): first call {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        runs["torch.compile inductor float32 (frozen)"] = compiled
    with tempfile.TemporaryDirectory() as folder:
        if not args.skip_runtimes:
            add_runtimes(folder, inputs, feed, denoiser, args.threads, runs)
        timed = interleaved_best(runs, args.repeats)
    eager_s, reference = timed["torch eager float32"]
    rows = [{"runtime": name, "ms": round(seconds * 1e3, 1), "speed_up": round(eager_s / seconds, 2),
             "max_abs_diff": float(np.abs(output - reference).max())} for name, (seconds, output) in timed.items()]
    for row in rows:
        print(json.dumps(row), flush=True)
    print(json.dumps({"command": " ".join(sys.argv), "machine": machine(), "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
