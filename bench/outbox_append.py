"""Outbox append cost per record at the group-commit default, for both durability settings.

    python bench/outbox_append.py [--records 200000] [--group 1000]

Appends digest-sized records (about 250 bytes of JSON) and commits every `--group` records,
as the gateway does (its default flushes every 100 ms or 1000 records). Prints µs per record
for append (numbering + serialising) and for commit (one SQLite transaction per group).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from gateway.outbox import Outbox

DIGEST = {
    "line": "line-1", "machine": "m-03", "window_start": 1.7e9, "window_end": 1.7e9 + 10,
    "count": 50, "vibration_rms": 2.31, "vibration_p95": 2.75, "vibration_mean": 2.29,
    "vibration_max": 2.9, "temperature_mean": 61.2, "temperature_max": 62.0, "current_mean": 12.1,
    "vibration_rms_z": 0.4, "ts": 1.7e9 + 10,
}  # fmt: skip


def run(records: int, group: int, durability: str) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        box = Outbox(Path(tmp) / "outbox.db", durability=durability)  # type: ignore[arg-type]
        append_s = commit_s = 0.0
        for start in range(0, records, group):
            t0 = time.perf_counter()
            for _ in range(min(group, records - start)):
                box.append("digest", "line-1/m-03", DIGEST)
            t1 = time.perf_counter()
            box.flush()
            commit_s += time.perf_counter() - t1
            append_s += t1 - t0
        size = (Path(tmp) / "outbox.db").stat().st_size + (
            Path(tmp) / "outbox.db-wal"
        ).stat().st_size
        box.close()
    return append_s / records * 1e6, commit_s / records * 1e6, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--group", type=int, default=1000)
    args = parser.parse_args()
    print("| durability | append µs/record | commit µs/record | total µs/record | records/s |")
    print("| --- | --- | --- | --- | --- |")
    for durability in ("normal", "full"):
        append_us, commit_us, _ = run(args.records, args.group, durability)
        total = append_us + commit_us
        print(
            f"| {durability} | {append_us:.2f} | {commit_us:.2f} | {total:.2f} | {1e6 / total:,.0f} |"
        )


if __name__ == "__main__":
    main()
