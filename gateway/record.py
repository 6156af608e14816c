"""The unit that flows through a pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Record:
    """One reading (or window summary, or alert) for one key at one event time.

    `key` is computed once at the source from the pipeline's key fields, so keyed
    operators never rebuild it; `fields` holds everything else, key fields included.
    """

    key: tuple[str, ...]
    ts: float
    fields: dict[str, Any]
