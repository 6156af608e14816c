"""The Prometheus text format, written by hand: our counters are plain ints, and a client
library's per-increment locking would cost more than the work they count."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]


class Exposition:
    """Metric families appended one by one, then `text()` for a scrape."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_: str, rows: dict[Labels, float]) -> None:
        full = f"{self.prefix}{name}"
        self.lines.append(f"# HELP {full} {help_}")
        self.lines.append(f"# TYPE {full} {kind}")
        for labels, value in rows.items():
            text = ",".join(f'{k}="{escape(v)}"' for k, v in labels)
            self.lines.append(f"{full}{{{text}}} {value}" if text else f"{full} {value}")

    def histogram(self, name: str, help_: str, hist: Histogram) -> None:
        full = f"{self.prefix}{name}"
        self.lines.append(f"# HELP {full} {help_}")
        self.lines.append(f"# TYPE {full} histogram")
        running = 0
        for bound, n in zip(hist.bounds, hist.counts, strict=False):
            running += n
            self.lines.append(f'{full}_bucket{{le="{bound}"}} {running}')
        self.lines.append(f'{full}_bucket{{le="+Inf"}} {hist.count}')
        self.lines.append(f"{full}_sum {round(hist.sum, 6)}")
        self.lines.append(f"{full}_count {hist.count}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass
class Histogram:
    """Observations counted into buckets (upper bounds, ascending): a bisect and two adds."""

    bounds: tuple[float, ...]
    counts: list[int] = field(init=False)
    sum: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1
