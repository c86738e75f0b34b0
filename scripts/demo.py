"""`make demo`: start the stack on the default bundle, generate through every route it
serves (ar, unclip, and pixel / mixed when the bundle carries those models) over the HTTP
API, and write a labelled sample grid to out/demo.png. When the bundle has a mixed-modal
model it also edits the first row's pictures by instructions (a source row captioned by the
model, an edited row under it, each cell labelled with its instruction)."""

from __future__ import annotations

import base64
import io
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = [
    "grinning face",
    "a happy face",
    "red heart",
    "a small red fruit",
    "dog face",
    "rocket",
    "sun",
    "a green tree",
]
ROUTES = ("ar", "unclip", "pixel", "mixed")  # in this order, those the bundle serves
# Instructions for the edits row, one per column, in the words of each bundle's edit data
# (Twemoji variant pairs; shapes scenes): any bundle but shapes gets the Twemoji ones.
INSTRUCTIONS = {
    "twemoji": [
        "give it a dark skin tone",
        "give it a light skin tone",
        "make it a woman",
        "make it a man",
        "give it a medium skin tone",
        "give it the default yellow skin tone",
        "make it a person",
        "give it a medium-dark skin tone",
    ],
    "shapes": [
        "make the circle red",
        "remove the blue square",
        "add a small green cross at the top left",
        "move the triangle to the right",
        "make the square bigger",
        "turn the circle into a square",
        "make the triangle blue",
        "make the circle smaller",
    ],
}
CELL = 128
NOTE_H = 26  # two lines of text under a cell of a captioned / instructed row


@dataclass
class Row:
    label: str
    images: list[Image.Image]
    notes: list[str] | None = None  # a text under each cell (captions, instructions)


def pick_port(preferred: int) -> int:
    """``preferred``, or any free port when something already listens there."""
    from tessera import runtime

    return preferred if runtime.port_free(preferred) else runtime.free_port()


def main() -> int:
    from tessera import runtime
    from tessera.common.settings import get_settings

    settings = get_settings()
    bundle_dir = settings.bundle_dir
    if not (bundle_dir / "model_index.json").is_file():
        from tessera.bundle.random_init import build_random_bundle

        bundle_dir = settings.data_dir / "bundles" / "random"
        print(f"no trained bundle at {settings.bundle_dir}; using random weights at {bundle_dir}")
        print("  (train one with `tessera train all --dataset twemoji`)")
        build_random_bundle(bundle_dir, "random", tiny=False)
    http_port, grpc_port = pick_port(settings.http_port), pick_port(settings.grpc_port)
    print(f"starting Tessera on bundle {bundle_dir.name} (HTTP :{http_port}, gRPC :{grpc_port})…")
    start = time.perf_counter()
    endpoints = runtime.start(
        runtime.StackConfig(
            serve_config=settings.serve_config,
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=None,
            app_args={"bundle_dir": str(bundle_dir)},
            quiet=True,
        )
    )
    print(f"ready in {time.perf_counter() - start:.1f}s at {endpoints['http']}")
    try:
        rows = []
        with httpx.Client(base_url=endpoints["http"], timeout=300) as client:
            model = client.get("/v1/models").json()["data"][0]
            routes = [r for r in ROUTES if r in model["routes"]]
            pngs = {}  # route -> the PNGs of its row, as returned (native size)
            for route in routes:
                pngs[route] = []
                for i, prompt in enumerate(PROMPTS):
                    t0 = time.perf_counter()
                    r = client.post(
                        "/v1/images/generations",
                        json={"prompt": prompt, "route": route, "seed": 1000 + i, "n": 1},
                    )
                    r.raise_for_status()
                    pngs[route].append(base64.b64decode(r.json()["data"][0]["b64_json"]))
                    ms = (time.perf_counter() - t0) * 1000
                    print(f"  {route:6s} {prompt!r:24s} {ms:7.0f} ms")
                rows.append(Row(route, [open_png(p) for p in pngs[route]]))
            if model.get("edits"):
                rows += edit_rows(client, model, pngs)
        out = ROOT / "out" / "demo.png"
        out.parent.mkdir(exist_ok=True)
        grid_image(rows).save(out)
        what = f"{len(routes)} routes x {len(PROMPTS)} prompts"
        if model.get("edits"):
            what += ", edits and captions"
        print(f"wrote {out.relative_to(ROOT)} ({what})")
        print("Twemoji images: Copyright Twitter, Inc and other contributors, CC-BY 4.0.")
    finally:
        runtime.stop()
    return 0


def open_png(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def edit_rows(client: httpx.Client, model: dict, pngs: dict[str, list[bytes]]) -> list[Row]:
    """The mixed-modal model's rows: the first native-size row's pictures captioned by the
    model (source), then each edited by its column's instruction."""
    side = model["image_size"]
    sources = next((row for row in pngs.values() if open_png(row[0]).size == (side, side)), None)
    if sources is None:
        return []
    kind = "shapes" if "shapes" in model["id"] else "twemoji"
    captions, edited = [], []
    for i, (png, instruction) in enumerate(zip(sources, INSTRUCTIONS[kind], strict=False)):
        t0 = time.perf_counter()
        image = {"image": ("source.png", png, "image/png")}
        r = client.post("/v1/images/captions", files=image)
        r.raise_for_status()
        text = r.json()["captions"][0]["text"]
        captions.append("".join(c if c.isprintable() else "?" for c in text))
        r = client.post(
            "/v1/images/edits", files=image, data={"prompt": instruction, "seed": str(2000 + i)}
        )
        r.raise_for_status()
        edited.append(open_png(base64.b64decode(r.json()["data"][0]["b64_json"])))
        ms = (time.perf_counter() - t0) * 1000
        print(f"  edit   {instruction!r:40s} {ms:7.0f} ms  (caption: {captions[-1]!r})")
    return [
        Row("source", [open_png(p) for p in sources[: len(edited)]], captions),
        Row("edit", edited, INSTRUCTIONS[kind][: len(edited)]),
    ]


def grid_image(rows: list[Row]) -> Image.Image:
    label_w, head_h = 70, 34
    heights = [CELL + (NOTE_H if row.notes else 0) for row in rows]
    grid = Image.new("RGB", (label_w + CELL * len(PROMPTS), head_h + sum(heights)), "white")
    draw = ImageDraw.Draw(grid)
    for j, prompt in enumerate(PROMPTS):
        draw.text((label_w + j * CELL + 4, 4), prompt[:20], fill="black")
    top = head_h
    for row, height in zip(rows, heights, strict=True):
        draw.text((6, top + CELL // 2), row.label, fill="black")
        for j, img in enumerate(row.images):
            x = label_w + j * CELL
            grid.paste(img.resize((CELL, CELL), Image.Resampling.NEAREST), (x, top))
            if row.notes:
                lines = textwrap.wrap(row.notes[j], 21)[:2]
                draw.multiline_text((x + 3, top + CELL + 1), "\n".join(lines), fill="black")
        top += height
    return grid


if __name__ == "__main__":
    sys.exit(main())
