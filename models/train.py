"""Train, quantize, calibrate and document the demo models (needs `pip install -e .[train]`).

    python models/train.py                 # both demos
    python models/train.py --demo factory  # one

Per demo (`devices.dataset.TASKS`): labelled feature windows come from the demo fleet run
through the demo pipeline, on seeds of their own for training, validation and test. Two
models are trained on the same inputs:

- the edge model, a small MLP quantized to full int8 inside with float32 input and output
  (post-training quantization on a representative sample of the training rows), and, for
  tests and runtimes without float kernels, the same model with int8 input and output;
- the cloud model, a larger float32 MLP that decides what the edge escalates.

The escalation threshold is chosen on the validation seed (`fogline.calibration.choose`),
and everything is reported on the test seeds, through the LiteRT runtime the gateway uses:
the numbers go into the model's own metadata (`evaluation`) and into `models/<name>.md`.
Standardization constants and the threshold travel inside the .tflite file.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devices.dataset import TASKS, Task, conditions, dataset  # noqa: E402
from fogline.calibration import accuracy, choose, confusion, sweep, table  # noqa: E402
from fogline.model import Model, normalized_entropy, with_metadata  # noqa: E402

TRAIN_SEEDS = tuple(range(101, 117))
VALIDATION_SEED = 201
TEST_SEEDS = (301, 302, 303)
CLIP = 6.0  # z-scores beyond +-6 are clipped: spikes must not set the int8 input range
EDGE_LAYERS = (16, 16)
CLOUD_LAYERS = (96, 96, 48)

Rows = NDArray[np.float32]
Labels = NDArray[np.int64]


def log(text: str) -> None:
    print(text, flush=True)


def _one(task: Task, seed: int) -> tuple[Rows, Labels, float]:
    t0 = time.perf_counter()
    rows, labels = dataset(task, seed)
    return rows, labels, time.perf_counter() - t0


def windows(task: Task, seeds: tuple[int, ...], jobs: int) -> tuple[Rows, Labels]:
    """Each seed's run in a process of its own (a run is single-threaded simulation)."""
    parts = []
    with ProcessPoolExecutor(jobs) as pool:
        for seed, (rows, labels, took) in zip(
            seeds, pool.map(_one, [task] * len(seeds), seeds), strict=True
        ):
            site, rate = conditions(seed)
            counts = np.bincount(labels, minlength=len(task.labels)).tolist()
            log(
                f"  seed {seed} ({site.name}, {rate:g}x rate): {len(rows)} windows {counts}"
                f" in {took:.0f} s"
            )
            parts.append((rows, labels))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def build(
    tf: Any, inputs: int, classes: int, layers: tuple[int, ...], seed: int, dropout: float = 0.0
) -> Any:
    tf.keras.utils.set_random_seed(seed)
    x = inp = tf.keras.Input((inputs,), name="features")
    for width in layers:
        x = tf.keras.layers.Dense(width, activation="relu")(x)
        if dropout:
            x = tf.keras.layers.Dropout(dropout)(x)
    out = tf.keras.layers.Dense(classes, activation="softmax", name="probabilities")(x)
    model = tf.keras.Model(inp, out)
    model.compile(
        tf.keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    return model


def fit(tf: Any, model: Any, train: tuple[Rows, Labels], val: tuple[Rows, Labels]) -> None:
    counts = np.bincount(train[1], minlength=model.output_shape[-1]).astype(float)
    # Square-root balancing: faults are rare, but not as rare as to be ignored.
    weights = {i: float(np.sqrt(counts.max() / max(c, 1.0))) for i, c in enumerate(counts)}
    stop = tf.keras.callbacks.EarlyStopping(patience=8, restore_best_weights=True)
    model.fit(
        train[0],
        train[1],
        validation_data=val,
        epochs=120,
        batch_size=256,
        class_weight=weights,
        callbacks=[stop],
        verbose=0,
    )


def convert(tf: Any, model: Any, sample: Rows, *, int8: bool, int8_io: bool = False) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([row[None, :]] for row in sample)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    data: bytes = converter.convert()
    return data


def card(task: Task, meta: dict[str, Any], files: dict[str, bytes]) -> str:
    ev = meta["evaluation"]
    labels = task.labels
    lines = [
        f"# {task.name}",
        "",
        f"Classifies each {task.demo.name} window (the `{task.step}` step of "
        f"`pipelines/{task.demo.name}.yaml`) as {', '.join(f'`{x}`' for x in labels)}. "
        "Trained by `models/train.py` on the demo fleet's own signal generators, through the "
        "demo pipeline; every number below was measured by that script on seeds it did not "
        "train on, through the LiteRT runtime the gateway uses. Each seed runs at a site "
        "drawn at random (`seed:3000+seed` in `devices/sites.py`: other machines, soils, "
        "lines, sensors) and at half, once or twice the demo's sampling rate. Faults come at "
        "random strengths, from incipient (10 %) to full-grown, and windows are labelled "
        "with the fault that covers most of them from when it shows (its effect exceeds "
        "twice the device's normal spread) until the device is itself again (a dried-out "
        "plot stays dry until water comes back): the hard cases are weak faults.",
        "",
        "**Simulated data only.** Every window here comes from `devices/`, none from a real "
        "machine or plot. The evaluation matrix (`bench/detection.py`, docs/benchmarks.md) "
        "runs the model on other sites drawn at random and reports its per-window precision "
        "per class there; the pipeline confirms its answers against each device's own "
        "baseline before alerting. Before trusting it at a site, record a few days of "
        "healthy windows there and check the share the model calls `normal`, and compare its "
        "fault answers with what maintenance finds.",
        "",
        "## Inputs, in order",
        "",
        "| # | field | mean | std |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {i} | `{name}` | {m:.4g} | {s:.4g} |"
        for i, (name, m, s) in enumerate(zip(task.inputs, meta["mean"], meta["std"], strict=True))
    ]
    lines += [
        "",
        f"Standardized inside Fogline with these constants and clipped to ±{CLIP:g}, which the "
        ".tflite file carries in its `fogline` metadata along with the labels and the "
        "threshold.",
        "",
        "## Files",
        "",
        "| file | what | bytes |",
        "| --- | --- | --- |",
    ]
    lines += [f"| `models/{name}` | {what} | {len(files[name])} |" for name, what in ev["files"]]
    s = ev["test"]
    lines += [
        "",
        f"## Accuracy (test seeds {', '.join(map(str, ev['test_seeds']))}: {s['windows']} windows)",
        "",
        "| model | accuracy |",
        "| --- | --- |",
        f"| edge, float (before quantization) | {s['edge_float']:.2%} |",
        f"| edge, int8 | {s['edge_int8']:.2%} |",
        f"| cloud, float | {s['cloud']:.2%} |",
        f"| edge + cloud at the threshold | {s['joint']:.2%} |",
        "",
        "Confusion matrix of the int8 edge model (rows: truth, columns: prediction):",
        "",
        "| truth \\ predicted | " + " | ".join(labels) + " |",
        "| --- | " + " | ".join("---" for _ in labels) + " |",
    ]
    lines += [
        f"| {label} | " + " | ".join(str(v) for v in row) + " |"
        for label, row in zip(labels, s["confusion_edge"], strict=True)
    ]
    lines += [
        "",
        "## Early exit",
        "",
        f"Threshold `escalate_above: {meta['escalate_above']}` on the normalized entropy, "
        f"chosen on validation seed {ev['validation_seed']}: the most windows decided at the "
        "edge while edge + cloud stays within 0.2 points of the best joint accuracy (or of "
        "the cloud alone, if higher). On the test "
        f"seeds, **{s['local']:.1%} of windows are decided at the edge**; the rest are "
        "escalated.",
        "",
        "```",
        s["table"],
        "```",
        "",
    ]
    return "\n".join(lines)


def train(task: Task, out: Path, version: str, jobs: int) -> None:
    import tensorflow as tf  # noqa: PLC0415

    log(f"== {task.name}: training data")
    train_rows, train_labels = windows(task, TRAIN_SEEDS, jobs)
    log("== validation and test data")
    val = windows(task, (VALIDATION_SEED,), jobs)
    test = windows(task, TEST_SEEDS, jobs)
    mean = train_rows.mean(axis=0)
    std = train_rows.std(axis=0)
    std[std == 0] = 1.0

    def z(rows: Rows) -> Rows:
        return np.clip((rows - mean) / std, -CLIP, CLIP).astype(np.float32)

    log("== fitting the edge and cloud models")
    n_in, n_out = len(task.inputs), len(task.labels)
    edge = build(tf, n_in, n_out, EDGE_LAYERS, 1)
    fit(tf, edge, (z(train_rows), train_labels), (z(val[0]), val[1]))
    cloud = build(tf, n_in, n_out, CLOUD_LAYERS, 2, dropout=0.2)
    fit(tf, cloud, (z(train_rows), train_labels), (z(val[0]), val[1]))

    rng = np.random.default_rng(0)
    sample = z(train_rows[rng.choice(len(train_rows), min(2000, len(train_rows)), replace=False)])
    base = {
        "name": task.name,
        "version": version,
        "inputs": list(task.inputs),
        "labels": list(task.labels),
        "mean": [round(float(v), 6) for v in mean],
        "std": [round(float(v), 6) for v in std],
        "clip": CLIP,
    }
    names = {
        "edge": f"{task.name}.tflite",
        "int8io": f"{task.name}-int8io.tflite",
        "cloud": f"{task.name}-cloud.tflite",
    }
    raw = {
        "edge": convert(tf, edge, sample, int8=True),
        "int8io": convert(tf, edge, sample, int8=True, int8_io=True),
        "cloud": convert(tf, cloud, sample, int8=False),
    }

    def runtime(kind: str, meta: dict[str, Any]) -> Model:
        return Model(with_metadata(raw[kind], meta), source=names[kind])

    log("== calibrating the threshold on the validation seed")
    plain = {k: runtime(k, base) for k in raw}
    calibration = sweep(plain["edge"].predict(val[0]), val[1], plain["cloud"].predict(val[0]))
    chosen = choose(calibration)
    log(table(calibration, chosen))

    edge_p = plain["edge"].predict(test[0])
    cloud_p = plain["cloud"].predict(test[0])
    result = sweep(edge_p, test[1], cloud_p, (chosen.threshold,))
    at = result.points[0]
    full = sweep(edge_p, test[1], cloud_p)
    evaluation = {
        "train_seeds": list(TRAIN_SEEDS),
        "validation_seed": VALIDATION_SEED,
        "test_seeds": list(TEST_SEEDS),
        "files": [
            (names["edge"], "edge model: int8 inside, float32 input and output"),
            (names["int8io"], "the same edge model with int8 input and output"),
            (names["cloud"], "cloud model: float32, decides escalations"),
        ],
        "test": {
            "windows": len(test[1]),
            "edge_float": accuracy(edge.predict(z(test[0]), verbose=0), test[1]),
            "edge_int8": accuracy(edge_p, test[1]),
            "cloud": accuracy(cloud_p, test[1]),
            "joint": at.joint_accuracy,
            "local": at.local,
            "confusion_edge": confusion(edge_p, test[1], n_out),
            "confusion_cloud": confusion(cloud_p, test[1], n_out),
            "mean_entropy": float(normalized_entropy(edge_p).mean()),
            "table": table(full, at),
        },
    }
    edge_meta = {**base, "escalate_above": chosen.threshold, "kind": "edge"}
    files = {
        names["edge"]: with_metadata(raw["edge"], {**edge_meta, "evaluation": evaluation}),
        names["int8io"]: with_metadata(raw["int8io"], {**edge_meta, "kind": "edge int8 I/O"}),
        names["cloud"]: with_metadata(raw["cloud"], {**base, "kind": "cloud"}),
    }
    for name, data in files.items():
        Model(data, source=name).self_test()
        (out / name).write_bytes(data)
        log(f"   wrote models/{name} ({len(data)} bytes)")
    (out / f"{task.name}.md").write_text(card(task, edge_meta | {"evaluation": evaluation}, files))
    t = evaluation["test"]
    log(
        f"== {task.name}: edge int8 {t['edge_int8']:.2%}, cloud {t['cloud']:.2%}, "
        f"joint {t['joint']:.2%} with {t['local']:.1%} decided at the edge"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", choices=[*TASKS, "all"], default="all")
    parser.add_argument("--version", default="1", help="version written into the models")
    parser.add_argument("--out", type=Path, default=ROOT / "models")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs at once")
    args = parser.parse_args()
    try:
        import tensorflow  # noqa: F401, PLC0415
    except ImportError:
        print("training needs TensorFlow: pip install -e '.[train]'", file=sys.stderr)
        return 2
    for name in TASKS if args.demo == "all" else [args.demo]:
        train(TASKS[name], args.out, args.version, args.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
