"""Issue I with leak-free generators: one fine-tuned denoiser per (fraction, seed) subset, then the downstream grid.

    .venv/bin/python scripts/issue_i_leakfree.py --base runs/uncond_base --fractions 0.05,0.1 --seeds 5 \\
        --out bench_out/issue_i/leakfree --threads 2

For each (fraction, seed) cell, in OUT:

1. ``subsets/f<F>_s<S>/``: ``histosynth data subset --fraction F --seed S --unlabel-rest`` (the subset's tiles
   keep label and mask, every other train tile keeps only its image), checked against the draw
   ``benchmarks/bench_downstream.py`` makes for the same cell (``draw_subset``, same manifest, same seed);
2. ``train/f<F>_s<S>/``: ``histosynth train denoiser --init BASE`` with ``--finetune-config`` on that folder
   (a rerun resumes from its checkpoints; the base's latent cache, else one an earlier cell under ``--out`` left,
   of any fraction, is linked in first, so the tiles are not encoded again: every cell holds the train split's
   tiles in the same order);
3. ``models/f<F>_s<S>/``: once training has finished, a complete model folder (the new denoiser and classes,
   the autoencoder and mask model of the base or of ``--parts``), written atomically, with what made it in
   ``denoiser/histosynth.json`` (``leak_free``: the subset and the base; ``continued_from``: the base weights).

A cell whose model folder exists is skipped, so a killed run, started again with the same command, redoes
nothing that finished and resumes the fine-tune it was in. Then (unless ``--train-only``) the downstream
grid runs once for all cells: ``bench_downstream.py --model OUT/models/f{fraction}_s{seed}`` (each subset's
synthetic tiles from its own generator) with the arms of issue I, into ``OUT/bench`` (it resumes too).

BASE must not have seen a label: a ``train denoiser`` folder (or complete model folder) whose run recorded
``condition_dropout: 1.0`` (configs/ebhi_denoiser_uncond_base_*.yaml) and that continued no other denoiser;
anything else is refused unless ``--allow-leaky-base`` (its grid is then a leaky bound, not the result).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "ebhi-seg" / "manifest.csv"
DEFAULT_PARTS = REPO / "src" / "histosynth" / "weights" / "default"
DEFAULT_FINETUNE = REPO / "configs" / "ebhi_denoiser_subset_finetune.yaml"
BENCH = REPO / "benchmarks" / "bench_downstream.py"
#: The cell folder name; bench_downstream formats ``--model`` with the same float and int, so the names agree.
CELL_TEMPLATE = "f{fraction}_s{seed}"
#: The task the subsets are drawn for unless --task says otherwise.
DEFAULT_TASK = "classification"
ARMS = "real,real-noaug,synthetic,extra-real"
RECORD_KEY = "leak_free"

#: Runs one command (argv) with its output appended to a log file (None: to this process's output); returns
#: its exit status.
Runner = Callable[[Sequence[str], Path | None], int]


# --------------------------------------------------------------------------------------------- commands
def histosynth_command(*args: str) -> list[str]:
    """The project's CLI in this interpreter (the device puts the repo's src/ on PYTHONPATH)."""
    return [sys.executable, "-m", "histosynth.cli.app", *args]


_CHILDREN: set[subprocess.Popen[bytes]] = set()
_CHILDREN_LOCK = threading.Lock()


def run_logged(argv: Sequence[str], log: Path | None) -> int:
    """Run ``argv`` with stdout and stderr appended to ``log`` (or shown, when None); stopped with the
    driver (SIGTERM/SIGINT)."""
    with contextlib.ExitStack() as stack:
        handle = None
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            handle = stack.enter_context(open(log, "ab"))
            handle.write(f"\n$ {' '.join(argv)}\n".encode())
            handle.flush()
        process = subprocess.Popen(list(argv), stdout=handle, stderr=subprocess.STDOUT if handle else None)
        with _CHILDREN_LOCK:
            _CHILDREN.add(process)
        try:
            return process.wait()
        finally:
            with _CHILDREN_LOCK:
                _CHILDREN.discard(process)


def _stop_children(signum: int, _frame: object) -> None:
    """A driver stopped by ``kill`` (not only Ctrl-C or ``timeout``, which reach the whole group) stops its
    fine-tunes too, so a rerun never trains beside an orphan in the same folder."""
    for process in list(_CHILDREN):  # no lock: the handler may interrupt the thread that holds it
        if process.poll() is None:
            process.terminate()
    print(f"stopped by signal {signum}; rerun the same command to resume", flush=True)
    os._exit(128 + signum)


@contextlib.contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """One driver per OUT at a time (a second would train the same cells twice)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".driver.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"{out}: another issue_i_leakfree.py is running on this folder") from None
        yield


