"""Logging for the roles: text for a terminal, JSON lines for a cluster's log pipeline.

A log collector (Loki, Fluent Bit, Elasticsearch) indexes fields, not sentences, so in a
cluster every record is one JSON object on one line, with ``time``, ``level``, ``logger`` and
``msg``, plus the fields an operator filters on (:data:`FIELDS`: service, ip, node, pool,
interface) when the call passes them, e.g.
``log.warning("...", ip, extra=logs.fields(ip=ip, node=node))``. The text format shows the
same fields after the message, so both formats carry the same facts.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Final, Literal

Format = Literal["text", "json"]
Level = Literal["debug", "info", "warning", "error"]

FIELDS: Final = ("service", "ip", "node", "pool", "interface")
"""The fields a record may carry besides its message; the only ``extra=`` keys logged."""

QUIET: Final = {"httpx2": logging.WARNING}
"""Libraries that log one INFO line per request otherwise."""


def fields(
    *,
    service: object = None,
    ip: object = None,
    node: object = None,
    pool: object = None,
    interface: object = None,
) -> dict[str, str]:
    """The ``extra=`` mapping for a log call: the given fields, as strings."""
    given = {"service": service, "ip": ip, "node": node, "pool": pool, "interface": interface}
    return {name: str(value) for name, value in given.items() if value is not None}


def configure(*, level: Level = "info", fmt: Format = "text") -> None:
    """Send every record at `level` and above to stderr, formatted as `fmt`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    for name, quiet in QUIET.items():
        logging.getLogger(name).setLevel(quiet)


class TextFormatter(logging.Formatter):
    """``TIME LEVEL logger: message key=value ...``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = " ".join(f"{name}={value}" for name, value in _fields(record).items())
        return f"{text} {extra}" if extra else text


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback goes in ``exc``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, str] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _fields(record: logging.LogRecord) -> dict[str, str]:
    return {name: str(record.__dict__[name]) for name in FIELDS if name in record.__dict__}
