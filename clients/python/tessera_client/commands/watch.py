"""``tessera watch JOB_ID``: a progress bar with step counts until the job ends (exit 0 when
it succeeded, 5 when it failed or was cancelled)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tessera_client.client import Client
from tessera_client.commands import _common
from tessera_client.types import numbered_paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id")
    parser.add_argument("-o", "--output", default=None, help="write the images here when done")
    parser.add_argument("--previews", default=None, metavar="DIR", help="save preview PNGs here")
    parser.add_argument("--json", action="store_true", help="print the final job as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    _common.add_connection_arguments(parser)


def follow(
    client: Client,
    job_id: str,
    *,
    output: str | None = None,
    previews: str | None = None,
    as_json: bool = False,
    progress: bool = True,
) -> int:
    """Stream a job to its end with a progress bar; print it; write its images."""
    bar = _common.ProgressBar(progress)
    job, saved = None, 0
    try:
        for event in client.stream(job_id):
            bar.update(event)
            if previews and event.preview_png_bytes:
                step = f"{event.progress.stage}-{event.progress.step:04d}"
                for path, data in zip(
                    numbered_paths(Path(previews) / f"{step}.png", len(event.preview_png_bytes)),
                    event.preview_png_bytes,
                    strict=True,
                ):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(data)
                    saved += 1
            if event.done:
                job = event.job
    finally:
        bar.close()
    job = job or client.job(job_id)
    _common.show_job(job, as_json=as_json, output=output)
    return _common.job_exit_code(job)


def _run(args: argparse.Namespace) -> int:
    with _common.make_client(args) as client:
        return follow(
            client,
            args.job_id,
            output=args.output,
            previews=args.previews,
            as_json=args.json,
            progress=not args.no_progress,
        )


def run(args: argparse.Namespace) -> int:
    return _common.guarded(_run, args)
