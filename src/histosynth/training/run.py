"""Run folders: the settings a run started with, so a resume with other settings is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from histosynth.errors import InputError
from histosynth.io import write_json

SETTINGS_FILE = "run.json"
#: Settings that may change between a run and its resume without changing the result.
RESUMABLE_KEYS = {"checkpoint_every", "log_every", "keep_checkpoints"}


def _comparable(settings: dict[str, Any]) -> dict[str, Any]:
    out = dict(settings)
    out["train"] = {k: v for k, v in settings.get("train", {}).items() if k not in RESUMABLE_KEYS}
    return out


def start_or_resume(run_dir: Path, settings: dict[str, Any]) -> bool:
    """Record ``settings`` for a new run, or check them against a run being resumed.

    Returns True when resuming. Only logging and checkpoint cadence may differ on resume: any
    other change (steps included, since the learning-rate schedule depends on it) would make the
    resumed run differ from an uninterrupted one.
    """
    path = run_dir / SETTINGS_FILE
    if path.exists():
        previous = json.loads(path.read_text())
        if _comparable(previous) != _comparable(settings):
            changed = sorted(
                f"{section}.{key}"
                for section in set(previous) | set(settings)
                for key in set(previous.get(section, {}) or {}) | set(settings.get(section, {}) or {})
                if isinstance(previous.get(section), dict)
                and (previous.get(section, {}) or {}).get(key) != (settings.get(section, {}) or {}).get(key)
                and key not in RESUMABLE_KEYS
            )
            raise InputError(
                f"an earlier run with other settings is here ({', '.join(changed) or 'data'} differ); "
                "resume it with the same settings or choose another --out",
                run_dir,
            )
        return True
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, settings)
    return False
