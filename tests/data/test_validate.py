"""Every validation rule: the exact one-line message, through the API and through the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histosynth.cli.app import main
from histosynth.data.manifest import load_manifest
from histosynth.data.validate import Problem, map_in_order, validate_manifest

# The default fixture: tile_i on CSV line i + 2; labels Normal, Polyp, Normal, Polyp;
# splits train, val, train, val; images 8x6 (width x height), masks 0/255.


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _set(row_index: int, **cells: str) -> Callable[[Path, Path, Callable], None]:
    def apply(root: Path, manifest: Path, edit_manifest: Callable) -> None:
        edit_manifest(manifest, lambda rows: rows[row_index].update(cells))

    return apply


def _save_mask(name: str, array: np.ndarray) -> Callable[[Path, Path, Callable], None]:
    def apply(root: Path, manifest: Path, edit_manifest: Callable) -> None:
        Image.fromarray(array).save(root / "masks" / name)

    return apply


def _with_classes(breaker: Callable) -> Callable[[Path, Path, Callable], None]:
    def apply(root: Path, manifest: Path, edit_manifest: Callable) -> None:
        (root / "classes.json").write_text(json.dumps({"labels": ["Normal", "Polyp"]}), encoding="utf-8")
        breaker(root, manifest, edit_manifest)

    return apply


@dataclass
class Rule:
    kind: str
    breaker: Callable[[Path, Path, Callable], None]
    expected: list[str]  # one substring per problem line, in order
    required: list[str] = field(default_factory=lambda: ["train"])


RULES = {
    "missing_image": Rule(
        "missing_image",
        lambda root, m, e: (root / "images" / "tile_2.png").unlink(),
        ["manifest.csv:4 (id tile_2): image images/tile_2.png not found"],
    ),
    "empty_image_cell": Rule(
        "missing_image", _set(1, image=""), ["manifest.csv:3 (id tile_1): image cell is empty or names a folder"]
    ),
    "missing_mask": Rule(
        "missing_mask",
        lambda root, m, e: (root / "masks" / "tile_1.png").unlink(),
        ["manifest.csv:3 (id tile_1): mask masks/tile_1.png not found"],
    ),
    "corrupt_image_garbage": Rule(
        "corrupt_image",
        lambda root, m, e: (root / "images" / "tile_0.png").write_bytes(b"not an image at all"),
        ["manifest.csv:2 (id tile_0): image images/tile_0.png: corrupt or unreadable image"],
    ),
    "corrupt_image_truncated": Rule(
        "corrupt_image",
        lambda root, m, e: _truncate(root / "images" / "tile_3.png"),
        ["manifest.csv:5 (id tile_3): image images/tile_3.png: corrupt or unreadable image"],
    ),
    "corrupt_mask": Rule(
        "corrupt_mask",
        lambda root, m, e: _truncate(root / "masks" / "tile_3.png"),
        ["manifest.csv:5 (id tile_3): mask masks/tile_3.png: corrupt or unreadable mask"],
    ),
    "size_mismatch": Rule(
        "size_mismatch",
        _save_mask("tile_2.png", np.zeros((5, 8), dtype=np.uint8)),
        ["manifest.csv:4 (id tile_2): mask masks/tile_2.png is 8x5 but image images/tile_2.png is 8x6"],
    ),
    "mask_values": Rule(
        "mask_values",
        _save_mask("tile_1.png", np.array([[0, 7, 9, 255] * 2] * 6, dtype=np.uint8)),
        ["manifest.csv:3 (id tile_1): mask masks/tile_1.png has values 7, 9 outside the declared classes "
         "(allowed: 0, 1, 255)"],
    ),
    "unknown_label": Rule(
        "unknown_label",
        _with_classes(_set(2, label="Tumour")),
        ["manifest.csv:4 (id tile_2): unknown label 'Tumour' (known: Normal, Polyp)"],
    ),
    "duplicate_id": Rule(
        "duplicate_id",
        lambda root, m, e: e(m, lambda rows: [r.update(id="tile_0") for r in rows[2:]]),
        ["manifest.csv:4 (id tile_0): duplicate id 'tile_0', first used on line 2",
         "manifest.csv:5 (id tile_0): duplicate id 'tile_0', first used on line 2"],
    ),
    "empty_id": Rule("empty_id", _set(3, id=""), ["manifest.csv:5: id is empty"]),
    "empty_split_cell": Rule(
        "empty_split", _set(1, split=""), ["manifest.csv:3 (id tile_1): split cell is empty while other rows have one"]
    ),
    "required_split_empty": Rule(
        "empty_split",
        lambda root, m, e: None,
        ["manifest.csv: split 'test' has no rows (splits here: train, val)"],
        required=["train", "test"],
    ),
}


def _broken(name: str, tmp_path: Path, make_tile_dataset: Callable, edit_manifest: Callable) -> Path:
    manifest = make_tile_dataset(tmp_path)
    RULES[name].breaker(tmp_path, manifest, edit_manifest)
    return manifest


def run_validate(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    """Run ``histosynth data validate ARGS``; return exit code, stderr lines (no progress bar), stdout."""
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "validate", *args])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip() and not line.startswith("validating")]
    code = exit_info.value.code
    return (code if isinstance(code, int) else 0), lines, captured.out


@pytest.mark.parametrize("name", list(RULES))
def test_rule_is_reported(name: str, tmp_path: Path, make_tile_dataset: Callable, edit_manifest: Callable) -> None:
    rule = RULES[name]
    manifest = _broken(name, tmp_path, make_tile_dataset, edit_manifest)
    problems = validate_manifest(load_manifest(manifest, check_ids=False), required_splits=rule.required, jobs=2)
    assert [p.kind for p in problems] == [rule.kind] * len(rule.expected)
    for problem, expected in zip(problems, rule.expected):
        assert expected in str(problem)
        assert "\n" not in str(problem)


@pytest.mark.parametrize("name", list(RULES))
def test_rule_through_cli(
    name: str, tmp_path: Path, make_tile_dataset: Callable, edit_manifest: Callable, capsys: pytest.CaptureFixture[str]
) -> None:
    rule = RULES[name]
    manifest = _broken(name, tmp_path, make_tile_dataset, edit_manifest)
    code, lines, _ = run_validate([str(manifest), "--require-splits", ",".join(rule.required)], capsys)
    assert code == 2
    assert len(lines) == len(rule.expected) + 1
    for line, expected in zip(lines, rule.expected):
        assert expected in line
    assert lines[-1] == f"{len(rule.expected)} problem(s) in 4 rows of {manifest}"


def test_clean_dataset_passes(tmp_path: Path, make_tile_dataset: Callable, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = make_tile_dataset(tmp_path)
    assert validate_manifest(load_manifest(manifest), required_splits=["train", "val"]) == []
    code, lines, out = run_validate([str(manifest)], capsys)
    assert code == 0 and lines == []
    assert out.strip() == "ok: 4 rows, 2 classes, splits train, val"


def test_all_problems_reported_in_row_order(
    tmp_path: Path, make_tile_dataset: Callable, edit_manifest: Callable, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = make_tile_dataset(tmp_path, n=6)
    (tmp_path / "images" / "tile_5.png").unlink()
    Image.fromarray(np.full((6, 8), 3, dtype=np.uint8)).save(tmp_path / "masks" / "tile_0.png")
    Image.fromarray(np.zeros((6, 9), dtype=np.uint8)).save(tmp_path / "masks" / "tile_3.png")

    def change(rows: list[dict[str, str]]) -> None:
        rows[1]["id"] = "tile_0"
        rows[2]["split"] = ""
        rows[4]["mask"] = "masks/nowhere.png"

    edit_manifest(manifest, change)
    expected = [
        ("mask_values", "manifest.csv:2 (id tile_0): mask masks/tile_0.png has values 3"),
        ("duplicate_id", "manifest.csv:3 (id tile_0): duplicate id 'tile_0', first used on line 2"),
        ("empty_split", "manifest.csv:4 (id tile_2): split cell is empty"),
        ("size_mismatch", "manifest.csv:5 (id tile_3): mask masks/tile_3.png is 9x6 but image"),
        ("missing_mask", "manifest.csv:6 (id tile_4): mask masks/nowhere.png not found"),
        ("missing_image", "manifest.csv:7 (id tile_5): image images/tile_5.png not found"),
        ("empty_split", "split 'test' has no rows"),
    ]
    for jobs in (1, 3):
        problems = validate_manifest(load_manifest(manifest, check_ids=False), required_splits=["train", "test"],
                                     jobs=jobs)
        assert [(p.kind, p.row) for p in problems] == [(k, r) for (k, _), r in zip(expected, [1, 2, 3, 4, 5, 6, 0])]
        for problem, (_, text) in zip(problems, expected):
            assert text in str(problem)
    code, lines, _ = run_validate([str(manifest), "--require-splits", "train,test", "--jobs", "3"], capsys)
    assert code == 2
    assert len(lines) == len(expected) + 1 and lines[-1].startswith("7 problem(s) in 6 rows")


def test_problem_str_example() -> None:
    problem = Problem(Path("data/manifest.csv"), 11, "tile_7", "size_mismatch",
                      "mask masks/tile_7.png is 224x200 but image images/tile_7.png is 224x224")
    assert str(problem) == (
        "data/manifest.csv:12 (id tile_7): mask masks/tile_7.png is 224x200 but image images/tile_7.png is 224x224"
    )


def test_on_row_called_once_per_row(tmp_path: Path, make_tile_dataset: Callable) -> None:
    manifest = make_tile_dataset(tmp_path, n=7)
    calls: list[int] = []
    validate_manifest(load_manifest(manifest), jobs=2, on_row=calls.append)
    assert calls == [1] * 7


def test_each_file_decoded_once(tmp_path: Path, make_tile_dataset: Callable, monkeypatch: pytest.MonkeyPatch) -> None:
    import histosynth.data.validate as validate_module

    manifest = make_tile_dataset(tmp_path, n=3)
    opened: list[str] = []
    for name in ("read_rgb", "read_raw_mask"):
        original = getattr(validate_module, name)
        monkeypatch.setattr(validate_module, name, lambda p, _f=original: (opened.append(Path(p).name), _f(p))[1])
    validate_manifest(load_manifest(manifest), jobs=2)
    assert sorted(opened) == sorted([f"tile_{i}.png" for i in range(3)] * 2)


def test_map_in_order_keeps_order_and_propagates_errors() -> None:
    assert list(map_in_order(lambda x: x * x, range(50), jobs=4)) == [x * x for x in range(50)]

    def fail_on_seven(x: int) -> int:
        if x == 7:
            raise ValueError("seven")
        return x

    with pytest.raises(ValueError, match="seven"):
        list(map_in_order(fail_on_seven, range(20), jobs=2))


def test_folder_dataset_problems_name_the_folder(tmp_path: Path, make_tile_dataset: Callable) -> None:
    make_tile_dataset(tmp_path)
    (tmp_path / "manifest.csv").unlink()
    Image.fromarray(np.zeros((5, 8), dtype=np.uint8)).save(tmp_path / "masks" / "tile_1.png")
    problems = validate_manifest(load_manifest(tmp_path))
    assert [str(p) for p in problems] == [
        f"{tmp_path} (id tile_1): mask masks/tile_1.png is 8x5 but image images/tile_1.png is 8x6"
    ]


def test_manifest_without_image_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("id,mask,label\na,masks/a.png,Normal\n", encoding="utf-8")
    code, lines, _ = run_validate([str(manifest)], capsys)
    assert code == 2
    assert lines == [f"error: {manifest}: manifest lacks column(s) image (has: id, mask, label)"]


def test_unknown_classes_file(tmp_path: Path, make_tile_dataset: Callable, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = make_tile_dataset(tmp_path)
    missing = tmp_path / "no_such_classes.json"
    code, lines, _ = run_validate([str(manifest), "--classes", str(missing)], capsys)
    assert code == 2
    assert lines == [f"error: {missing}: class list file not found"]


def test_missing_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = run_validate([str(tmp_path / "nope.csv")], capsys)
    assert code == 2 and len(lines) == 1 and "no such manifest or folder" in lines[0]


def test_real_ebhi_manifest_validates(ebhi_manifest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, out = run_validate([str(ebhi_manifest), "--jobs", "2"], capsys)
    assert code == 0, lines
    assert out.strip() == "ok: 1836 rows, 6 classes, splits test, train, val"
