"""Group-aware, label-stratified splits and case subsampling."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from histosynth.data.manifest import TileRecord, load_manifest
from histosynth.data.splits import case_split, group_of, subsample_by_case
from histosynth.errors import InputError

LABELS = ("Normal", "Polyp", "Adenocarcinoma")


def _records(n_cases: int = 60, seed: int = 1) -> list[TileRecord]:
    """Cases of 1..12 tiles with one label each (every fifth case mixes in a second label)."""
    rng = random.Random(seed)
    records = []
    for case in range(n_cases):
        label = LABELS[case % len(LABELS)]
        for tile in range(rng.randint(1, 12)):
            tile_label = LABELS[(case + 1) % len(LABELS)] if case % 5 == 0 and tile == 0 else label
            records.append(TileRecord(id=f"c{case}_t{tile}", image=Path(f"c{case}_t{tile}.png"),
                                      label=tile_label, extra={"case": f"case{case}"}))
    return records


def _cases_per_split(records: list[TileRecord], assignment: dict[str, str]) -> dict[str, set[str]]:
    splits_of_case: dict[str, set[str]] = defaultdict(set)
    for record in records:
        splits_of_case[record.extra["case"]].add(assignment[record.id])
    return splits_of_case


def test_no_case_in_two_splits_and_every_tile_assigned() -> None:
    records = _records()
    assignment = case_split(records, seed=3)
    assert set(assignment) == {r.id for r in records}
    assert all(len(splits) == 1 for splits in _cases_per_split(records, assignment).values())


def test_fractions_are_met_per_label() -> None:
    records = _records(n_cases=150)
    assignment = case_split(records, fractions=(0.7, 0.15, 0.15), seed=0)
    for label in LABELS:
        tiles = Counter(assignment[r.id] for r in records if r.label == label)
        total = sum(tiles.values())
        assert set(tiles) == {"train", "val", "test"}
        assert tiles["train"] / total == pytest.approx(0.7, abs=0.06)
        assert tiles["val"] / total == pytest.approx(0.15, abs=0.06)


def test_deterministic_for_a_seed() -> None:
    records = _records()
    assert case_split(records, seed=5) == case_split(list(records), seed=5)
    assert case_split(records, seed=5) != case_split(records, seed=6)


def test_unstratified_two_way_split_with_custom_names() -> None:
    records = _records()
    assignment = case_split(records, fractions=(0.5, 0.5), names=("a", "b"), stratify_by_label=False)
    counts = Counter(assignment.values())
    assert set(counts) == {"a", "b"}
    assert counts["a"] / len(records) == pytest.approx(0.5, abs=0.05)


def test_empty_group_cell_makes_a_tile_its_own_group() -> None:
    records = [TileRecord(id=f"t{i}", image=Path("x.png"), label="Normal", extra={"case": ""}) for i in range(20)]
    assert len({group_of(r, "case") for r in records}) == 20
    assert Counter(case_split(records).values()) == {"train": 14, "val": 3, "test": 3}


def test_group_by_standard_column() -> None:
    records = _records()
    assignment = case_split(records, group_key="label", stratify_by_label=False)
    by_label: dict[str, set[str]] = defaultdict(set)
    for record in records:
        by_label[record.label or ""].add(assignment[record.id])
    assert all(len(splits) == 1 for splits in by_label.values())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"group_key": "patient"}, "no 'patient' column"),
        ({"fractions": (0.5, 0.5)}, "2 fractions given for 3 splits"),
        ({"fractions": (1.0, -0.5, 0.5)}, "must be non-negative"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        case_split(_records(), **kwargs)


def test_subsample_takes_whole_cases_about_the_fraction() -> None:
    records = _records(n_cases=150)
    subset = subsample_by_case(records, 0.3, seed=2)
    chosen_cases = {r.extra["case"] for r in subset}
    assert subset == [r for r in records if r.extra["case"] in chosen_cases]  # whole cases, original order
    assert len(subset) / len(records) == pytest.approx(0.3, abs=0.05)
    assert {r.label for r in subset} == set(LABELS)


def test_subsample_is_nested_and_deterministic() -> None:
    records = _records(n_cases=100)
    small, large = subsample_by_case(records, 0.1, seed=4), subsample_by_case(records, 0.5, seed=4)
    assert {r.id for r in small} < {r.id for r in large}
    assert subsample_by_case(records, 0.1, seed=4) == small
    assert subsample_by_case(records, 1.0, seed=4) == records


def test_subsample_keeps_every_label_even_when_tiny() -> None:
    subset = subsample_by_case(_records(), 0.01)
    assert {r.label for r in subset} == set(LABELS)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_subsample_rejects_bad_fraction(fraction: float) -> None:
    with pytest.raises(InputError, match="subsample fraction"):
        subsample_by_case(_records(), fraction)


def test_split_of_real_ebhi_keeps_cases_together(ebhi_manifest: Path) -> None:
    records = load_manifest(ebhi_manifest).records
    assignment = case_split(records, seed=0)
    assert all(len(s) == 1 for s in _cases_per_split(records, assignment).values())
    counts = Counter(assignment.values())
    assert counts["train"] / len(records) == pytest.approx(0.7, abs=0.03)
    assert counts["test"] / len(records) == pytest.approx(0.15, abs=0.03)


def test_subsample_of_nothing_is_one_line() -> None:
    with pytest.raises(InputError, match="no tiles to subsample"):
        subsample_by_case([], 0.1)


@pytest.mark.parametrize("fraction", [0.02, 0.05])
def test_tiny_fractions_of_real_ebhi_hold_a_few_dozen_tiles_of_every_class(ebhi_manifest: Path, fraction: float) -> None:
    train = load_manifest(ebhi_manifest).select_split("train").records
    for seed in range(5):
        subset = subsample_by_case(train, fraction, seed)
        assert {r.label for r in subset} == {r.label for r in train}  # one case per class at least
        assert 12 <= len(subset) <= 120, len(subset)
