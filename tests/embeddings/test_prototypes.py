"""Prototypes: the elbow finds a known k, ids and names are validated, the output folder keeps its contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from histosynth.embeddings.build import PrototypeSettings, build_prototypes
from histosynth.embeddings.prototypes import (
    elbow_k,
    fit_group,
    fit_prototypes,
    nearest_prototype,
    prototype_members,
    read_prototype_table,
)
from histosynth.embeddings.store import Embeddings, read_embeddings, write_embeddings
from histosynth.errors import InputError


def blobs(k: int, n: int = 300, dim: int = 8, seed: int = 0) -> np.ndarray:
    from sklearn.datasets import make_blobs

    X, _ = make_blobs(n_samples=n, centers=k, n_features=dim, cluster_std=0.6, center_box=(-15, 15),
                      random_state=seed)
    return X.astype(np.float32)


@pytest.mark.parametrize(("k", "seed"), [(2, 0), (3, 1), (4, 2), (6, 3)])
def test_elbow_picks_the_known_k(k: int, seed: int) -> None:
    centroids, curve = fit_group(blobs(k, seed=seed), "g", k_max=10, seed=seed)
    assert curve.k == k and centroids.shape == (k, 8)
    assert curve.ks == list(range(1, 11)) and all(a >= b for a, b in zip(curve.wcss, curve.wcss[1:]))


def test_elbow_k_on_curves() -> None:
    assert elbow_k([1, 2, 3, 4, 5], [100, 20, 15, 12, 10]) == 2
    assert elbow_k([1, 2, 3], [5, 5, 5]) == 1  # flat: nothing to gain
    assert elbow_k([1, 2], [10, 1]) == 1


def test_subsample_fixed_k_and_size_order() -> None:
    X = np.concatenate([blobs(1, n=50, seed=1) + 40, blobs(1, n=150, seed=2)])
    centroids, curve = fit_group(X, "g", k=2, max_fit=60, seed=0)
    assert curve.ks == [2] and curve.n_fit == 60 and curve.n_tiles == 200
    assert np.linalg.norm(centroids[0] - X[50:].mean(0)) < 2.0  # the larger cluster comes first
    with pytest.raises(InputError, match="more than group 'g'"):
        fit_group(X[:3], "g", k=5)


def test_global_ids_names_and_assignment() -> None:
    X = np.concatenate([blobs(2, n=80, seed=4), blobs(3, n=90, seed=5) + 100])
    groups = ["b"] * 80 + ["a"] * 90
    found = fit_prototypes(X, groups, k_max=6)
    assert found.names == ["a/0", "a/1", "a/2", "b/0", "b/1"] and found.centroids.shape == (5, 8)
    ids, dist = found.assign(X, groups)
    assert set(ids[:80]) == {3, 4} and set(ids[80:]) == {0, 1, 2} and (dist >= 0).all()
    with pytest.raises(InputError, match="group 'c' has no prototypes"):
        found.assign(X[:2], ["c", "c"])


def test_prototype_members_validates() -> None:
    names = ["a/0", "a/1", "b/0"]
    ids = np.array([0, 2, 1, 2])
    assert prototype_members(ids, 2, names).tolist() == [1, 3]
    assert prototype_members(ids, "a/1", names).tolist() == [2]
    with pytest.raises(InputError, match=r"prototype id 3 is out of range: this file has 3 prototypes \(ids 0\.\.2\)"):
        prototype_members(ids, 3, names)
    with pytest.raises(InputError, match="out of range"):
        prototype_members(ids, -1, names)
    with pytest.raises(InputError, match="unknown prototype 'a/7'; known: a/0, a/1"):
        prototype_members(ids, "a/7", names)
    with pytest.raises(InputError, match=r"ids must lie in 0\.\.2; found 0\.\.5"):
        prototype_members(np.array([0, 5]), 0, names)


def _embedding_file(tmp_path: Path, xy: bool = False) -> Path:
    """Two labels x known clusters, real PNG tiles (colour = cluster), optional slide coordinates."""
    X = np.concatenate([blobs(2, n=40, seed=6), blobs(3, n=60, seed=7) + 50])
    labels = ["Normal"] * 40 + ["Polyp"] * 60
    (tmp_path / "tiles").mkdir()
    rows = []
    for i, vector in enumerate(X):
        path = tmp_path / "tiles" / f"t{i}.png"
        Image.fromarray(np.full((8, 8, 3), int(abs(vector[0]) * 5) % 256, np.uint8)).save(path)
        row = {"tile": str(path), "id": f"t{i}", "label": labels[i], "case": f"case{i % 4}"}
        if xy:
            row.update(x=str(64 * (i % 10)), y=str(64 * (i // 10)))
        rows.append(row)
    obs = pd.DataFrame(rows, index=[r["id"] for r in rows])
    return write_embeddings(tmp_path / "emb.h5ad", Embeddings(obs, X, {"encoder": {"identity": "test@1"}}))


def test_build_writes_the_contract(tmp_path: Path) -> None:
    source = _embedding_file(tmp_path)
    steps: list[int] = []
    result = build_prototypes(source, tmp_path / "out", PrototypeSettings(group_by="label", k_max=6, nearest=3),
                              on_step=lambda n=1: steps.append(n), on_total=lambda n: steps.append(-n))
    assert steps[0] == -5 and sum(steps[1:]) == 5  # 2 groups + 3 output stages
    assert [(c.group, c.k) for c in result.prototypes.curves] == [("Normal", 2), ("Polyp", 3)]
    table = read_embeddings(tmp_path / "out" / "prototypes.h5ad")
    P = len(table.uns["prototype_names"])
    assert P == 5 and np.asarray(table.uns["prototype_centroids"]).shape == (5, 8)
    assert table.obs["prototype_id"].between(0, P - 1).all()
    assert all(name.split("/")[0] == label for name, label in zip(table.obs["prototype"], table.obs["label"]))
    assert table.uns["encoder"]["identity"] == "test@1"  # the input's facts are kept
    loaded = read_prototype_table(tmp_path / "out" / "prototypes.h5ad")
    assert loaded.names[loaded.ids[0]] == table.obs["prototype"].iloc[0] and loaded.num_prototypes == 5
    assert {str(p) for p in loaded.members("Polyp/0")} <= set(table.obs["tile"])
    assert loaded.encoder == "test@1" and loaded.embeddings is not None and loaded.embeddings.shape == (100, 8)
    assert (nearest_prototype(loaded.embeddings, loaded.centroids)[:40] < 2).all()  # Normal rows: Normal/0, /1
    for name in ("prototypes.json", "elbow.svg", "contact_sheet.png", "case_prototypes.csv", "case_prototypes.svg"):
        assert (tmp_path / "out" / name).is_file(), name
    assert (tmp_path / "out" / "elbow.svg").read_text().count("<polyline") == 2
    counts = pd.read_csv(tmp_path / "out" / "case_prototypes.csv")
    assert counts["tiles"].sum() == 100 and list(counts.columns[2:]) == loaded.names
    with Image.open(tmp_path / "out" / "contact_sheet.png") as sheet:
        assert sheet.height == 5 * (96 + 4) + 4  # one row per prototype


def test_slide_embeddings_get_maps_and_bad_columns_fail(tmp_path: Path) -> None:
    source = _embedding_file(tmp_path, xy=True)
    build_prototypes(source, tmp_path / "out", PrototypeSettings(group_by="label", k_max=4))
    assert sorted(p.name for p in (tmp_path / "out" / "maps").iterdir()) == [f"case{i}.png" for i in range(4)]
    with pytest.raises(InputError, match="--group-by column 'tissue' not in the embeddings"):
        build_prototypes(source, tmp_path / "o2", PrototypeSettings(group_by="tissue"))
    with pytest.raises(InputError, match=r"emb.h5ad: obs lacks column\(s\) prototype, prototype_id"):
        read_prototype_table(source)



def test_stored_names_must_agree_with_obs(tmp_path: Path) -> None:
    import anndata

    build_prototypes(_embedding_file(tmp_path), tmp_path / "out", PrototypeSettings(group_by="label", k_max=6))
    data = anndata.read_h5ad(tmp_path / "out" / "prototypes.h5ad")
    names = list(data.uns["prototype_names"])
    data.uns["prototype_names"] = names[:3]
    data.write_h5ad(tmp_path / "short.h5ad")
    with pytest.raises(InputError, match="short.h5ad: 3 prototype names but 5 centroids"):
        read_prototype_table(tmp_path / "short.h5ad")
    data.uns["prototype_names"] = names[::-1]
    data.write_h5ad(tmp_path / "swapped.h5ad")
    with pytest.raises(InputError, match="swapped.h5ad: prototype_id [0-4] is named both"):
        read_prototype_table(tmp_path / "swapped.h5ad")

def test_ebhi_subset_end_to_end(ebhi_manifest: Path, tmp_path: Path) -> None:
    """60 real EBHI-Seg tiles (10 per class): histology embeddings -> prototypes per label, splits kept."""
    from testkit import read_rows, write_rows

    from histosynth.embeddings.embed import embed_manifest
    from histosynth.encoders.registry import get_encoder

    rows, per_label = [], {}
    for row in read_rows(ebhi_manifest):
        if per_label.setdefault(row["label"], 0) < 10:
            per_label[row["label"]] += 1
            rows.append({**row, "image": str(ebhi_manifest.parent / row["image"]), "mask": ""})
    subset = tmp_path / "subset.csv"
    write_rows(subset, rows)
    embed_manifest(subset, get_encoder("histology"), tmp_path / "emb.h5ad", tmp_path / "cache")
    result = build_prototypes(tmp_path / "emb.h5ad", tmp_path / "out", PrototypeSettings(group_by="label", k_max=4))
    table = read_embeddings(tmp_path / "out" / "prototypes.h5ad")
    assert {c.group for c in result.prototypes.curves} == set(per_label) and len(per_label) == 6
    assert all(1 <= c.k <= 4 and c.n_tiles == 10 for c in result.prototypes.curves)
    assert set(table.obs["split"]) <= {"train", "val", "test"} and table.X.shape == (60, 256)
