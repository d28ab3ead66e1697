"""Hostile input to ``histosynth serve``: foreign Host/Origin headers, manifests pointing out of their dataset,
decompression bombs and corrupt files, bad parameters and bodies. Every answer is a one-line 4xx naming no
server path; nothing outside the browsed folder is ever served."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from serve_helpers import BROKEN, ESCAPES, LOCAL, TILE, forged_png, half_mask, png, write_manifest


# --- Host and Origin ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("host", [
    "evil.example", "evil.example:8000", "127.0.0.1.evil.example:8000", "localhost.evil.example", "localhost.",
    "127.0.0.2:8000", "0.0.0.0:8000", "[::2]:8000", "[::1", "localhost:80:80", "localhost:abc", "localhost:",
    "localhost:99999", "user@localhost", "local host", "",
])
def test_foreign_host_headers_get_a_bare_400(client, expect, host: str) -> None:
    response = client.get("/api/info", headers={"host": host})
    assert expect(response, 400) == "invalid host header"
    assert client.get("/", headers={"host": host}).status_code == 400
    assert client.post("/api/mask", headers={"host": host}, files={"mask": ("m.png", b"x")}).status_code == 400


def test_a_real_server_refuses_a_foreign_host(live_server) -> None:
    import httpx

    url, _ = live_server()
    assert httpx.get(f"{url}/api/info", timeout=10).status_code == 200
    refused = httpx.get(f"{url}/api/info", headers={"host": "rebound.evil.example"}, timeout=10)
    assert refused.status_code == 400 and refused.json() == {"error": "invalid host header"}


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "LOCALHOST:1234", "127.0.0.1:8000", "[::1]:8000",
                                  "[::1]"])
def test_loopback_host_headers_are_answered_by_default(client, host: str) -> None:
    assert client.get("/api/info", headers={"host": host}).status_code == 200


@pytest.mark.parametrize(("host", "status"), [
    ("127.0.0.1:8000", 200), ("127.0.0.1:8001", 400), ("localhost:8000", 400), ("lab.example", 200),
    ("lab.example:9999", 200), ("port80.example", 200), ("port80.example:80", 200), ("port80.example:8080", 400),
])
def test_an_explicit_allow_list_is_exact_about_names_and_ports(tiny_model_dir, host: str, status: int) -> None:
    from fastapi.testclient import TestClient

    from histosynth.errors import InputError
    from histosynth.serve.app import create_app

    with pytest.raises(InputError, match="'bad host' is not a host name"):
        create_app(tiny_model_dir, hosts=["localhost", "bad host"])
    app = create_app(tiny_model_dir, hosts=["127.0.0.1:8000", "lab.example", "port80.example:80"])
    with TestClient(app, base_url=LOCAL) as client:
        assert client.get("/api/info", headers={"host": host}).status_code == status


@pytest.mark.parametrize("origin", ["http://evil.example", "http://evil.example:8000", "null", "file://",
                                    "http://127.0.0.1:8000/x", "http://user@127.0.0.1:8000", "javascript:alert(1)"])
def test_requests_from_other_sites_get_403(client, expect, origin: str) -> None:
    assert expect(client.get("/api/info", headers={"origin": origin}), 403) == "cross-origin request refused"
    post = client.post("/api/mask", headers={"origin": origin}, files={"mask": ("m.png", png(half_mask() * 255))})
    assert expect(post, 403) == "cross-origin request refused"


def test_the_apps_own_origin_is_answered(client) -> None:
    files = {"mask": ("m.png", png(half_mask() * 255), "image/png")}
    assert client.post("/api/mask", headers={"origin": LOCAL}, files=files).status_code == 200
    assert client.get("/api/info", headers={"origin": "http://localhost:8000"}).status_code == 200


def test_a_request_without_a_host_header_is_refused() -> None:
    import asyncio

    from histosynth.serve.guards import HostGuard

    async def app(scope, receive, send):
        raise AssertionError("must not be reached")

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    guard = HostGuard(app, ["localhost"])
    for headers in ([], [(b"host", b"localhost"), (b"host", b"evil.example")]):
        sent.clear()
        asyncio.run(guard({"type": "http", "scheme": "http", "headers": headers}, None, send))
        assert sent[0]["status"] == 400 and sent[1]["body"] == b'{"error": "invalid host header"}'
    with pytest.raises(ValueError, match="not a host name"):
        HostGuard(app, ["bad host"])


# --- files outside the dataset folder --------------------------------------------------------------------------

@pytest.mark.parametrize("row", list(ESCAPES))
def test_manifest_rows_pointing_outside_the_dataset_are_refused(hostile, client, expect, row: str) -> None:
    index = list(ESCAPES).index(row)
    kind = "mask" if row.startswith("mask") else "image"
    response = client.get(f"/api/datasets/evil/tiles/{index}/{kind}.png")
    assert expect(response, 403, 404) in (f"tile {kind} lies outside the dataset folder", f"tile {kind} not found")
    if kind == "mask":  # the row's image, inside the folder, is still served
        assert client.get(f"/api/datasets/evil/tiles/{index}/image.png").status_code == 200


def test_symlinked_manifests_reports_and_folders_are_not_followed_out(hostile, client, expect) -> None:
    listing = {d["name"]: d for d in client.get("/api/datasets").json()}
    assert "escaped" not in listing and listing["linkedcsv"]["tiles"] == 0
    assert listing["linkedreport"]["has_report"] is False and listing["run_a"]["has_report"] is True
    assert expect(client.get("/api/datasets/escaped"), 404) == "dataset not found"
    assert expect(client.get("/api/datasets/linkedcsv"), 403) == "dataset manifest lies outside its folder"
    assert expect(client.get("/api/datasets/linkedcsv/tiles/0/image.png"), 403)
    assert expect(client.get("/api/datasets/linkedreport/report"), 404).startswith("dataset has no audit report")
    assert "audit of run_a" in client.get("/api/datasets/run_a/report").text


def test_a_single_dataset_folder_keeps_its_own_files_only(tmp_path, tiny_model_dir, outside, expect) -> None:
    from fastapi.testclient import TestClient

    from histosynth.serve.app import create_app

    single = tmp_path / "single"
    (single / "images").mkdir(parents=True)
    (single / "images" / "ok.png").write_bytes(png(np.zeros((TILE, TILE, 3))))
    write_manifest(single, [("images/ok.png", ""), (str(outside / "secret.png"), "")])
    with TestClient(create_app(tiny_model_dir, datasets=single), base_url=LOCAL) as client:
        assert client.get("/api/datasets/single/tiles/0/image.png").status_code == 200
        expect(client.get("/api/datasets/single/tiles/1/image.png"), 403)


# --- corrupt files and decompression bombs in a dataset ----------------------------------------------------------

@pytest.mark.parametrize("row", list(BROKEN))
def test_unreadable_dataset_images_are_4xx_with_a_generic_message(hostile, client, expect, row: str) -> None:
    index = list(BROKEN).index(row)
    response = client.get(f"/api/datasets/broken/tiles/{index}/image.png")
    if row in ("directory", "missing"):
        assert expect(response, 404) == "tile image not found"
    else:
        assert expect(response, 422) == "tile image could not be read"


def test_a_bomb_mask_is_refused_and_broken_manifests_are_422(hostile, client, expect) -> None:
    assert expect(client.get(f"/api/datasets/broken/tiles/{len(BROKEN)}/mask.png"), 422) == \
        "tile mask could not be read"
    for name in ("badcsv", "nocols"):
        assert expect(client.get(f"/api/datasets/{name}"), 422) == "dataset manifest could not be read"
        expect(client.get(f"/api/datasets/{name}/tiles/0/image.png"), 422)
    listing = {d["name"]: d["tiles"] for d in client.get("/api/datasets").json()}
    assert listing["badcsv"] == 0 and listing["broken"] == len(BROKEN) + 1 and listing["run_a"] == 5


# --- bad parameters -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "statuses"), [
    ("/api/datasets/run_a/tiles/-1/image.png", (400,)),
    ("/api/datasets/run_a/tiles/2147483648/image.png", (400,)),
    ("/api/datasets/run_a/tiles/99999999999999999999999999999/image.png", (400,)),
    ("/api/datasets/run_a/tiles/" + "9" * 5000 + "/image.png", (400, 422)),
    ("/api/datasets/run_a/tiles/abc/image.png", (422,)),
    ("/api/datasets/run_a/tiles/1.5/image.png", (422,)),
    ("/api/datasets/run_a/tiles/0x1/image.png", (422,)),
    ("/api/datasets/run_a/tiles/5/image.png", (404,)),
    ("/api/datasets/run_a/tiles/0/%2e%2e.png", (404,)),
    ("/api/datasets/run_a?offset=-1", (400,)),
    ("/api/datasets/run_a?offset=99999999999999999999", (400,)),
    ("/api/datasets/run_a?offset=x", (422,)),
    ("/api/datasets/run_a?limit=0", (400,)),
    ("/api/datasets/run_a?limit=201", (400,)),
    ("/api/datasets/run_a?limit=-5", (400,)),
    ("/api/datasets/run_a?limit=1e3", (422,)),
    ("/api/datasets/%00", (404,)),
    ("/api/datasets/..%2F..%2Fetc%2Fpasswd", (404,)),
    ("/api/datasets/run_a%2F..%2F..%2Foutside/report", (404,)),
    ("/static/..%2F..%2Fserve%2Fapp.py", (404,)),
    ("/static/%2e%2e/%2e%2e/serve/app.py", (404,)),
    ("/api/procedural-mask?seed=-1", (400,)),
    ("/api/procedural-mask?seed=2147483648", (400,)),
    ("/api/procedural-mask?seed=99999999999999999999999", (400,)),
    ("/api/procedural-mask?seed=x", (422,)),
    ("/api/procedural-mask?foreground=nan", (400,)),
    ("/api/procedural-mask?foreground=inf", (400,)),
    ("/api/procedural-mask?foreground=-0.1", (400,)),
    ("/api/model-mask?label=Polyp", (400,)),  # no mask model: the message names no model folder
    ("/api/model-mask?seed=-5&label=%C2%B2", (400,)),
])
def test_bad_query_and_path_parameters_are_4xx(client, expect, url: str, statuses: tuple[int, ...]) -> None:
    expect(client.get(url), *statuses)


def _generate(client, fields: dict[str, str], files: dict | None = None):
    data = {"mode": "generate", "mask_encoding": "ids", "label": "1", "steps": "2", "guidance": "2", "seed": "7"}
    return client.post("/api/generate", data={**data, **fields},
                       files={"mask": ("m.png", png(half_mask()), "image/png"), **(files or {})})


@pytest.mark.parametrize("fields", [
    {"label": "\u00b2"}, {"label": "-1"}, {"label": "3"}, {"label": "9" * 30}, {"label": "1.5"}, {"label": "\x00"},
    {"label": "x" * 10_000}, {"seed": "-1"}, {"seed": "2147483648"}, {"seed": "1e3"}, {"seed": "\u00b2"},
    {"seed": "9" * 5000}, {"seed": "0x10"}, {"seed": "nan"}, {"steps": "0"}, {"steps": "-1"}, {"steps": "51"},
    {"steps": "1.5"}, {"steps": "9" * 40}, {"guidance": "-0.1"}, {"guidance": "inf"}, {"guidance": "-inf"},
    {"guidance": "nan"}, {"guidance": "1e400"}, {"guidance": "20.0001"}, {"sampler": "DDIM"},
    {"sampler": "x" * 5000}, {"mask_encoding": "IDS"}, {"mask_encoding": ""}, {"mode": ""}, {"mode": "__class__"},
    {"mode": "transfer", "swap_guidance": "nan"}, {"mode": "transfer", "swap_guidance": "11"},
])
def test_bad_generate_fields_are_400(client, expect, fields: dict[str, str]) -> None:
    expect(_generate(client, fields), 400)


def _multipart(parts: list[bytes], boundary: str = "zz") -> bytes:
    return b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts) + \
        b"--" + boundary.encode() + b"--\r\n"


FIELD = b'Content-Disposition: form-data; name="seed"\r\n\r\n7'
UPLOAD = b'Content-Disposition: form-data; name="mask"; filename="m.png"\r\nContent-Type: image/png\r\n\r\n' + \
    png(np.full((TILE, TILE), 7))  # class id / raw value 7 is valid nowhere
BODIES = {
    "json": ("application/json", b'{"mask": [[0, 1]], "seed": 7}'),
    "malformed_json": ("application/json", b'{"mask": [[0, 1'),
    "text": ("text/plain", b"hello"),
    "no_content_type": ("", b"mask=1"),
    "urlencoded": ("application/x-www-form-urlencoded", b"mask=abc&seed=%ff%fe&label=%zz"),
    "no_boundary": ("multipart/form-data", _multipart([FIELD])),
    "wrong_boundary": ("multipart/form-data; boundary=other", _multipart([FIELD])),
    "garbage_multipart": ("multipart/form-data; boundary=zz", b"\x00\xff" * 500),
    "unterminated": ("multipart/form-data; boundary=zz", b"--zz\r\n" + FIELD),
    "nameless_part": ("multipart/form-data; boundary=zz", _multipart([b"Content-Disposition: form-data\r\n\r\nx"])),
    "no_disposition": ("multipart/form-data; boundary=zz", _multipart([b"Content-Type: text/plain\r\n\r\nx"])),
    "non_utf8_text_mask": ("multipart/form-data; boundary=zz",
                           _multipart([b'Content-Disposition: form-data; name="mask"\r\n\r\n\xff\xfe'])),
    "non_utf8_encoding": ("multipart/form-data; boundary=zz",
                          _multipart([b'Content-Disposition: form-data; name="mask_encoding"\r\n\r\n\xff', UPLOAD])),
    "too_many_fields": ("multipart/form-data; boundary=zz",
                        _multipart([f'Content-Disposition: form-data; name="f{i}"\r\n\r\n1'.encode()
                                    for i in range(40)])),
    "too_many_files": ("multipart/form-data; boundary=zz", _multipart([UPLOAD.replace(b'"mask"', f'"m{i}"'.encode())
                                                                        for i in range(10)])),
}


@pytest.mark.parametrize("endpoint", ["/api/generate", "/api/mask"])
@pytest.mark.parametrize("body", list(BODIES))
def test_malformed_request_bodies_are_4xx(client, expect, endpoint: str, body: str) -> None:
    content_type, content = BODIES[body]
    headers = {"content-type": content_type} if content_type else {}
    expect(client.post(endpoint, content=content, headers=headers), 400, 413, 422)


@pytest.mark.parametrize(("method", "url"), [("GET", "/api/generate"), ("PUT", "/api/mask"),
                                             ("DELETE", "/api/datasets/run_a"), ("POST", "/api/info")])
def test_wrong_methods_are_405(client, expect, method: str, url: str) -> None:
    expect(client.request(method, url), 405)


def test_oversized_uploads_are_413(make_client, expect) -> None:
    client = make_client(max_upload_bytes=4096)
    noise = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    expect(client.post("/api/mask", files={"mask": ("m.png", png(noise))}), 413)
    expect(client.post("/api/generate", content=b"x" * 5000, headers={"content-type": "text/plain"}), 413)


UPLOADS = {
    "bomb_60000": forged_png(60000, 60000),
    "wide_3000": forged_png(3000, 16),
    "zero_size": forged_png(0, 0),
    "png_magic_garbage": b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
    "truncated": png(half_mask())[:45],
    "gif": b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
    "eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\nshowpage\n",
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32"/>',
    "mask_16bit": png(np.full((TILE, TILE), 1000, np.uint16)),
    "ids_out_of_range": png(np.full((TILE, TILE), 200)),
}


@pytest.mark.parametrize("upload", list(UPLOADS))
def test_hostile_uploads_are_400(client, expect, upload: str) -> None:
    files = {"mask": ("m.png", UPLOADS[upload], "image/png")}
    expect(client.post("/api/mask", files=files, data={"mask_encoding": "ids"}), 400)
    expect(client.post("/api/generate", files=files, data={"mask_encoding": "ids"}), 400)


def _transfer_files(**changed: bytes) -> dict:
    """The transfer mode's uploads (a valid appearance tile and its raw 0/255 mask), with ``changed`` ones replaced."""
    contents = {"appearance": png(np.full((TILE, TILE, 3), 128)), "appearance_mask": png(half_mask() * 255),
                **changed}
    return {name: (f"{name}.png", content, "image/png") for name, content in contents.items()}


