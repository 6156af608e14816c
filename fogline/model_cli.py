"""`fogline model`: look inside a model, make labelled data, choose its threshold from numbers.

    fogline model info models/factory-vibration.tflite
    fogline model dataset factory --seed 9 --out factory-9.csv
    fogline model calibrate models/factory-vibration.tflite --data factory-9.csv \\
        --cloud models/factory-vibration-cloud.tflite
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from fogline.calibration import TOLERANCE
from fogline.clihelp import command

DEMOS = ("factory", "farm")


def add_parser(sub: Any) -> None:
    model = command(
        sub,
        "model",
        "inspect models, make labelled data, calibrate",
        "fogline model info models/factory-vibration.tflite",
    )
    msub = model.add_subparsers(dest="model_command", required=True)
    info = command(
        msub,
        "info",
        "what a model says about itself: inputs in order, labels, escalation threshold",
        "fogline model info models/factory-vibration.tflite",
    )
    info.add_argument("model", type=Path, help="a Fogline .tflite file")
    data = command(
        msub,
        "dataset",
        "labelled feature windows from a demo fleet through its pipeline (CSV)",
        "fogline model dataset factory --seed 9 --out f9.csv",
    )
    data.add_argument("demo", choices=DEMOS, help="which demo fleet and pipeline")
    data.add_argument("--seed", type=int, default=9, help="fleet and fault seed (default: 9)")
    data.add_argument("--hours", type=float, help="simulated hours (default: the demo's)")
    data.add_argument("--devices", type=int, help="fleet size (default: 48)")
    data.add_argument("--out", type=Path, required=True, help="CSV file to write")
    cal = command(
        msub,
        "calibrate",
        "local-exit rate and accuracy for each escalation threshold",
        "fogline model calibrate models/factory-vibration.tflite --data f9.csv \\\n"
        "    --cloud models/factory-vibration-cloud.tflite",
    )
    cal.add_argument("model", type=Path, help="the edge model")
    cal.add_argument("--data", type=Path, required=True, help="CSV: the model's inputs + label")
    cal.add_argument("--cloud", type=Path, help="the cloud model that decides escalations")
    cal.add_argument(
        "--tolerance",
        type=float,
        default=TOLERANCE,
        help=f"how far below the best joint accuracy the chosen one may be (default: {TOLERANCE})",
    )


def run(args: argparse.Namespace) -> int:
    from fogline.model import Model, ModelError  # noqa: PLC0415

    try:
        if args.model_command == "info":
            return _info(Model.from_file(args.model))
        if args.model_command == "dataset":
            return _dataset(args)
        edge = Model.from_file(args.model)
        cloud = Model.from_file(args.cloud) if args.cloud else None
        return _calibrate(edge, cloud, args.data, args.tolerance)
    except BrokenPipeError:
        raise  # the reader left: `fogline.cli.main` ends quietly
    except (ModelError, ValueError, OSError) as exc:
        print(f"fogline model {args.model_command}: {exc}", file=sys.stderr)
        return 1


def _info(model: Any) -> int:
    info = model.info
    print(f"{info.name} version {info.version} ({info.quantized}, {info.size} bytes)")
    print(f"  sha256     {info.sha256}")
    print(f"  labels     {', '.join(info.labels)}")
    print(f"  threshold  {info.escalate_above if info.escalate_above is not None else 'none'}")
    print("  inputs, in order:")
    for i, name in enumerate(info.inputs):
        print(f"    {i}  {name}")
    return 0


def _dataset(args: argparse.Namespace) -> int:
    from devices.dataset import TASKS, conditions, dataset, write_csv  # noqa: PLC0415

    logging.getLogger("fogline.devices").setLevel(logging.WARNING)  # simulated stops
    task = TASKS[args.demo]
    hours = args.hours or task.hours
    site, rate = conditions(args.seed)
    print(
        f"simulating {hours:g} h of the {args.demo} fleet (seed {args.seed}, site {site.name},"
        f" {rate:g}x the demo's rate)...",
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    rows, labels = dataset(task, args.seed, hours=hours, devices=args.devices)
    write_csv(args.out, task, rows, labels)
    counts = ", ".join(f"{name} {int((labels == i).sum())}" for i, name in enumerate(task.labels))
    print(
        f"wrote {len(rows)} windows ({counts}) to {args.out} in {time.perf_counter() - t0:.0f} s",
        file=sys.stderr,
    )
    return 0


def _calibrate(edge: Any, cloud: Any, data: Path, tolerance: float) -> int:
    from devices.dataset import read_csv  # noqa: PLC0415
    from fogline.calibration import choose, sweep, table  # noqa: PLC0415

    if cloud is not None and (cloud.info.labels != edge.info.labels):
        raise ValueError(
            f"the cloud model's labels {list(cloud.info.labels)} differ from the edge "
            f"model's {list(edge.info.labels)}"
        )
    rows, labels = read_csv(data, edge.info.inputs, edge.info.labels)
    if not len(rows):
        raise ValueError(f"{data}: no rows")
    cloud_probs = None if cloud is None else cloud.predict(_reorder(rows, edge, cloud))
    result = sweep(edge.predict(rows), labels, cloud_probs)
    chosen = choose(result, tolerance)
    print(f"{result.n} windows from {data}; edge alone {result.edge_accuracy:.2%}", end="")
    if result.cloud_accuracy is not None:
        print(f", cloud alone {result.cloud_accuracy:.2%}", end="")
    print()
    print(table(result, chosen))
    print(
        f"\nescalate_above: {chosen.threshold:g} decides {chosen.local:.1%} at the edge with "
        f"{chosen.joint_accuracy:.2%} joint accuracy (the model carries "
        f"{edge.info.escalate_above})"
    )
    return 0


def _reorder(rows: Any, edge: Any, cloud: Any) -> Any:
    """Rows in the edge model's input order, rearranged for the cloud model's."""
    index = {name: i for i, name in enumerate(edge.info.inputs)}
    missing = [name for name in cloud.info.inputs if name not in index]
    if missing:
        raise ValueError(f"the cloud model needs inputs the edge does not have: {missing}")
    return rows[:, [index[name] for name in cloud.info.inputs]]
