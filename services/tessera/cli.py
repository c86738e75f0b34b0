"""The ``tessera`` command line.

Server-side commands (data, train, eval, models, serve) live here; each component package
plugs in through a module exposing ``add_arguments(parser)`` and ``run(args) -> int``, so this
file only routes. Client commands (generate, submit, watch, …) come from the client SDK.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command group -> {name: module implementing add_arguments(parser) and run(args)}
COMMANDS: dict[str, dict[str, str]] = {
    "data": {
        "prepare": "tessera.data.commands",
    },
    "train": {
        "tokenizer": "tessera.tokenizer.train",
        "lm": "tessera.lm.train",
        "pixel": "tessera.pixel.train",
        "mixed": "tessera.mixed.train",
        "clip": "tessera.clip.train",
        "prior": "tessera.prior.train",
        "decoder": "tessera.decoder.train",
        "all": "tessera.bundle.train_all",
        "judge": "tessera.evaluation.judge",
    },
    "eval": {
        "tokenizer": "tessera.tokenizer.eval",
        "lm": "tessera.lm.eval",
        "pixel": "tessera.pixel.eval",
        "clip": "tessera.clip.eval",
        "prior": "tessera.prior.eval",
        "decoder": "tessera.decoder.eval",
        "bundle": "tessera.evaluation.bundle",
        "tokenizers": "tessera.evaluation.tokenizers",
    },
    "models": {
        "init": "tessera.bundle.random_init",
        "import": "tessera.imports.cli",
        "size": "tessera.imports.size_cli",
    },
    # A simulated autoscaling cluster on this machine (tessera/cluster/).
    "cluster": {name: "tessera.cluster.commands" for name in ("up", "down", "status", "kill-node")},
}
# single commands -> module
TOP_LEVEL: dict[str, str] = {
    "serve": "tessera.serve",
    # Client commands: thin wrappers over the SDK (clients/python, package tessera_client).
    **{
        name: f"tessera_client.commands.{name}"
        for name in (
            "generate",
            "variations",
            "edit",
            "caption",
            "submit",
            "status",
            "cancel",
            "watch",
            "tokenize",
            "embed",
        )
    },
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tessera", description="Tessera text-to-image platform")
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    for group, commands in COMMANDS.items():
        group_parser = groups.add_parser(group, help=f"{group} commands")
        subs = group_parser.add_subparsers(dest="command", required=True, metavar="WHAT")
        for name, module in commands.items():
            sub = subs.add_parser(name, help=f"{group} {name}")
            sub.set_defaults(_module=module, _command=name)
            _lazy_arguments(sub, module)
    for name, module in TOP_LEVEL.items():
        sub = groups.add_parser(name, help=name)
        sub.set_defaults(_module=module)
        _lazy_arguments(sub, module)
    return parser


def _lazy_arguments(parser: argparse.ArgumentParser, module: str) -> None:
    """Add a module's arguments only when its command is the one being parsed (keeps
    ``tessera --help`` fast: no torch import for commands not run)."""
    parser.set_defaults(_needs_args=module)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # First pass finds the command without its own options; --help waits for the second
    # pass, once the command's arguments are attached, so `tessera generate --help` lists them.
    first = [a for a in argv if a not in ("-h", "--help")]
    known, _ = parser.parse_known_args(first) if first else (None, None)
    if known is None or not hasattr(known, "_module"):
        parser.parse_args(argv)  # prints usage / errors
        return 2
    module = importlib.import_module(known._module)
    # Re-parse with the module's own arguments attached to its sub-parser.
    parser = build_parser()
    sub = _find_subparser(parser, argv)
    module.add_arguments(sub)
    args = parser.parse_args(argv)
    return int(module.run(args) or 0)


def _find_subparser(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    current = parser
    for token in argv:
        actions = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions or token not in actions[0].choices:
            break
        current = actions[0].choices[token]
    return current


if __name__ == "__main__":
    sys.exit(main())