def _png16(array: np.ndarray) -> bytes:
    """A 16-bit greyscale PNG (``png`` casts to 8 bits)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


#: Bad transfer uploads: name -> (field, content, what the message says after "<field>: ").
TRANSFER_UPLOADS = {
    "text_appearance": ("appearance", b"hello, I am a text file", "corrupt or unreadable image (not a PNG"),
    "pdf_mask": ("appearance_mask", b"%PDF-1.4 not an image", "corrupt or unreadable mask (not a PNG"),
    "empty_appearance": ("appearance", b"", "empty upload"),
    "empty_mask": ("appearance_mask", b"", "empty upload"),
    "bomb_appearance": ("appearance", forged_png(60000, 60000), "declares 60000 x 60000 px, above the 50 MP limit"),
    "bomb_mask": ("appearance_mask", forged_png(60000, 60000), "declares 60000 x 60000 px, above the 50 MP limit"),
    "wide_appearance": ("appearance", forged_png(3000, 16), "image is 3000x16 px, more than 2048 px a side"),
    "wide_mask": ("appearance_mask", forged_png(16, 3000), "mask is 16x3000 px, more than 2048 px a side"),
    "truncated_appearance": ("appearance", png(np.full((TILE, TILE, 3), 9))[:60], ""),
    "small_appearance": ("appearance", png(np.zeros((16, 16, 3))), "image is 16x16 px, expected 32x32"),
    "large_mask": ("appearance_mask", png(np.zeros((64, 64))), "mask is 64x64 px, expected 32x32"),
    "oblong_mask": ("appearance_mask", png(np.zeros((TILE, 20))), "mask is 20x32 px, expected 32x32"),
    "mask_values": ("appearance_mask", png(np.full((TILE, TILE), 7)), "mask values 7 are outside"),
    "mask_half_valid": ("appearance_mask", png(half_mask() * 200), "mask values 200 are outside"),
    "mask_16bit": ("appearance_mask", _png16(np.full((TILE, TILE), 1000)), "mask must be a single-channel 8-bit"),
    "mask_colour": ("appearance_mask", png(np.dstack([half_mask() * 255, np.zeros((TILE, TILE)),
                                                      np.zeros((TILE, TILE))])), "mask is a colour image"),
}


@pytest.mark.parametrize("upload", list(TRANSFER_UPLOADS))
def test_bad_transfer_uploads_are_400_naming_the_field(client, expect, upload: str) -> None:
    field, content, says = TRANSFER_UPLOADS[upload]
    message = expect(_generate(client, {"mode": "transfer"}, _transfer_files(**{field: content})), 400)
    assert message.startswith(f"{field}: {says}"), message


def test_transfer_uploads_sent_as_text_or_missing_are_400(client, expect) -> None:
    files = _transfer_files()
    text_field = _generate(client, {"mode": "transfer", "appearance": "a.png"},
                           {"appearance_mask": files["appearance_mask"]})
    assert expect(text_field, 400).startswith("appearance: missing upload")
    assert expect(_generate(client, {"mode": "transfer"}), 400).startswith("appearance: missing upload")
    small_mask = {"mask": ("m.png", png(half_mask(16)), "image/png")}
    message = expect(_generate(client, {"mode": "transfer"}, {**files, **small_mask}), 400)
    assert message.startswith("mask: mask is 16x16 px, expected 32x32")


@pytest.mark.parametrize("field", ["appearance", "appearance_mask"])
def test_transfer_uploads_obey_the_pixel_limit(client, expect, monkeypatch, field: str) -> None:
    from histosynth.data.images import MAX_PIXELS_ENV

    monkeypatch.setenv(MAX_PIXELS_ENV, str(TILE * TILE))  # the 32 x 32 mask passes; a 40 x 40 upload does not
    big = png(np.zeros((40, 40, 3) if field == "appearance" else (40, 40)))
    message = expect(_generate(client, {"mode": "transfer"}, _transfer_files(**{field: big})), 400)
    assert message == f"{field}: declares 40 x 40 px, above the 1024 px limit; set {MAX_PIXELS_ENV} to raise it"
    assert _generate(client, {"mode": "transfer", "steps": "1"}, _transfer_files()).status_code == 200


def test_uploads_obey_the_service_side_limit(make_client, expect) -> None:
    client = make_client(max_side=24)
    response = client.post("/api/mask", files={"mask": ("m.png", png(np.zeros((30, 20))), "image/png")})
    assert expect(response, 400) == "mask: mask is 20x30 px, more than 24 px a side"
    assert expect(_generate(client, {"mode": "transfer"}, _transfer_files()), 400) == \
        "mask: mask is 32x32 px, more than 24 px a side"


# --- the allow-list of the serve command ------------------------------------------------------------------

@pytest.mark.parametrize(("host", "port", "extra", "expected"), [
    ("127.0.0.1", 8000, [], ["127.0.0.1:8000", "localhost:8000", "[::1]:8000"]),
    ("0.0.0.0", 80, ["lab.example"], ["localhost:80", "127.0.0.1:80", "[::1]:80", "lab.example"]),
    ("::1", 9000, [], ["[::1]:9000", "localhost:9000", "127.0.0.1:9000"]),
    ("192.168.1.5", 8000, ["proxy:443"], ["192.168.1.5:8000", "localhost:8000", "127.0.0.1:8000", "[::1]:8000",
                                          "proxy:443"]),
])
def test_allowed_hosts_are_the_bound_host_and_loopback_on_the_port(host, port, extra, expected) -> None:
    from histosynth.serve.guards import allowed_hosts

    assert allowed_hosts(host, port, extra) == expected


def test_public_messages_drop_server_paths() -> None:
    from histosynth.errors import InputError, ModelFolderError
    from histosynth.serve.guards import public_error, public_message

    assert public_error(InputError("bad", "mask")) == "mask: bad"
    assert public_error(InputError("manifest lacks column(s) id", "/srv/data/run/manifest.csv")) == \
        "manifest lacks column(s) id"
    assert public_error(ModelFolderError("no mask_model/; train one", Path("models/x"))) == "no mask_model/; train one"
    assert public_message("cannot open '/home/me/x.png' or C:\\data\\y.png") == "cannot open '<path>' or <path>"
    assert public_message("values 0/255 and a/b stay") == "values 0/255 and a/b stay"
    assert len(public_message("x" * 1000)) == 300


def test_serve_answers_only_its_hosts(tiny_model_dir, monkeypatch, capsys) -> None:
    import socket

    import uvicorn
    from fastapi.testclient import TestClient

    from histosynth.cli.serve import main

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    served: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **_: served.update(app=app, port=port))
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(tiny_model_dir), "--port", str(port), "--allow-host", "lab.example"])
    assert exit_info.value.code == 0
    with TestClient(served["app"], base_url=f"http://127.0.0.1:{port}") as client:
        for host, status in [(f"127.0.0.1:{port}", 200), (f"localhost:{port}", 200), (f"127.0.0.1:{port + 1}", 400),
                             ("lab.example:1", 200), (f"evil.example:{port}", 400)]:
            assert client.get("/api/info", headers={"host": host}).status_code == status, host
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(tiny_model_dir), "--allow-host", "bad host"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "error: --allow-host 'bad host' is not a host name or name:port"
