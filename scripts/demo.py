"""`make demo`: start the stack on the default bundle, generate through every route it
serves (ar, unclip, and pixel when the bundle carries a pixel model) over the HTTP API, and
write a labelled sample grid to out/demo.png."""

from __future__ import annotations

import base64
import io
import socket
import sys
import time
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
ROUTES = ("ar", "unclip", "pixel")  # in this order, those the bundle serves (GET /v1/models)
CELL = 128


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def pick_port(preferred: int) -> int:
    if port_free(preferred):
        return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
            served = client.get("/v1/models").json()["data"][0]["routes"]
            routes = [r for r in ROUTES if r in served]
            for route in routes:
                row = []
                for i, prompt in enumerate(PROMPTS):
                    t0 = time.perf_counter()
                    r = client.post(
                        "/v1/images/generations",
                        json={"prompt": prompt, "route": route, "seed": 1000 + i, "n": 1},
                    )
                    r.raise_for_status()
                    png = base64.b64decode(r.json()["data"][0]["b64_json"])
                    row.append(Image.open(io.BytesIO(png)).convert("RGB"))
                    ms = (time.perf_counter() - t0) * 1000
                    print(f"  {route:6s} {prompt!r:24s} {ms:7.0f} ms")
                rows.append(row)
        out = ROOT / "out" / "demo.png"
        out.parent.mkdir(exist_ok=True)
        grid_image(routes, rows).save(out)
        print(f"wrote {out.relative_to(ROOT)} ({len(routes)} routes x {len(PROMPTS)} prompts)")
        print("Twemoji images: Copyright Twitter, Inc and other contributors, CC-BY 4.0.")
    finally:
        runtime.stop()
    return 0


def grid_image(routes: list[str], rows: list[list[Image.Image]]) -> Image.Image:
    label_w, head_h = 70, 34
    grid = Image.new("RGB", (label_w + CELL * len(PROMPTS), head_h + CELL * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for j, prompt in enumerate(PROMPTS):
        draw.text((label_w + j * CELL + 4, 4), prompt[:20], fill="black")
    for i, (route, row) in enumerate(zip(routes, rows, strict=True)):
        draw.text((6, head_h + i * CELL + CELL // 2), route, fill="black")
        for j, img in enumerate(row):
            grid.paste(
                img.resize((CELL, CELL), Image.Resampling.NEAREST),
                (label_w + j * CELL, head_h + i * CELL),
            )
    return grid


if __name__ == "__main__":
    sys.exit(main())
