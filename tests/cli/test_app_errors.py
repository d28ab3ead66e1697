"""main(): optional dependencies missing give one line and exit 2; other import errors still raise."""

from __future__ import annotations

import pytest

import histosynth.cli.app as app_module


def _raising(error: Exception):
    def run(*_, **__):
        raise error

    return run


def test_missing_ml_extra_is_one_line_exit_2(monkeypatch, capsys) -> None:
    monkeypatch.setattr(app_module, "app", _raising(ModuleNotFoundError("No module named 'torch'", name="torch")))
    with pytest.raises(SystemExit) as exit_info:
        app_module.main(["sample", "--out", "x"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert err.splitlines() == [err] and "needs torch" in err and "histosynth[ml]" in err


def test_other_missing_modules_are_not_hidden(monkeypatch) -> None:
    monkeypatch.setattr(app_module, "app", _raising(ModuleNotFoundError("No module named 'histosynth.nope'",
                                                                        name="histosynth.nope")))
    with pytest.raises(ModuleNotFoundError):
        app_module.main(["data", "--help"])
