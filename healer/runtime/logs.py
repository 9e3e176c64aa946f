"""structlog setup: JSON lines for machines (the default), console for people.

Every log call in healer is a key-value event (`log.info("cordoned", node=name)`), so one
renderer switch here is all it takes to feed Loki or read it at a terminal.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure(*, fmt: str = "json", level: int = logging.INFO) -> None:
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