# ------------------------------------------------------------------------------------------------ base
@dataclass(frozen=True)
class Base:
    """The unconditional base: its denoiser folder, where the autoencoder and mask model come from."""

    folder: Path  # what --init gets: a run folder or a model folder (denoiser/ inside)
    autoencoder: Path
    parts: Path  # model folder completing each cell's folder (mask_model/) via copy_missing_parts
    digests: frozenset[str]  # its denoiser weights' sha256 (and the float32 one a float16 copy was made from)
    facts: dict[str, Any]  # what the cells record about it

    @property
    def latent_cache(self) -> Path:
        from histosynth.training.recipes import LATENT_CACHE, RUNS_DIR

        return self.folder / RUNS_DIR / "denoiser" / LATENT_CACHE


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def resolve_base(base: Path, parts: Path, allow_leaky: bool) -> Base:
    """Check that ``base`` is a denoiser that never saw a label, and find the parts that complete it."""
    from histosynth.io import file_digest
    from histosynth.models.autoencoder import AutoencoderConfig
    from histosynth.models.denoiser import WEIGHTS_NAME
    from histosynth.models.folder import read_folder_config

    denoiser = base / "denoiser"
    if not (denoiser / "histosynth.json").is_file():
        raise SystemExit(f"{base}: no denoiser/ (train one with configs/ebhi_denoiser_uncond_base_cpu.yaml)")
    facts = _read_json(denoiser / "histosynth.json")
    run = base / "runs" / "denoiser" / "run.json"
    settings = _read_json(run) if run.is_file() else None
    dropout = (settings or {}).get("objective", {}).get("condition_dropout")
    problems = []
    if dropout != 1.0:
        problems.append("its run recorded no condition_dropout 1.0" if settings is None or dropout is None
                        else f"it was trained with condition_dropout {dropout}")
    if "continued_from" in facts:
        problems.append(f"it continued {facts['continued_from'].get('folder')}")
    if problems and not allow_leaky:
        raise SystemExit(f"{base}: not known to be leak-free ({'; '.join(problems)}); a base must never see a "
                         "label or mask. Pass --allow-leaky-base to fine-tune it anyway (a leaky bound).")
    autoencoder = base / "autoencoder" if (base / "autoencoder").is_dir() else parts / "autoencoder"
    if settings is not None:  # the fine-tunes encode with this autoencoder: it must be the base's
        trained_with = settings.get("data", {}).get("autoencoder")
        config = read_folder_config(autoencoder, "autoencoder", AutoencoderConfig).model_dump(mode="json")
        if trained_with is not None and trained_with != config:
            raise SystemExit(f"{base} was trained with another autoencoder than {autoencoder}")
    digests = {file_digest(denoiser / WEIGHTS_NAME)}
    if isinstance(facts.get("float16_of"), dict):
        digests.add(facts["float16_of"]["weights_sha256"])
    record = {"folder": str(base), "weights_sha256": file_digest(denoiser / WEIGHTS_NAME), "leak_free": not problems,
              "objective": (settings or {}).get("objective"),
              **{key: facts[key] for key in ("trained_on", "training", "stopped_early", "float16_of") if key in facts}}
    parts_for_folder = base if (base / "mask_model").is_dir() and (base / "autoencoder").is_dir() else parts
    return Base(base, autoencoder, parts_for_folder, frozenset(digests), record)


