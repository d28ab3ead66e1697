"""Shared helpers for benchmark scripts: machine description and peak memory."""

from __future__ import annotations

import os
import platform
import resource


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {gpu}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cached(kind, config, tensors, make, train, cache_dir):
    """``make()`` loaded from the cache file keyed by (kind, config, training tensors), else ``train()`` saved there."""
    import hashlib
    from pathlib import Path

    import torch

    digest = hashlib.sha256(config.model_dump_json().encode())
    for tensor in tensors:
        digest.update(tensor.numpy().tobytes())
    path = Path(cache_dir) / f"{kind}_{digest.hexdigest()[:16]}.pt"
    if path.exists():
        model = make()
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    model = train()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return model


def cached_segmenter(images, masks, config, cache_dir="bench_out/segmenters", on_step=None, device="cpu"):
    """Train the reference U-Net once per (config, data) and reuse it across benchmark scripts.

    The cache key hashes the config and the training tensors, so a different split or recipe retrains.
    """
    from histosynth.evaluation.segmentation import SegmentationUNet, train_segmenter

    return _cached("segmenter", config, (images, masks), lambda: SegmentationUNet(config.num_classes, config.base_channels),
                   lambda: train_segmenter(images, masks, config, on_step, device), cache_dir)


def cached_classifier(images, labels, num_classes, config, cache_dir="bench_out/classifiers", device="cpu"):
    """Train a reference tile classifier (with augmentation, last weights) once per (config, data), as above."""
    from histosynth.evaluation.classification import TileClassifier, train_classifier

    return _cached(f"classifier{num_classes}", config, (images, labels), lambda: TileClassifier(num_classes, config),
                   lambda: train_classifier(images, labels, num_classes, config, device=device), cache_dir)


def run_main(argv, parse_args, run, script):
    """A benchmark's ``main``: ``(args, result)`` after ``run(args, command)``, or an exit code to return (0 when
    ``args.data`` is absent: skipped with a message; the error's code, with its one line, on bad input).
    ``command`` is the line that reruns it (``script``: the benchmark's ``__file__``)."""
    import shlex
    import sys
    from pathlib import Path

    from histosynth.errors import HistosynthError

    args = parse_args(argv)
    command = shlex.join([sys.executable, *(sys.argv if argv is None else [script, *argv])])
    if not Path(args.data).exists():
        print(f"skipped: no data at {args.data}")
        return 0
    try:
        return args, run(args, command)
    except HistosynthError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
