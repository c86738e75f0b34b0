"""``tessera models size [BUNDLE] [--published]``: memory (fp32 / fp16 / bf16) and FLOPs per
deployment of an imported Kandinsky 2.2 bundle, from its configs (nothing loaded), and the
Serve options a GPU profile gives its deployments (``tessera.imports.sizing``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, nargs="?", help="an imported Kandinsky bundle")
    parser.add_argument(
        "--published", action="store_true", help="the published Kandinsky 2.2 sizes instead"
    )
    parser.add_argument("--image-size", type=int, default=None, help="served side in pixels")
    parser.add_argument("--gpu-gib", type=float, default=80.0, help="memory of one GPU")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp16")


def run(args: argparse.Namespace) -> int:
    from tessera.common.checkpoint import read_bundle_index
    from tessera.imports.sizing import PUBLISHED, bundle_configs, estimate, gpu_options
    from tessera.routes.served import bundle_slug

    if args.published:
        configs, side, name = PUBLISHED, 768, "kandinsky-2-2"
    elif args.bundle is not None:
        configs, side = bundle_configs(args.bundle)
        name = read_bundle_index(args.bundle).get("name", args.bundle.resolve().name)
    else:
        print("name a bundle or pass --published")
        return 2
    sizes = estimate(configs, args.image_size or side)
    head = ("deployment", "params", "fp32 GiB", "fp16 GiB", "bf16 GiB")
    print(f"{head[0]:<12} {head[1]:>14} {head[2]:>9} {head[3]:>9} {head[4]:>9} GFLOP/row")
    for deployment, s in sizes.items():
        m = s["memory_gib"]
        print(
            f"{deployment:<12} {s['params']:>14,} {m['fp32']:>9} {m['fp16']:>9} {m['bf16']:>9} "
            f"{s['gflops_per_row']}"
        )
    options = gpu_options(sizes, args.dtype, args.gpu_gib)
    deployments = [
        {"name": f"{deployment}-{bundle_slug(name)}", **opts}
        for deployment, opts in options.items()
    ]
    print(
        f"# Serve options for {name} beside the default bundle ({args.dtype}, one GPU of "
        f"{args.gpu_gib:g} GiB): add to the application's deployments"
    )
    print(json.dumps(deployments, indent=2))
    return 0