# ----------------------------------------------------------------------------------------------- cells
@dataclass(frozen=True)
class Cell:
    fraction: float
    seed: int
    out: Path

    @property
    def name(self) -> str:
        return CELL_TEMPLATE.format(fraction=self.fraction, seed=self.seed)

    @property
    def subset(self) -> Path:
        return self.out / "subsets" / self.name

    @property
    def train(self) -> Path:
        return self.out / "train" / self.name

    @property
    def model(self) -> Path:
        return self.out / "models" / self.name

    @property
    def log(self) -> Path:
        return self.out / "logs" / f"{self.name}.log"


def grid(fractions: Sequence[float], seeds: int, out: Path) -> list[Cell]:
    """The cells in bench_downstream's order: fractions, then seeds 0..seeds-1."""
    return [Cell(f, s, out) for f in fractions for s in range(seeds)]


def downstream_draw(data: Path, fraction: float, seed: int, task: str = DEFAULT_TASK) -> list[str]:
    """The ids of the subset bench_downstream.py draws for this cell and task (its own call, on its own manifest)."""
    from histosynth.data.manifest import load_manifest
    from histosynth.data.splits import draw_subset

    train = load_manifest(data).select_split("train").records
    return [r.id for r in draw_subset(train, fraction, seed, task)]


