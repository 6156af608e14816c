"""Models are untrusted bytes: loaded and timed in a limited child, never crashing us."""

from __future__ import annotations

import asyncio
import os
import random
import sys
from pathlib import Path

import pytest

from fogline.model import ModelError
from fogline.sandbox import Limits, check, check_async

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hostile import slow_model

ROOT = Path(__file__).resolve().parents[2]
FACTORY = (ROOT / "models" / "factory-vibration.tflite").read_bytes()
CORPUS = sorted((ROOT / "tests" / "corpus" / "models").glob("*.tflite"))
MUTATIONS = int(os.environ.get("FOGLINE_MODEL_MUTATIONS", "16"))


def test_a_good_model_passes_with_its_measured_cost() -> None:
    verdict = check(FACTORY)
    assert (verdict.name, verdict.version) == ("factory-vibration", "3")
    assert 0 < verdict.batch_seconds < Limits().budget_seconds
    assert 0 < verdict.peak_rss_bytes < Limits().memory_bytes


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_the_crash_corpus_is_refused_and_the_caller_survives(path: Path) -> None:
    """Each file segfaulted the process that loaded it (issue 9)."""
    with pytest.raises(ModelError) as info:
        check(path.read_bytes())
    assert str(info.value) == (
        "the runtime crashed on the model (SIGSEGV): damaged or needed more than 512 MiB"
    )


def test_the_corpus_is_there() -> None:
    assert len(CORPUS) >= 3


def test_a_model_slower_than_the_budget_is_refused() -> None:
    """TILE -> RESHAPE -> MEAN in front of a real network: valid, and 2000x slower."""
    with pytest.raises(ModelError) as info:
        check(slow_model(100_000))
    message = str(info.value)
    assert message.startswith("a batch of 64 takes ")
    assert message.endswith(" ms, over the budget of 20 ms")


def test_a_model_beyond_the_memory_limit_is_refused() -> None:
    with pytest.raises(ModelError) as info:
        check(slow_model(2_000_000), Limits(memory_bytes=256 * 2**20))
    assert "runtime" in str(info.value) or "MiB" in str(info.value)


def test_the_wall_clock_limit_ends_a_check() -> None:
    with pytest.raises(ModelError) as info:
        check(slow_model(100_000), Limits(wall_seconds=0.05))
    assert str(info.value) == "checking the model took longer than 0.05 s"


def test_random_mutations_never_crash_the_caller() -> None:
    """A bounded sample each run (FOGLINE_MODEL_MUTATIONS, default 16), new each run."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    samples = []
    for _ in range(MUTATIONS):
        data = bytearray(FACTORY)
        for _ in range(rng.choice([1, 2, 4])):
            data[rng.randrange(len(data))] = rng.randrange(256)
        samples.append(bytes(data))

    async def all_of_them() -> list[str]:
        gate = asyncio.Semaphore(2)

        async def one(data: bytes) -> str:
            async with gate:
                try:
                    await check_async(data)
                except ModelError as exc:
                    return f"refused: {exc}"
                return "accepted"

        return await asyncio.gather(*(one(d) for d in samples))

    outcomes = asyncio.run(all_of_them())
    assert len(outcomes) == MUTATIONS, f"seed {seed}"
    assert all(o == "accepted" or o.startswith("refused: ") for o in outcomes), f"seed {seed}"
