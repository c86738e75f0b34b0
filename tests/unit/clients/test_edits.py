"""The SDK's and CLI's edits and captions against a scripted server: what is sent (multipart
fields, the mask, gRPC messages), what comes back, and the options named by the proto."""

from __future__ import annotations

import argparse
import base64
import json

import pytest
from PIL import Image

from tessera.cli import main as cli
from tessera_client import Client, _edits
from tessera_client.commands import caption, edit
from tessera_client.options import CaptionOptions, EditOptions
from tessera_client.v1 import generation_pb2

from .conftest import Reply, png

EDIT_OPTIONS = [
    f.name
    for f in generation_pb2.EditRequest.DESCRIPTOR.fields
    if f.name not in ("image", "prompt", "mask")
]
CAPTION_OPTIONS = [
    f.name for f in generation_pb2.CaptionRequest.DESCRIPTOR.fields if f.name != "image"
]


def images_body(n: int) -> dict:
    data = [{"b64_json": base64.b64encode(png(8, (i * 40, 0, 0))).decode()} for i in range(n)]
    return {
        "created": 0,
        "data": data,
        "seed": 9,
        "route": "edit",
        "model": "tiny",
        "elapsed_ms": 1,
    }


CAPTIONS = {
    "created": 0,
    "captions": [{"text": "a red circle", "score": -1.5}, {"text": "a red square", "score": -3.0}],
    "model": "tiny",
    "elapsed_ms": 2.0,
}


def _dests(command) -> set[str]:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return {action.dest for action in parser._actions}


def test_options_are_the_proto_fields():
    assert list(_edits.EDIT_FIELDS) == EDIT_OPTIONS
    assert set(EditOptions.__annotations__) == set(EDIT_OPTIONS)
    assert set(CaptionOptions.__annotations__) | {"n"} == set(CAPTION_OPTIONS)
    assert not set(EDIT_OPTIONS) - _dests(edit)
    assert not set(CAPTION_OPTIONS) - _dests(caption)
    with pytest.raises(TypeError, match="unknown edit parameters: \\['steps'\\]"):
        _edits.edit_fields(steps=3)


def test_cli_edit_sends_image_mask_and_fields(http_server, tmp_path, capsys):
    http_server.replies = [Reply(200, images_body(2))]
    src, mask = tmp_path / "in.png", tmp_path / "mask.png"
    src.write_bytes(png(8, (1, 2, 3)))
    mask.write_bytes(png(8, (9, 9, 9)))
    out = tmp_path / "out.png"
    options = ["--mask", str(mask), "-n", "2", "--seed", "4", "--image-guidance-scale", "1.5"]
    argv = ["edit", str(src), "make the circle red", "-o", str(out), *options]
    argv += ["--url", http_server.url]
    assert cli(argv) == 0
    assert capsys.readouterr().out.split() == [str(out), str(tmp_path / "out-1.png")]
    assert Image.open(tmp_path / "out-1.png").getpixel((0, 0))[0] == 40
    seen = http_server.seen[0]
    assert seen.path == "/v1/images/edits"
    assert seen.headers["content-type"].startswith("multipart/form-data")
    body = seen.body
    assert b'name="image"' in body and png(8, (1, 2, 3)) in body
    assert b'name="mask"' in body and png(8, (9, 9, 9)) in body
    assert b"make the circle red" in body and b'name="image_guidance_scale"' in body
    assert b'name="steps"' not in body and b'name="temperature"' not in body


def test_cli_caption_prints_captions_best_first(http_server, tmp_path, capsys):
    http_server.replies = [Reply(200, CAPTIONS)]
    src = tmp_path / "in.png"
    src.write_bytes(png())
    assert (
        cli(["caption", str(src), "-n", "2", "--temperature", "0.7", "--url", http_server.url]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(None, 1)[1] for line in lines] == ["a red circle", "a red square"]
    assert caption.printable("two\nlines\x00") == "two\\nlines\\x00"
    assert http_server.seen[0].path == "/v1/images/captions"
    assert b'name="temperature"' in http_server.seen[0].body
    assert cli(["caption", str(src), "--json", "--url", http_server.url]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["captions"][0] == {"text": "a red circle", "score": -1.5}


def test_sdk_submit_edit_is_a_multipart_job_with_a_key(http_server):
    job = {"id": "a" * 32, "state": "queued", "priority": "high", "attempts": 0}
    http_server.replies = [Reply(202, job)]
    with Client(http_server.url) as client:
        got = client.submit_edit(png(), "remove the square", priority="high", seed=1)
    assert got.id == "a" * 32 and got.state == "queued"
    seen = http_server.seen[0]
    assert seen.path == "/v1/jobs/edits" and seen.headers["idempotency-key"]
    assert b'name="priority"' in seen.body and b"high" in seen.body
    assert b'name="mask"' not in seen.body


def test_sdk_over_grpc_sends_edit_and_caption_messages(grpc_server):
    servicer, target = grpc_server
    result = generation_pb2.GenerateResponse(seed=3, route="edit", model="tiny")
    result.images.add(png=png())
    servicer.script["Edit"] = [generation_pb2.EditResponse(result=result)]
    servicer.script["Caption"] = [
        generation_pb2.CaptionResponse(
            captions=[generation_pb2.ImageCaption(text="a cross", score=-0.5)], model="tiny"
        )
    ]
    with Client(transport="grpc", grpc_target=target) as client:
        images = client.edit(png(), "make it blue", mask=png(8, (0, 0, 0)), top_k=5)
        captions = client.caption(png(), n=1)
    assert images.png_bytes == [png()] and images.seed == 3
    assert captions.texts == ["a cross"] and captions[0].score == -0.5
    sent = {name: meta["request"] for name, meta, _ in servicer.calls if "request" in meta}
    assert sent["Caption.request"].n == 1 and sent["Caption.request"].image == png()
    assert sent["Edit.request"].prompt == "make it blue" and sent["Edit.request"].top_k == 5
    assert sent["Edit.request"].mask == png(8, (0, 0, 0))
    assert not sent["Edit.request"].HasField("seed")
