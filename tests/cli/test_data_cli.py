"""The ``histosynth`` / ``histosynth data`` command line: help, start-up imports, classes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from histosynth.cli.app import app, main
from histosynth.data.classes import ClassList

runner = CliRunner()


@pytest.mark.parametrize(
    "args",
    [["--help"], ["data", "--help"], ["data", "validate", "--help"], ["data", "stats", "--help"],
     ["data", "classes", "--help"]],
)
def test_help_works(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_data_help_lists_commands() -> None:
    output = runner.invoke(app, ["data", "--help"]).output
    for command in ("validate", "stats", "classes"):
        assert command in output


def _python(code: str, cwd: Path | None = None) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_cli_start_up_imports_no_torch() -> None:
    assert _python("import histosynth.cli.app, sys; print('torch' in sys.modules)") == "False"


def test_help_in_subprocess_imports_no_torch() -> None:
    code = (
        "import sys\nfrom histosynth.cli.app import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "print('torch' in sys.modules, file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout and done.stderr.strip().endswith("False")


def test_validate_and_stats_import_no_torch(tmp_path: Path, make_tile_dataset: Callable) -> None:
    manifest = make_tile_dataset(tmp_path, n=3)
    code = (
        "import sys\nfrom histosynth.cli.app import main\n"
        f"for command in ('validate', 'stats'):\n"
        f"    try:\n        main(['data', command, {str(manifest)!r}])\n"
        "    except SystemExit as e:\n        assert e.code in (0, None), e.code\n"
        "print('torch' in sys.modules)"
    )
    assert _python(code).splitlines()[-1] == "False"


def test_classes_command_writes_a_loadable_file(
    tmp_path: Path, make_tile_dataset: Callable, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = make_tile_dataset(tmp_path / "data", n=4, labels=("Polyp", "Normal"))
    out = tmp_path / "out" / "classes.json"
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "classes", str(manifest), "--out", str(out)])
    assert exit_info.value.code in (0, None)
    assert capsys.readouterr().out.splitlines() == ["0\tNormal", "1\tPolyp"]
    assert ClassList.load(out).labels == ["Normal", "Polyp"]


def test_classes_command_on_ebhi(ebhi_manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "classes.json"
    with pytest.raises(SystemExit):
        main(["data", "classes", str(ebhi_manifest), "--out", str(out)])
    assert ClassList.load(out) == ClassList.ebhi()
    assert capsys.readouterr().out.splitlines()[0] == "0\tNormal"

