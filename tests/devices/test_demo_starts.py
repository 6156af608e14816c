"""`fogline demo`'s line through the factory pipeline, started at 20 different moments.

Where a start falls against the 10 s window boundaries is chance: one start in ten or so
used to give healthy m-02 a first window of one reading, which the diagnosis model called a
bearing fault (93 % sure). The demo's own fleet, seed and faults run here in simulated time
through the real pipeline (`devices.evaluate.simulate`), once per start offset; every alert
must be one of the rules meant for the fault its machine has. The windows the edge model
was unsure of go to the cloud's model, as in the demo: a diagnosis other than `normal`
opens an alert there too (`cloud.store`), so it must name the fault its machine has (with
factory model 1, 8 windows of healthy m-02 went up over starts 18-19 and the cloud called
every one a bearing fault; model 2 is sure of every window of this line).
"""

from __future__ import annotations

from pathlib import Path

from cloud.escalations import CloudModels
from devices.evaluate import DEMOS, START, simulate
from devices.factory import FAULTS as KINDS
from devices.factory import FactoryConfig, machine_names
from devices.faults import parse_faults
from fogline.demo import FAULTS

STARTS = 20
SECONDS = 150.0  # past the bearing fault's onset at 70 s and its diagnosis
MODELS = Path(__file__).resolve().parents[2] / "models"


def test_twenty_demo_starts_raise_no_false_alert() -> None:
    demo = DEMOS["factory"]
    faults = parse_faults(FAULTS, KINDS, machine_names(FactoryConfig(8))[0])
    meant = {f.device: set(demo.detectors[f.kind]) for f in faults}
    kinds = {f.device: f.kind for f in faults}
    cloud = CloudModels.load(MODELS)
    false: list[tuple[float, str, str]] = []
    caught: set[str] = set()
    for k in range(STARTS):
        offset = k * 10.0 / STARTS  # every phase of a 10 s window, half a second apart
        run = simulate(
            demo, 1, faults, seconds=SECONDS, devices=8, start=START + offset,
            taps=["diagnosis.escalate"],
        )  # fmt: skip
        for r in run.raises:
            machine = r.key[1]
            if r.rule in meant.get(machine, set()):
                caught.add(machine)
            else:
                false.append((offset, machine, r.rule))
        records = [{**x.fields, **dict(zip(("line", "machine"), x.key, strict=True))}
                   for x in run.tapped["diagnosis.escalate"]]  # fmt: skip
        for data, decided in zip(records, cloud.decide(records, 0.0), strict=True):
            label = decided["cloud_label"]
            assert label is not None, decided["cloud_reason"]
            if label != "normal" and kinds.get(data["machine"]) != label:
                false.append((offset, data["machine"], f"model:{label}"))
    assert false == []
    assert caught == {"m-03", "m-06"}  # and both faults are found
