"""The client commands of the ``tessera`` CLI against a scripted server: files written, what
was sent, and the exit codes scripts rely on."""

from __future__ import annotations

import base64
import json

import pytest
from PIL import Image

from tessera.cli import main as cli

from .conftest import Reply, png


def images_body(n: int, seed: int = 5) -> dict:
    data = [{"b64_json": base64.b64encode(png(8, (i * 40, 0, 0))).decode()} for i in range(n)]
    return {
        "created": 0,
        "data": data,
        "seed": seed,
        "route": "ar",
        "model": "tiny",
        "elapsed_ms": 1,
    }


def test_generate_writes_numbered_pngs(http_server, tmp_path, capsys):
    http_server.replies = [Reply(200, images_body(3))]
    out = tmp_path / "out.png"
    code = cli(["generate", "a cat", "-o", str(out), "--n", "3", "--seed", "5", "--route", "unclip",
                "--size", "64x64", "--url", http_server.url])  # fmt: skip
    assert code == 0
    paths = [tmp_path / n for n in ("out.png", "out-1.png", "out-2.png")]
    assert capsys.readouterr().out.split() == [str(p) for p in paths]
    assert [Image.open(p).getpixel((0, 0))[0] for p in paths] == [0, 40, 80]
    sent = json.loads(http_server.seen[0].body)
    assert sent == {"prompt": "a cat", "n": 3, "seed": 5, "route": "unclip", "size": "64x64"}
    assert http_server.seen[0].path == "/v1/images/generations"


def test_url_from_environment_and_variations(http_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TESSERA_URL", http_server.url)
    http_server.replies = [Reply(200, images_body(1))]
    src = tmp_path / "src.png"
    src.write_bytes(png())
    assert cli(["variations", str(src), "-o", str(tmp_path / "v.png"), "--seed", "2"]) == 0
    assert (tmp_path / "v.png").exists()
    seen = http_server.seen[0]
    assert seen.path == "/v1/images/variations"
    assert seen.headers["content-type"].startswith("multipart/form-data")
    assert b'name="seed"' in seen.body and png() in seen.body
    assert cli(["variations", str(tmp_path / "missing.png")]) == 2  # a bad path is usage


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (Reply(400, {"error": {"code": "invalid_argument", "message": "n: at most 4"}}), 2),
        (Reply(404, {"error": {"code": "not_found", "message": "no model x"}}), 3),
        (Reply(429, {"error": {"code": "resource_exhausted", "message": "busy"}}), 4),
        (Reply(503, "no healthy replicas"), 4),
        (Reply(401, {"error": {"code": "unauthenticated", "message": "wrong key"}}), 1),
        (Reply(500, {"error": {"code": "internal", "message": "internal error"}}), 1),
    ],
)
def test_exit_codes(http_server, tmp_path, capsys, reply, code):
    http_server.replies = [reply]
    argv = ["generate", "x", "-o", str(tmp_path / "o.png"), "--url", http_server.url]
    assert cli([*argv, "--retries", "1"]) == code
    err = capsys.readouterr().err
    assert err.startswith("tessera: error:") and str(reply.status) in err
    assert not (tmp_path / "o.png").exists()


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli(["generate"])  # no prompt
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        cli(["embed", "--text", "a", "--image", "b.png"])  # not both
    assert info.value.code == 2


def test_unreachable_server_exits_4(capsys):
    assert cli(["status", "abc", "--url", "http://127.0.0.1:9", "--retries", "0"]) == 4
    assert "cannot connect" in capsys.readouterr().err


def test_tokenize_and_embed_print_json(http_server, tmp_path, capsys):
    src = tmp_path / "a.png"
    src.write_bytes(png())
    http_server.replies = [
        Reply(
            200, {"codebook_size": 8, "grids": [{"tokens": [1, 2, 3, 4], "height": 2, "width": 2}]}
        )
    ]
    assert cli(["tokenize", str(src), "--url", http_server.url]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"grids": [{"tokens": [1, 2, 3, 4], "height": 2, "width": 2}], "codebook_size": 8}
    sent = json.loads(http_server.seen[0].body)
    assert base64.b64decode(sent["images"][0]) == png() and sent["resize"] is True
    http_server.replies = [Reply(200, {"embeddings": [[0.6, 0.8], [1.0, 0.0]], "dim": 2})]
    target = tmp_path / "emb.json"
    assert cli(["embed", "--text", "a cat", "--text", "a dog", "-o", str(target),
                "--url", http_server.url]) == 0  # fmt: skip
    assert json.loads(target.read_text()) == {"dim": 2, "embeddings": [[0.6, 0.8], [1.0, 0.0]]}
    assert json.loads(http_server.seen[1].body) == {"texts": ["a cat", "a dog"]}
    assert http_server.seen[1].path == "/v1/embeddings/text"
