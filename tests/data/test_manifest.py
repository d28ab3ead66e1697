"""Manifest loading (CSV and folder datasets) and class lists."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from histosynth.data.classes import EBHI_LABELS, ClassList
from histosynth.data.manifest import load_manifest
from histosynth.errors import InputError


def test_csv_paths_are_relative_to_the_csv(
    tmp_path: Path, make_tile_dataset: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = make_tile_dataset(tmp_path / "data", n=3, cases=["A", "B"])
    monkeypatch.chdir(tmp_path)
    dataset = load_manifest(Path("data") / "manifest.csv")
    assert [r.row for r in dataset] == [1, 2, 3]
    assert all(r.image.is_file() and r.mask is not None and r.mask.is_file() for r in dataset)
    first = dataset.records[0]
    assert (first.id, first.label, first.split, first.extra) == ("tile_0", "Normal", "train", {"case": "A"})
    assert dataset.splits == ["train", "val"]
    assert dataset.label_ids() == [0, 1, 0]
    assert manifest.is_file()


def test_empty_cells_become_none(tmp_path: Path, make_tile_dataset: Callable, edit_manifest: Callable) -> None:
    manifest = make_tile_dataset(tmp_path, n=2)
    edit_manifest(manifest, lambda rows: rows[1].update(mask="", label=" ", split=""))
    record = load_manifest(manifest).records[1]
    assert (record.mask, record.label, record.split) == (None, None, None)


def test_byte_order_mark_is_tolerated(tmp_path: Path, make_tile_dataset: Callable) -> None:
    manifest = make_tile_dataset(tmp_path, n=2)
    manifest.write_bytes(b"\xef\xbb\xbf" + manifest.read_bytes())
    assert [r.id for r in load_manifest(manifest)] == ["tile_0", "tile_1"]


def test_short_rows_give_empty_extra_cells(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("id,image,case\na,a.png\n", encoding="utf-8")
    assert load_manifest(manifest).records[0].extra == {"case": ""}


def test_folder_dataset_pairs_masks_by_stem(tmp_path: Path, make_tile_dataset: Callable) -> None:
    make_tile_dataset(tmp_path, n=3)
    (tmp_path / "manifest.csv").unlink()
    (tmp_path / "masks" / "tile_2.png").unlink()
    dataset = load_manifest(tmp_path)
    assert [r.id for r in dataset] == ["tile_0", "tile_1", "tile_2"]
    assert [r.mask is not None for r in dataset] == [True, True, False]
    assert dataset.classes.labels == ["tissue"]


def test_folder_with_manifest_reads_the_manifest(tmp_path: Path, make_tile_dataset: Callable) -> None:
    make_tile_dataset(tmp_path, n=2)
    assert [r.label for r in load_manifest(tmp_path)] == ["Normal", "Polyp"]


def test_classes_json_beside_manifest_is_used(tmp_path: Path, make_tile_dataset: Callable) -> None:
    manifest = make_tile_dataset(tmp_path, n=2)
    ClassList(labels=["Polyp", "Normal", "Other"]).save(tmp_path)
    dataset = load_manifest(manifest)
    assert dataset.classes.labels == ["Polyp", "Normal", "Other"]
    assert dataset.label_ids() == [1, 0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("id,mask\na,b.png\n", "manifest lacks column(s) image (has: id, mask)"),
        ("", "manifest lacks column(s) id, image (has: none)"),
    ],
)
def test_structural_errors(tmp_path: Path, content: str, message: str) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as error:
        load_manifest(manifest)
    assert str(error.value) == f"{manifest}: {message}"


def test_not_utf8_and_missing(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes(b"id,image\n\xff\xfe,x\n")
    with pytest.raises(InputError, match="not a UTF-8 CSV"):
        load_manifest(manifest)
    with pytest.raises(InputError, match="no such manifest or folder"):
        load_manifest(tmp_path / "absent.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="needs an images/ subfolder"):
        load_manifest(tmp_path / "empty")


def test_select_split(tmp_path: Path, make_tile_dataset: Callable) -> None:
    dataset = load_manifest(make_tile_dataset(tmp_path, n=4))
    assert len(dataset.select_split("train")) == 2
    with pytest.raises(InputError, match="split 'test' has no tiles"):
        dataset.select_split("test")


def test_infer_gives_ebhi_order() -> None:
    labels = list(EBHI_LABELS) * 3 + [None, ""]
    random.Random(0).shuffle(labels)
    assert ClassList.infer(labels).labels == list(EBHI_LABELS)
    assert ClassList.infer(["b", "a", "b"]).labels == ["a", "b"]
    with pytest.raises(InputError, match="no labels"):
        ClassList.infer([None, ""])


def test_ebhi_manifest_infers_ebhi_classes(ebhi_manifest: Path) -> None:
    dataset = load_manifest(ebhi_manifest)
    assert dataset.classes == ClassList.ebhi()
    assert dataset.classes.null_id == 6


def test_class_list_round_trip_and_errors(tmp_path: Path) -> None:
    classes = ClassList(labels=["x", "y"], mask_classes=["bg", "a", "b"], mask_values={0: 0, 100: 1, 200: 2})
    classes.save(tmp_path / "c.json")
    assert ClassList.load(tmp_path / "c.json") == classes
    assert ClassList.load("EBHI") == ClassList.ebhi()
    assert classes.resolve_label("1") == 1 and classes.resolve_label("y") == 1 and classes.label_id("") == 2
    with pytest.raises(InputError, match="unknown class 'z'"):
        classes.label_id("z")
    (tmp_path / "bad.json").write_text(json.dumps({"labels": ["a", "a"]}), encoding="utf-8")
    with pytest.raises(InputError, match="not a valid class list"):
        ClassList.load(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{", encoding="utf-8")
    with pytest.raises(InputError, match="not a valid class list"):
        ClassList.load(tmp_path / "broken.json")


def test_mpp_is_the_shared_value_of_the_mpp_column(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    for rows, expected in (("a,a.png,0.5\nb,b.png,0.502\n", 0.501), ("a,a.png,0.5\nb,b.png,1.0\n", None),
                           ("a,a.png,0.5\nb,b.png,\n", None), ("a,a.png,x\n", None)):
        manifest.write_text("id,image,mpp\n" + rows, encoding="utf-8")
        assert load_manifest(manifest).mpp == expected
    manifest.write_text("id,image\na,a.png\n", encoding="utf-8")
    assert load_manifest(manifest).mpp is None
    from histosynth.training.config import TrainConfig
    from histosynth.training.recipes import provenance

    manifest.write_text("id,image,mpp\na,a.png,0.25\n", encoding="utf-8")  # recorded for `histosynth large`
    assert provenance(load_manifest(manifest), 1, TrainConfig(), 1.0, 1.0)["trained_on"]["mpp"] == 0.25
