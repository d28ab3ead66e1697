"""``histosynth embed``: manifest and slide inputs, .h5ad/.parquet tables, cache resume after a kill, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import typer
from typer.testing import CliRunner

from histosynth.cli.embed import embed, prototypes
from histosynth.embeddings.embed import embed_manifest, embed_slide
from histosynth.embeddings.store import read_embeddings
from histosynth.encoders.pixels import PixelEncoder
from histosynth.errors import InputError
from histosynth.io import VectorCache

WIDTH, HEIGHT, BLOB = 512, 384, (128, 64, 384, 320)  # synthetic slide with a pink "tissue" block


class DyingEncoder(PixelEncoder):
    """The pixel encoder, killed (KeyboardInterrupt) once it has seen more than ``limit`` tiles."""

    def __init__(self, limit: int | None = None) -> None:
        super().__init__("cpu")
        self.limit, self.seen = limit, 0

    def encode_batch(self, images):
        self.seen += len(images)
        if self.limit is not None and self.seen > self.limit:
            raise KeyboardInterrupt
        return super().encode_batch(images)


def cli() -> typer.Typer:
    """The two commands on a local app (the lead registers them on the root app)."""
    app = typer.Typer(pretty_exceptions_enable=False)
    app.command("embed")(embed)
    app.command("prototypes")(prototypes)
    return app


@pytest.fixture
def dataset(tmp_path: Path, make_tile_dataset) -> Path:
    return make_tile_dataset(tmp_path / "data", n=12, size=(24, 24), cases=["c1", "c2", "c3"])


@pytest.mark.parametrize("suffix", [".h5ad", ".parquet"])
def test_manifest_to_table(dataset: Path, tmp_path: Path, suffix: str, tile_colour) -> None:
    out = tmp_path / f"emb{suffix}"
    result = embed_manifest(dataset, PixelEncoder(), out, tmp_path / "cache", batch_size=5)
    table = read_embeddings(out)
    assert result.tiles == 12 and result.dim == 768 and result.identity == "pixels@16px"
    assert list(table.obs.index[:2]) == ["tile_0", "tile_1"]
    assert {"tile", "id", "label", "split", "case", "mask"} <= set(table.obs.columns)
    assert table.obs["tile"].iloc[3] == str((dataset.parent / "images" / "tile_3.png").resolve())
    assert table.obs["case"].tolist()[:4] == ["c1", "c2", "c3", "c1"]
    assert table.X.dtype == np.float32 and table.X.shape == (12, 768)
    assert np.allclose(table.X[5].reshape(3, 16, 16)[:, 0, 0], np.array(tile_colour(5)) / 255, atol=1e-6)
    assert table.uns["encoder"]["identity"] == "pixels@16px" and table.spatial is None


def test_output_readable_without_histosynth(dataset: Path, tmp_path: Path) -> None:
    import anndata
    import pandas as pd

    embed_manifest(dataset, PixelEncoder(), tmp_path / "e.h5ad")
    embed_manifest(dataset, PixelEncoder(), tmp_path / "e.parquet")
    adata = anndata.read_h5ad(tmp_path / "e.h5ad")
    frame = pd.read_parquet(tmp_path / "e.parquet")
    assert adata.shape == (12, 768) and list(adata.obs["label"][:2]) == ["Normal", "Polyp"]
    assert frame.shape == (12, 1 + 6 + 768) and np.allclose(frame[[f"emb_{i}" for i in range(768)]], adata.X)


def test_kill_then_resume_computes_only_the_rest(dataset: Path, tmp_path: Path) -> None:
    cache, out = tmp_path / "cache", tmp_path / "emb.h5ad"
    with pytest.raises(KeyboardInterrupt):
        embed_manifest(dataset, DyingEncoder(limit=9), out, cache, batch_size=2, save_every=4)
    assert not out.exists()  # nothing half-written
    assert len(VectorCache(cache, PixelEncoder().identity).vectors) == 8  # two parts of 4 survived the kill
    assert len(list(cache.glob("pixels_16px.part-*.npz"))) == 2
    again = DyingEncoder()
    embed_manifest(dataset, again, out, cache, batch_size=2, save_every=4)
    assert again.seen == 4  # 12 tiles, 8 cached, 4 computed
    assert not list(cache.glob("*.part-*.npz")) and (cache / "pixels_16px.npz").is_file()  # parts folded in
    fresh = embed_manifest(dataset, PixelEncoder(), tmp_path / "fresh.h5ad", None)
    assert np.allclose(read_embeddings(out).X, read_embeddings(fresh.path).X)


def test_bad_inputs_raise_one_line(dataset: Path, tmp_path: Path, edit_manifest) -> None:
    with pytest.raises(InputError, match=r"output must end in \.h5ad or \.parquet"):
        embed_manifest(dataset, PixelEncoder(), tmp_path / "emb.csv")
    edit_manifest(dataset, lambda rows: rows[4].update(image="images/gone.png"))
    with pytest.raises(InputError, match=r"gone\.png: tile image not found \(manifest row 5\)"):
        embed_manifest(dataset, PixelEncoder(), tmp_path / "emb.h5ad")
    result = CliRunner().invoke(cli(), ["embed", str(dataset), "--encoder", "uni", "--out", str(tmp_path / "a.h5ad")])
    assert isinstance(result.exception, InputError) and "pass --weights" in str(result.exception)


def _write_slide(path: Path) -> Path:
    rng = np.random.default_rng(3)
    image = rng.integers(246, 256, (HEIGHT, WIDTH, 3)).astype(np.uint8)
    x0, y0, x1, y1 = BLOB
    image[y0:y1, x0:x1] = np.clip(np.array([225, 140, 185]) + rng.integers(-8, 9, (y1 - y0, x1 - x0, 3)), 0, 255)
    image[y0:y1, (x0 + x1) // 2 : x1] = [120, 60, 160]  # right half darker: two kinds of "tissue"
    tifffile.imwrite(path, image, photometric="rgb", tile=(128, 128), resolution=(2e4, 2e4),
                     resolutionunit="CENTIMETER")
    return path


def test_slide_is_tiled_and_keeps_coordinates(tmp_path: Path) -> None:
    from histosynth.data.slides.tiler import TilingOptions

    slide = _write_slide(tmp_path / "my slide.tif")
    out = tmp_path / "slide_emb.h5ad"
    result = embed_slide(slide, PixelEncoder(), out, options=TilingOptions(tile_size=64), cache_dir=tmp_path / "c")
    table = read_embeddings(out)
    assert result.tiles_dir == tmp_path / "slide_emb_tiles" and result.tiles == 16  # 4 x 4 tiles of 64 in the blob
    xy = table.spatial
    assert xy is not None and {tuple(p) for p in xy.astype(int)} == {
        (x, y) for x in range(128, 384, 64) for y in range(64, 320, 64)}
    assert set(table.obs["case"]) == {"my_slide"} and table.uns["tiling"]["tile_size"] == 64
    import anndata

    assert np.array_equal(anndata.read_h5ad(out).obsm["spatial"], xy)


def test_cli_embeds_then_finds_prototypes(tmp_path: Path) -> None:
    slide = _write_slide(tmp_path / "s.tif")
    out = tmp_path / "s.parquet"
    runner = CliRunner()
    result = runner.invoke(cli(), ["embed", str(slide), "--encoder", "pixels", "--out", str(out), "--tile-size", "64",
                                   "--cache", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "16 tiles x 768 (pixels@16px)" in result.output
    result = runner.invoke(cli(), ["prototypes", str(out), "--out", str(tmp_path / "p"), "--k-max", "4"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p" / "maps" / "s.png").is_file() and (tmp_path / "p" / "contact_sheet.png").is_file()
    assert "all: k=2 (16 tiles, 16 fitted)" in result.output  # pink and purple halves; empty labels = one group


def test_registered_root_command_exits_2(tmp_path: Path, dataset: Path, capsys) -> None:
    from histosynth.cli.app import app

    if "embed" not in {c.name for c in app.registered_commands}:
        pytest.skip("`embed` is not registered in cli/app.py yet")
    from testkit import run_cli

    code, _, err = run_cli(["embed", str(dataset), "--encoder", "pixels", "--out", str(tmp_path / "x.txt")], capsys)
    assert code == 2 and err.count("\n") == 1 and "output must end in .h5ad or .parquet" in err


def test_the_shipped_histology_encoder_is_the_default(dataset: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    help_text = runner.invoke(cli(), ["embed", "--help"]).output
    assert "[default: histology]" in help_text and "shipped" in help_text
    out = tmp_path / "default.h5ad"
    result = runner.invoke(cli(), ["embed", str(dataset), "--out", str(out), "--cache", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    table = read_embeddings(out)
    assert table.uns["encoder"]["identity"].startswith("histology") and table.X.shape == (12, 256)