def ids_digest(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def check_subset(cell: Cell, data: Path, task: str = DEFAULT_TASK) -> dict[str, Any]:
    """``subset.json`` of the cell, after checking it is bench_downstream's draw for (fraction, seed, task).

    A subset written for the other task passes when it holds the same tiles: the generator depends on the tiles
    only, so on data where every train tile has a label and a mask (EBHI-Seg) one generator per cell serves the
    classification and the segmentation grid."""
    summary = _read_json(cell.subset / "subset.json")
    expected = downstream_draw(data, cell.fraction, cell.seed, task)
    if (summary.get("fraction"), summary.get("seed"), summary.get("unlabel_rest")) != (
            cell.fraction, cell.seed, True) or sorted(summary["ids"]) != sorted(expected):
        held = len(summary.get("ids", []))
        raise SystemExit(f"{cell.subset}: not the subset bench_downstream draws for {task} at fraction "
                         f"{cell.fraction:g}, seed {cell.seed} ({held} ids vs {len(expected)}); remove the "
                         "folder (and its train/ and models/ folders) or choose another --out")
    return summary


def last_checkpoint(cell: Cell) -> int:
    """The step of the cell's last fine-tune checkpoint (0: none)."""
    root = cell.train / "runs" / "denoiser" / "checkpoints"
    steps = [int(p.name[len("step_"):]) for p in root.glob("step_*") if (p / "state.json").is_file()] \
        if root.is_dir() else []
    return max(steps, default=0)


def seed_latents(cell: Cell, sources: Sequence[Path]) -> Path | None:
    """Link (or copy) the first existing latent cache of ``sources`` into the cell's run folder when it has
    none. The recipe checks the cache's key (autoencoder weights + tile pixels) and encodes afresh when it
    does not match, so a wrong guess costs only the encoding it would have done anyway."""
    from histosynth.training.recipes import LATENT_CACHE

    target = cell.train / "runs" / "denoiser" / LATENT_CACHE
    if target.exists():
        return None
    for source in sources:
        if source.is_file() and source.resolve() != target.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.link")
            tmp.unlink(missing_ok=True)
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copy2(source, tmp)
            os.replace(tmp, target)
            return source
    return None


def model_record(cell: Cell, base: Base, summary: dict[str, Any], config: Path) -> dict[str, Any]:
    """What ``models/<cell>/denoiser/histosynth.json`` records under ``leak_free``."""
    from histosynth.io import file_digest

    return {
        "subset": {"fraction": cell.fraction, "seed": cell.seed, "task": summary["task"],
                   "labelled": summary["labelled"], "unlabelled": summary["unlabelled"], "labels": summary["labels"],
                   "masks": summary["masks"], "ids_sha256": ids_digest(summary["ids"]), "source": summary["source"],
                   "folder": str(cell.subset)},
        "base": base.facts,
        "finetune": {"config": str(config), "config_sha256": file_digest(config) if config.is_file() else None,
                     "run": str(cell.train)},
        "parts": {"autoencoder": str(base.autoencoder), "mask_model": str(base.parts / "mask_model"),
                  "note": "autoencoder: trained without labels; mask_model: not used by the downstream grid"},
        "made_by": "scripts/issue_i_leakfree.py",
    }


def assemble(cell: Cell, base: Base, summary: dict[str, Any], config: Path) -> Path:
    """Write ``models/<cell>`` atomically from the finished fine-tune: its denoiser and classes, the base's
    autoencoder, and (``copy_missing_parts``) the mask model; with the ``leak_free`` record."""
    from histosynth.io import atomic_dir, write_json
    from histosynth.training.recipes import copy_missing_parts

    facts_path = cell.train / "denoiser" / "histosynth.json"
    facts = _read_json(facts_path)
    continued = (facts.get("continued_from") or {}).get("weights_sha256")
    if continued not in base.digests:
        raise SystemExit(f"{cell.train}: fine-tuned from weights {str(continued)[:12]}, not from the base "
                         f"{base.folder}; remove the folder or choose another --out")
    with atomic_dir(cell.model) as tmp:
        shutil.copytree(cell.train / "denoiser", tmp / "denoiser")
        shutil.copy2(cell.train / "classes.json", tmp / "classes.json")
        shutil.copytree(base.autoencoder, tmp / "autoencoder")
        copy_missing_parts(base.parts, tmp)
        facts[RECORD_KEY] = model_record(cell, base, summary, config)
        write_json(tmp / "denoiser" / "histosynth.json", facts)
    return cell.model


def model_done(cell: Cell, base: Base) -> bool:
    """Whether the cell's model folder exists (written atomically: it exists whole or not at all); one that
    another base made is refused rather than skipped."""
    facts_path = cell.model / "denoiser" / "histosynth.json"
    if not cell.model.exists():
        return False
    if not facts_path.is_file():
        raise SystemExit(f"{cell.model}: not a model folder this driver wrote; remove it")
    continued = (_read_json(facts_path).get("continued_from") or {}).get("weights_sha256")
    if continued not in base.digests:
        raise SystemExit(f"{cell.model}: made from another base (weights {str(continued)[:12]}) than {base.folder}; "
                         "choose another --out")
    return True


@dataclass
class Settings:
    data: Path
    classes: str
    config: Path
    threads: int | None
    runner: Runner
    task: str = DEFAULT_TASK


def run_cell(cell: Cell, base: Base, settings: Settings, latent_sources: Sequence[Path],
             say: Callable[[str], None]) -> str:
    """Subset, fine-tune and assemble one cell (each step skipped when its output is there); returns the
    progress line's end."""
    if model_done(cell, base):
        check_subset(cell, settings.data, settings.task)  # a finished generator serves only the draw it was made for
        stopped = _read_json(cell.model / "denoiser" / "histosynth.json").get("stopped_early")
        note = f", STOPPED EARLY at {stopped.get('checkpoint')} of {stopped.get('planned_steps')} steps" \
            if stopped else ""
        return f"done already ({cell.model}{note}): skipped"
    start = time.perf_counter()
    if not (cell.subset / "subset.json").is_file():
        code = settings.runner(histosynth_command(
            "data", "subset", str(settings.data), "--fraction", repr(cell.fraction), "--seed", str(cell.seed),
            "--task", settings.task, "--unlabel-rest", "--classes", settings.classes, "--out", str(cell.subset)),
            cell.log)
        if code != 0:
            raise RuntimeError(f"{cell.name}: data subset failed (exit {code}); see {cell.log}")
    summary = check_subset(cell, settings.data, settings.task)
    counts = f"{summary['labelled']} labelled + {summary['unlabelled']} unlabelled tiles"
    finished = cell.train / "denoiser" / "histosynth.json"
    if finished.is_file() and not (_read_json(finished).get("stopped_early") and last_checkpoint(cell)):
        what = "fine-tune finished earlier"
    else:  # new, interrupted, or stopped by a time budget and finalised (scripts/gpu): trained to its end now
        resumed = last_checkpoint(cell)
        seeded = seed_latents(cell, latent_sources)
        say(f"{cell.name}: {counts}; " + (f"resuming the fine-tune from step {resumed}" if resumed else
                                          "fine-tuning") + (f" (latents linked from {seeded})" if seeded else ""))
        argv = ["train", "denoiser", "--data", str(cell.subset), "--classes", settings.classes,
                "--out", str(cell.train), "--autoencoder", str(base.autoencoder), "--init", str(base.folder),
                "--config", str(settings.config)]
        if settings.threads:
            argv += ["--threads", str(settings.threads)]
        code = settings.runner(histosynth_command(*argv), cell.log)
        if code != 0 or not (cell.train / "denoiser" / "histosynth.json").is_file():
            raise RuntimeError(f"{cell.name}: train denoiser failed (exit {code}); see {cell.log}. "
                               "Rerun to resume from its last checkpoint")
        what = f"fine-tuned in {time.perf_counter() - start:.0f} s" + (f" (from step {resumed})" if resumed else "")
    facts = _read_json(cell.train / "denoiser" / "histosynth.json")
    steps = facts.get("training", {}).get("steps")
    stopped = facts.get("stopped_early")
    if stopped:
        what += f", STOPPED EARLY at step {steps} of {stopped.get('planned_steps')}"
    assemble(cell, base, summary, settings.config)
    return f"{counts}; {what} ({steps} steps) -> {cell.model}"


def train_cells(cells: Sequence[Cell], base: Base, settings: Settings, jobs: int,
                latents: Path | None) -> list[str]:
    """Run every cell (``jobs`` at once); returns the names of the cells that failed."""
    lock = threading.Lock()
    done = [0]

    def say(line: str) -> None:
        with lock:
            print(line, flush=True)

    def sources() -> list[Path]:  # the base's cache first, then any a cell of this grid or of an earlier one left
        found = [latents] if latents else []
        found.append(base.latent_cache)
        found += sorted((c.train / "runs" / "denoiser" / "latents.safetensors") for c in cells)
        if cells:
            found += sorted(cells[0].train.parent.glob("*/runs/denoiser/latents.safetensors"))
        return found

    def one(cell: Cell) -> str | None:
        try:
            line = run_cell(cell, base, settings, sources(), say)
            failed = None
        except (RuntimeError, OSError) as error:
            line, failed = f"FAILED: {error}", cell.name
        with lock:
            done[0] += 1
            print(f"[{done[0]}/{len(cells)}] {cell.name}: {line}", flush=True)
        return failed

    if jobs <= 1:
        results = [one(cell) for cell in cells]
    else:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(one, cells))
    return [name for name in results if name]


