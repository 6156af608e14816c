"""`fogline demo`'s line through the factory pipeline, started at 20 different moments.

Where a start falls against the 10 s window boundaries is chance: one start in ten or so
used to give healthy m-02 a first window of one reading, which the diagnosis model called a
bearing fault (93 % sure). The demo's own fleet, seed and faults run here in simulated time
through the real pipeline (`devices.evaluate.simulate`), once per start offset; every alert
must be one of the rules meant for the fault its machine has.
"""

from __future__ import annotations

from devices.evaluate import DEMOS, START, simulate
from devices.factory import FAULTS as KINDS
from devices.factory import FactoryConfig, machine_names
from devices.faults import parse_faults
from fogline.demo import FAULTS

STARTS = 20
SECONDS = 150.0  # past the bearing fault's onset at 70 s and its diagnosis


def test_twenty_demo_starts_raise_no_false_alert() -> None:
    demo = DEMOS["factory"]
    faults = parse_faults(FAULTS, KINDS, machine_names(FactoryConfig(8))[0])
    meant = {f.device: set(demo.detectors[f.kind]) for f in faults}
    false: list[tuple[float, str, str]] = []
    caught: set[str] = set()
    for k in range(STARTS):
        offset = k * 10.0 / STARTS  # every phase of a 10 s window, half a second apart
        run = simulate(demo, 1, faults, seconds=SECONDS, devices=8, start=START + offset)
        for r in run.raises:
            machine = r.key[1]
            if r.rule in meant.get(machine, set()):
                caught.add(machine)
            else:
                false.append((offset, machine, r.rule))
    assert false == []
    assert caught == {"m-03", "m-06"}  # and both faults are found
