"""What the client commands share: connection and generation options, the client they make,
exit codes, writing images, printing JSON and the progress bar."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tessera_client import _wire, errors
from tessera_client._limits import (
    MAX_CANDIDATES,
    MAX_GUIDANCE,
    MAX_IMAGES_PER_REQUEST,
    MAX_PIXEL_TOP_K,
    MAX_PROMPT_CHARS,
    MAX_STEPS,
    MAX_TEMPERATURE,
    MAX_TOP_K,
    MIN_TEMPERATURE,
    MIN_TOP_P,
)
from tessera_client.client import DEFAULT_TIMEOUT, Client
from tessera_client.types import Images, Job, ProgressEvent

# Exit codes scripts can rely on.
EXIT_OK = 0
EXIT_ERROR = 1  # anything else: auth, server bug, local I/O
EXIT_USAGE = 2  # bad arguments (argparse) or the server rejected the request as invalid
EXIT_NOT_FOUND = 3  # unknown job, model or endpoint
EXIT_UNAVAILABLE = 4  # rate limited, unavailable or timed out, after the retries
EXIT_JOB_FAILED = 5  # the job failed or was cancelled


def exit_code(error: BaseException) -> int:
    usage = (errors.InvalidRequest, errors.ConflictError, FileNotFoundError, IsADirectoryError)
    if isinstance(error, usage):
        return EXIT_USAGE
    if isinstance(error, errors.NotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(error, errors.RateLimited | errors.Unavailable | errors.DeadlineExceeded):
        return EXIT_UNAVAILABLE
    if isinstance(error, errors.JobFailed | errors.Cancelled):
        return EXIT_JOB_FAILED
    return EXIT_ERROR


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--url",
        default=None,
        help="HTTP base URL (default: $TESSERA_URL or http://127.0.0.1:8000)",
    )
    group.add_argument("--grpc", action="store_true", help="call over gRPC instead of HTTP")
    group.add_argument(
        "--grpc-target",
        default=None,
        help="gRPC host:port (default: $TESSERA_GRPC_TARGET or 127.0.0.1:9000)",
    )
    group.add_argument("--api-key", default=None, help="API key (default: $TESSERA_API_KEY)")
    group.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds per call, retries included (default: %(default)s)",
    )
    group.add_argument(
        "--retries",
        type=int,
        default=3,
        help="retries on 429/503/unavailable (default: %(default)s)",
    )


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id")
    parser.add_argument("--json", action="store_true", help="print the job as JSON")


def add_prompt_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help=f"text prompt, 1..{MAX_PROMPT_CHARS} characters")


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per ``GenerateRequest`` field (a test checks none is missing)."""
    group = parser.add_argument_group("generation")
    group.add_argument(
        "--route", choices=["ar", "unclip", "pixel", "mixed"], default=None, help="default: ar"
    )
    add_image_arguments(group, "images")
    group.add_argument(
        "--temperature",
        type=float,
        default=None,
        help=f"ar, pixel: [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}]",
    )
    group.add_argument(
        "--top-k",
        type=int,
        default=None,
        help=f"ar 0..{MAX_TOP_K}, pixel 0..{MAX_PIXEL_TOP_K}; 0 = off",
    )
    group.add_argument("--top-p", type=float, default=None, help=f"ar, pixel: [{MIN_TOP_P:g}, 1]")
    group.add_argument(
        "--candidates",
        type=int,
        default=None,
        help=f"ar, 1..{MAX_CANDIDATES}: sampled per image, CLIP keeps one",
    )


def add_image_arguments(parser: argparse._ActionsContainer, what: str) -> None:
    """The options generations and variations share (to a parser or an argument group)."""
    parser.add_argument(
        "-n", "--n", type=int, default=None, help=f"{what}, 1..{MAX_IMAGES_PER_REQUEST}"
    )
    parser.add_argument("--size", default=None, metavar="WxH", help="native or an integer upscale")
    parser.add_argument("--seed", type=int, default=None, help="image i uses seed + i")
    parser.add_argument("--guidance-scale", type=float, default=None, help=f"[0, {MAX_GUIDANCE:g}]")
    parser.add_argument(
        "--steps", type=int, default=None, help=f"unclip denoising steps, 1..{MAX_STEPS}"
    )
    parser.add_argument("--model", default=None, help="bundle name (default: the served one)")


def options(args: argparse.Namespace, names: tuple[str, ...] = _wire.GENERATION_FIELDS) -> dict:
    """The generation options the user set (unset ones stay the server's defaults)."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def make_client(args: argparse.Namespace) -> Client:
    return Client(
        args.url or os.environ.get("TESSERA_URL") or None,
        transport="grpc" if args.grpc else "http",
        grpc_target=args.grpc_target,
        api_key=args.api_key,
        timeout=args.timeout,
        max_retries=args.retries,
    )


def guarded(body: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command body; API and file errors become one stderr line and an exit code."""
    try:
        return body(args)
    except errors.TesseraAPIError as e:
        print(f"tessera: error: {e}", file=sys.stderr)
        return exit_code(e)
    except (FileNotFoundError, IsADirectoryError) as e:
        print(f"tessera: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        print(f"tessera: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def write_images(images: Images, out: str | Path) -> None:
    """PNGs as out.png, out-1.png, … — each path on its own stdout line."""
    for path in images.save(out):
        print(path)


def print_json(data: Any, out: str | None = None) -> None:
    text = json.dumps(data, indent=None if out is None else 2)
    if out is None:
        print(text)
    else:
        Path(out).write_text(text + "\n")
        print(out)


def describe_job(job: Job) -> str:
    p = job.progress
    where = f", {p.stage} {p.step}/{p.total_steps}" if p.stage and p.total_steps else ""
    error = f": {job.error}" if job.error else ""
    return f"job {job.id}: {job.state}{where} (attempts {job.attempts}){error}"


def job_json(job: Job) -> dict:
    """A job for printing: images as a count, not base64."""
    data = job.model_dump(mode="json", exclude={"result"})
    if job.result is not None:
        data["result"] = {
            "images": len(job.result.png_bytes),
            "seed": job.result.seed,
            "route": job.result.route,
            "model": job.result.model,
        }
    return data


def show_job(job: Job, *, as_json: bool, output: str | None = None) -> None:
    """Print a job (a line, or JSON); write a finished job's images to ``output``."""
    if as_json:
        print_json(job_json(job))
    else:
        print(describe_job(job))
    if output and job.result is not None:
        write_images(job.result, output)


def job_exit_code(job: Job) -> int:
    return EXIT_JOB_FAILED if job.state in ("failed", "cancelled") else EXIT_OK


class ProgressBar:
    """A tqdm bar per stage (queue, lm, decoder, …) showing step counts, on stderr."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.stage: str | None = None

    def update(self, event: ProgressEvent) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        stage = event.progress.stage or event.state or "waiting"
        total = event.progress.total_steps or None
        if self.bar is None or stage != self.stage or total != self.bar.total:
            self.close()
            self.bar = tqdm(total=total, desc=stage, unit="step", file=sys.stderr, leave=True)
            self.stage = stage
        self.bar.n = event.progress.step
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
