"""The Prometheus text format, written by hand: our counters are plain ints, and a client
library's per-increment locking would cost more than the work they count."""

from __future__ import annotations

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

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
