"""One logging setup for every Tessera process (plain or JSON lines, level from settings)."""

from __future__ import annotations

import json
import logging
import sys

from tessera.common.settings import get_settings


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str | None = None) -> None:
    """Configure the ``tessera`` logger once (idempotent)."""
    settings = get_settings()
    logger = logging.getLogger("tessera")
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level or settings.log_level)
    logger.propagate = False
