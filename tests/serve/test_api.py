"""The JSON API of ``histosynth serve`` on the tiny model: generation, transfer, limits, one-line errors."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from serve_helpers import LOCAL, TILE, decode_data_url, half_mask, png


def generate(client, mask: np.ndarray | bytes, encoding: str = "ids", files: dict | None = None, **values):
    data = {"mode": "generate", "mask_encoding": encoding, "label": "1", "steps": "3", "guidance": "2", "seed": "7"}
    data.update({k: str(v) for k, v in values.items()})
    uploads = {"mask": ("mask.png", mask if isinstance(mask, bytes) else png(mask), "image/png"), **(files or {})}
    return client.post("/api/generate", data=data, files=uploads)


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and "\n" not in body["error"]
    return body["error"]


def test_info_describes_the_model_and_its_modes(client) -> None:
    info = client.get("/api/info").json()
    assert info["tile_size"] == TILE and info["labels"] == ["Normal", "Polyp", "Adenocarcinoma"]
    assert info["mask_classes"] == ["background", "gland"] and info["datasets"] is True
    assert info["limits"]["max_steps"] == 50
    modes = {m["name"]: m for m in info["modes"]}
    assert set(modes) == {"generate", "transfer"}
    assert [f["name"] for f in modes["transfer"]["fields"]] == ["appearance", "appearance_mask", "swap_guidance"]
    assert "guidance" in modes["generate"]["common"] and "guidance" not in modes["transfer"]["common"]


def test_generate_returns_the_tile_beside_its_mask_and_is_seeded(client) -> None:
    first = generate(client, half_mask())
    assert first.status_code == 200, first.text
    body = first.json()
    image = decode_data_url(body["image"])
    assert image.shape == (TILE, TILE, 3) and image.dtype == np.uint8 and image.std() > 0
    mask = decode_data_url(body["mask"])
    palette = client.get("/api/info").json()["palette"]
    assert (mask[0, 0] == palette[1]).all() and (mask[-1, 0] == palette[0]).all()
    assert body["label"] == "Polyp" and body["steps"] == 3 and body["seed"] == 7 and body["model"].startswith("model@")
    again = decode_data_url(generate(client, half_mask()).json()["image"])
    other = decode_data_url(generate(client, half_mask(), seed=8).json()["image"])
    assert (again == image).all() and not (other == image).all()


def test_raw_masks_map_through_the_class_list_and_empty_label_is_unconditional(client) -> None:
    raw = half_mask() * 255  # EBHI-style 0/255
    response = generate(client, raw, encoding="raw", label="")
    assert response.status_code == 200 and response.json()["label"] == ""
    assert "mask values 7" in error_of(generate(client, np.full((TILE, TILE), 7), encoding="raw"), 400)


@pytest.mark.parametrize(("change", "expected"), [
    ({"steps": "51"}, "steps: 51 is outside 1..50"),
    ({"steps": "many"}, "steps: 'many' is not a whole number"),
    ({"guidance": "nan"}, "guidance: nan is outside"),
    ({"label": "Tumour"}, "unknown class 'Tumour'"),
    ({"sampler": "euler"}, "sampler: unknown sampler"),
    ({"mode": "like"}, "mode: unknown mode 'like'"),
    ({"mask_encoding": "rgb"}, "mask_encoding: must be ids"),
])
def test_bad_fields_are_one_line_400s(client, change: dict, expected: str) -> None:
    assert expected in error_of(generate(client, half_mask(), **change), 400)


def test_bad_uploads_are_refused_with_a_clear_message(client) -> None:
    assert error_of(generate(client, b"%PDF-1.4 not an image"), 400) == \
        "mask: corrupt or unreadable mask (not a PNG, JPEG, TIFF, BMP or WebP file)"
    assert error_of(generate(client, b""), 400).startswith("mask: empty upload")
    assert error_of(generate(client, half_mask(16)), 400) == "mask: mask is 16x16 px, expected 32x32"
    assert "class id 3" in error_of(generate(client, np.full((TILE, TILE), 3)), 400)
    truncated = png(half_mask())[:60]
    assert error_of(generate(client, truncated), 400).startswith("mask: ")
    no_mask = client.post("/api/generate", data={"mode": "generate"})
    assert error_of(no_mask, 400).startswith("mask: missing upload")


def test_image_dimensions_are_checked_before_decoding(make_client) -> None:
    client = make_client(max_side=48)
    expected = "mask: mask is 40x64 px, more than 48 px a side"
    assert error_of(generate(client, np.zeros((64, 40))), 400) == expected


def test_request_bodies_over_the_limit_get_413_declared_or_streamed(make_client) -> None:
    client = make_client(max_upload_bytes=20_000)
    noise = np.random.default_rng(0).integers(0, 255, (120, 120, 3), dtype=np.uint8)  # ~43 kB PNG
    declared = generate(client, half_mask(), files={"appearance": ("a.png", png(noise), "image/png")})
    assert "upload too large" in error_of(declared, 413)

    def chunks():
        for _ in range(40):
            yield b"x" * 1000

    streamed = client.post("/api/generate", content=chunks(),
                           headers={"content-type": "multipart/form-data; boundary=zz"})
    assert "upload too large" in error_of(streamed, 413)
    assert generate(client, half_mask()).status_code == 200  # small requests still pass


def test_transfer_mode_needs_its_uploads_and_returns_a_tile(client) -> None:
    appearance = np.random.default_rng(1).integers(0, 255, (TILE, TILE, 3), dtype=np.uint8)
    files = {"appearance": ("a.png", png(appearance), "image/png"),
             "appearance_mask": ("m.png", png(half_mask().T * 255), "image/png")}
    response = generate(client, half_mask(), files=files, mode="transfer", steps=2, swap_guidance=2.0)
    assert response.status_code == 200, response.text
    assert decode_data_url(response.json()["image"]).shape == (TILE, TILE, 3)
    assert response.json()["mode"] == "transfer"
    missing = generate(client, half_mask(), files={"appearance": files["appearance"]}, mode="transfer")
    assert error_of(missing, 400).startswith("appearance_mask: missing upload")
    small = {**files, "appearance": ("a.png", png(appearance[:16]), "image/png")}
    assert "appearance: image is 32x16" in error_of(generate(client, half_mask(), files=small, mode="transfer"), 400)


def test_mask_upload_and_procedural_masks_give_class_ids_for_the_painter(client) -> None:
    response = client.post("/api/mask", files={"mask": ("m.png", png(half_mask() * 255), "image/png")})
    ids = np.frombuffer(base64.b64decode(response.json()["ids"]), np.uint8).reshape(TILE, TILE)
    assert (ids == half_mask()).all()
    assert error_of(client.post("/api/mask", files={"mask": ("m.txt", b"hello", "text/plain")}), 400) == \
        "mask: corrupt or unreadable mask (not a PNG, JPEG, TIFF, BMP or WebP file)"
    procedural = client.get("/api/procedural-mask", params={"foreground": 0.25, "seed": 3}).json()
    ids = np.frombuffer(base64.b64decode(procedural["ids"]), np.uint8)
    assert procedural["size"] == TILE and abs(ids.mean() - 0.25) < 0.02
    assert "foreground: 2.0 is outside" in error_of(client.get("/api/procedural-mask?foreground=2"), 400)
    assert error_of(client.get("/api/procedural-mask?seed=x"), 422).startswith("seed:")


def test_the_page_and_its_assets_are_served_with_a_strict_policy(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and 'src="/static/app.js"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "maskBlob" in client.get("/static/app.js").text
    assert error_of(client.get("/nope"), 404) == "Not Found"


def test_unexpected_failures_are_one_line_json_500s(tiny_model_dir, synthetic_root) -> None:
    from fastapi.testclient import TestClient

    from histosynth.serve.app import create_app

    app = create_app(tiny_model_dir, datasets=synthetic_root)

    def broken(request):
        raise RuntimeError("boom")

    app.state.service.run = broken
    with TestClient(app, raise_server_exceptions=False, base_url=LOCAL) as client:
        assert error_of(generate(client, half_mask()), 500) == "internal error (RuntimeError); see the server log"


def test_model_mask_endpoint_gives_the_mask_models_layout_for_the_painter(make_client, tiny_model_dir) -> None:
    from tiny_models import save_tiny_mask_model

    from histosynth.models.pipeline import LatentDiffusionModel
    from histosynth.sampling.masks import generate_tile_masks

    without = make_client()
    assert without.get("/api/info").json()["mask_model"] is False
    assert "no mask_model/" in error_of(without.get("/api/model-mask", params={"label": "Polyp"}), 400)
    save_tiny_mask_model(tiny_model_dir)
    client = make_client()
    assert client.get("/api/info").json()["mask_model"] is True
    body = client.get("/api/model-mask", params={"label": "Polyp", "seed": 3, "steps": 2}).json()
    ids = np.frombuffer(base64.b64decode(body["ids"]), np.uint8).reshape(TILE, TILE)
    assert body["size"] == TILE and body["seed"] == 3 and ids.max() <= 1
    expected = generate_tile_masks(LatentDiffusionModel.load(tiny_model_dir), [1], [3], steps=2)[0]
    assert np.array_equal(ids, expected)  # the same mask `histosynth sample --masks model` gives that tile
    unconditional = client.get("/api/model-mask", params={"label": "", "seed": 3}).json()
    assert unconditional["size"] == TILE
    assert "unknown class 'Tumour'" in error_of(client.get("/api/model-mask?label=Tumour"), 400)
    assert "steps: 51 is outside 1..50" in error_of(client.get("/api/model-mask?label=1&steps=51"), 400)
    assert "seed: -1 is outside" in error_of(client.get("/api/model-mask?seed=-1"), 400)
    assert error_of(client.get("/api/model-mask?seed=x"), 422).startswith("seed:")
    page, script = client.get("/").text, client.get("/static/app.js").text
    assert 'id="model-mask"' in page and "/api/model-mask" in script


def test_the_page_offers_the_package_sampling_defaults() -> None:
    from importlib.resources import files

    from histosynth.sampling.settings import SAMPLERS, SamplingSettings

    page = (files("histosynth.serve") / "static" / "index.html").read_text()
    defaults = SamplingSettings()
    assert f'id="guidance" type="number" min="0" step="0.1" value="{defaults.guidance:g}"' in page
    assert '<select id="sampler">' + "".join(f"<option>{name}</option>" for name in SAMPLERS) + "</select>" in page
    assert SAMPLERS[0] == defaults.sampler  # the menu's first entry is what the page sends unless changed
    assert f'id="steps" type="number" min="1" value="{defaults.steps}"' in page
