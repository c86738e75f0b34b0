"""The MiniLM encodings of every prompt the in-process benchmarks condition on.

The benchmarks encode their fixed prompts with the packaged MiniLM (``TextEncoder``, on the
CPU, as serving does). A machine without that 90 MB wheel (a GPU box filled from a 64 MB
working tree, say) can read the same rows from a file written where it is installed:

    python -m benchmarks.texts --out .bench/texts.safetensors          # here, with MiniLM
    python -m benchmarks.run --profile gpu --text-states .bench/texts.safetensors ...

The rows are what ``TextEncoder.encode`` returns for each text (each text's states depend
only on the text), so a batch stacked from the file equals the encoder's batch exactly.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tessera.common.text_encoder import TextBatch

# Rows read from a file, by text; empty unless ``load`` ran.
_LOADED: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def bench_prompts() -> list[str]:
    """Every text the in-process parts encode (batching, the KV-cache grid, decoder quality)."""
    from benchmarks import batching, decoder_quality

    return list(dict.fromkeys([*batching.PROMPTS, *decoder_quality.PROMPTS, "grinning face"]))


def encode(prompts: list[str]) -> TextBatch:
    """(B, 32, 384) states, mask and pooled rows for ``prompts``, on the CPU: from the loaded
    file when it holds every prompt, else from the packaged MiniLM."""
    if _LOADED and all(p in _LOADED for p in prompts):
        rows = [_LOADED[p] for p in prompts]
        states, mask, pooled = (torch.stack(parts) for parts in zip(*rows, strict=True))
        return TextBatch(states=states, mask=mask, pooled=pooled)
    from tessera.common.text_encoder import shared_text_encoder

    return shared_text_encoder("cpu").encode(list(prompts))


def save(path: Path, prompts: list[str]) -> None:
    """Encode ``prompts`` with MiniLM and write the rows (safetensors; prompts in metadata)."""
    text = encode(prompts)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"states": text.states, "mask": text.mask, "pooled": text.pooled}
    save_file(tensors, str(path), metadata={"prompts": json.dumps(prompts)})


def load(path: Path) -> int:
    """Read a file ``save`` wrote; later ``encode`` calls take their rows from it. -> rows."""
    with safe_open(str(path), framework="pt") as f:  # one read: metadata and tensors
        prompts = json.loads(f.metadata()["prompts"])
        states, mask, pooled = (f.get_tensor(n) for n in ("states", "mask", "pooled"))
    for i, p in enumerate(prompts):
        _LOADED[p] = (states[i], mask[i], pooled[i])
    return len(prompts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    prompts = bench_prompts()
    save(args.out, prompts)
    print(f"{len(prompts)} prompts -> {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