# ---------------------------------------------------------------------------------------------- bench
def bench_command(args: argparse.Namespace, out: Path) -> list[str]:
    """bench_downstream.py over the grid, each subset's synthetic tiles from its own model folder."""
    command = [sys.executable, str(BENCH), "--model", str(out / "models" / CELL_TEMPLATE), "--data", str(args.data),
               "--task", args.task, "--fractions", ",".join(repr(f) for f in args.fractions),
               "--seeds", str(args.seeds),
               "--rounds", args.rounds, "--modes", args.modes, "--arms", args.arms,
               "--train-steps", str(args.train_steps), "--size", str(args.size), "--checkpoint", args.checkpoint,
               "--filter-pool", str(args.filter_pool), "--out", str(out / "bench")]
    if args.device:
        command += ["--device", args.device]
    return command


# ----------------------------------------------------------------------------------------------- main
def parse_fractions(text: str) -> tuple[float, ...]:
    """As bench_downstream parses --fractions (so cell names and draws agree)."""
    values = tuple(float(v) for v in text.split(","))
    if not values or any(not 0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError("fractions must be in (0, 1): a subset of 1 leaves nothing unlabelled")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--base", type=Path, required=True,
                        help="the unconditional base: a `train denoiser` run folder or a complete model folder")
    parser.add_argument("--parts", type=Path, default=DEFAULT_PARTS,
                        help="model folder whose autoencoder and mask model complete the cells' folders when "
                             "--base lacks them (default: the shipped model)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="manifest with train, val and test splits")
    parser.add_argument("--classes", default=None, help="class list (default: the base's classes.json)")
    parser.add_argument("--task", choices=["classification", "segmentation"], default=DEFAULT_TASK,
                        help="the grid's task, and the draw of each cell's subset; a cell made for the other task "
                             "is reused when its subset holds the same tiles (EBHI-Seg: every tile has both)")
    parser.add_argument("--fractions", type=parse_fractions, default=(0.05, 0.1))
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1, as bench_downstream's --seeds")
    parser.add_argument("--out", type=Path, default=Path("bench_out/issue_i/leakfree"))
    parser.add_argument("--finetune-config", type=Path, default=DEFAULT_FINETUNE)
    parser.add_argument("--threads", type=int, default=None, help="torch threads of each fine-tune")
    parser.add_argument("--jobs", type=int, default=1, help="cells fine-tuned at once (a GPU: several)")
    parser.add_argument("--latents", type=Path, default=None,
                        help="a latent cache of the train split to link into each cell (default: the base's)")
    parser.add_argument("--allow-leaky-base", action="store_true")
    parser.add_argument("--train-only", action="store_true", help="make the model folders, skip the grid")
    bench = parser.add_argument_group("downstream grid (benchmarks/bench_downstream.py)")
    bench.add_argument("--arms", default=ARMS)
    bench.add_argument("--modes", default="balanced")
    bench.add_argument("--rounds", default="0,1")
    bench.add_argument("--filter-pool", type=int, default=2, help="filtered mode: tiles made per tile kept")
    bench.add_argument("--train-steps", type=int, default=1500)
    bench.add_argument("--size", type=int, default=112)
    bench.add_argument("--checkpoint", choices=["last", "val"], default="last")
    bench.add_argument("--device", default=None)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, runner: Runner = run_logged) -> int:
    args = parse_args(argv)
    if args.seeds < 1 or args.jobs < 1:
        raise SystemExit("--seeds and --jobs must be at least 1")
    if runner is run_logged:  # the subprocesses are this driver's own
        signal.signal(signal.SIGTERM, _stop_children)
    out = args.out
    base = resolve_base(args.base, args.parts, args.allow_leaky_base)
    classes = args.classes or str(args.base / "classes.json")
    cells = grid(args.fractions, args.seeds, out)
    print(f"issue I leak-free: {len(cells)} cells ({','.join(f'{f:g}' for f in args.fractions)} x seeds "
          f"0-{args.seeds - 1}), base {base.folder} (leak-free: {base.facts['leak_free']}), fine-tune "
          f"{args.finetune_config}, out {out}", flush=True)
    settings = Settings(args.data, classes, args.finetune_config, args.threads, runner, args.task)
    with exclusive(out):
        failed = train_cells(cells, base, settings, args.jobs, args.latents)
        if failed:
            print(f"{len(failed)} cell(s) failed: {', '.join(failed)}; rerun to resume", flush=True)
            return 1
        if args.train_only:
            return 0
        command = bench_command(args, out)
        print("downstream grid: " + " ".join(command), flush=True)
        code = runner(command, None)
        print(f"downstream grid: exit {code}; results in {out / 'bench'}", flush=True)
        return code


if __name__ == "__main__":
    sys.exit(main())
