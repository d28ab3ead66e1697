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


def cached_segmenter(images, masks, config, cache_dir="bench_out/segmenters", on_step=None, device="cpu"):
    """Train the reference U-Net once per (config, data) and reuse it across benchmark scripts.

    The cache key hashes the config and the training tensors, so a different split or recipe retrains.
    """
    import hashlib
    from pathlib import Path

    import torch

    from histosynth.evaluation.segmentation import SegmentationUNet, train_segmenter

    digest = hashlib.sha256(config.model_dump_json().encode())
    digest.update(images.numpy().tobytes())
    digest.update(masks.numpy().tobytes())
    path = Path(cache_dir) / f"segmenter_{digest.hexdigest()[:16]}.pt"
    if path.exists():
        model = SegmentationUNet(config.num_classes, config.base_channels)
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    model = train_segmenter(images, masks, config, on_step, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return model
