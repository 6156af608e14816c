"""`ewma`: distance from an exponentially weighted moving average, in moving std units.

```yaml
- ewma: {field: flow_mean, alpha: 0.1, warmup: 10}   # adds flow_mean_ewma and flow_mean_ewma_z
- ewma: {field: temperature, alpha: 0.3, warmup: 1, clip: 3, min_std: 0.2}   # spike-proof
```

Unlike `zscore`, old samples fade (weight `1 - alpha` per step), so slow drifts become
normal and only sudden changes score high.

`clip` bounds what one reading can teach (Huber's clipped mean): a reading further than
`clip` moving standard deviations from the average is learnt as if it were that far. A
sensor spike of 50 °C then moves an average of 0.2 °C spread by `alpha` x 0.6 °C, where
it moved it by `alpha` x 50; a lasting change widens the spread a reading by
sqrt((1 - alpha)(1 + alpha clip²)), 1.6 times at alpha 0.3 and clip 3, until it is followed
in full, at any sampling rate, with no clock involved. The
factory's critical stop reads such an average: two temperature spikes two readings apart
took a plain one past 93 °C and stopped a healthy machine (a drawn site, seed 215 of the
detection bench); a real overheating, a degree a second at most, is followed as before.

`tau` instead of `alpha` makes the average a first-order lag in event time: each sample
weighs `1 - exp(-dt / tau)`, `dt` the time since the key's previous one, so a gap of many
`tau` forgets the past, as a physical lag would, where `alpha` would take the first sample
after it as one step of many. The factory follows a machine's current with its thermal
time constant this way: with `alpha`, after a sensor was silent for 15 minutes the
average still held the load from before the gap, the temperature already answered the
new one, and `over_temperature` raised on healthy machines (3 times on four seeds of a
hot hall). A sample no later than the previous one teaches nothing.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import Field, model_validator

from fogline.units import Duration
from gateway.operators.anomaly import AnomalyScore, DetectorConfig
from gateway.operators.base import StepContext


class EwmaConfig(DetectorConfig):
    suffix: ClassVar[str] = "ewma_z"
    alpha: float = Field(0.1, gt=0, le=1, description="Weight of the newest sample.")
    tau: Duration | None = Field(
        None,
        gt=0,
        description="Instead of `alpha`: the time constant of a lag in event time (a sample "
        "`dt` after the previous weighs 1 - exp(-dt / tau); a long gap forgets the past).",
    )
    clip: float | None = Field(
        None,
        gt=0,
        description="Learn a sample further than this many moving standard deviations from "
        "the average as if it were that far: a spike barely moves the average, a lasting "
        "change is followed within a few samples (null: every sample in full).",
    )

    def extra_outputs(self) -> list[str]:
        return [f"{self.field}_ewma"]

    @model_validator(mode="after")
    def _alpha_or_tau(self) -> EwmaConfig:
        if self.tau is not None and "alpha" in self.model_fields_set:
            raise ValueError("give `alpha` (a weight per sample) or `tau` (a time), not both")
        return self


class Ewma(AnomalyScore):
    name = "ewma"
    Config = EwmaConfig

    def __init__(self, config: EwmaConfig, ctx: StepContext) -> None:
        super().__init__(config, ctx)
        self._alpha = config.alpha
        self._tau = config.tau
        self._clip = config.clip
        self._mean_field = f"{config.field}_ewma"

    def new_state(self) -> list[float]:
        if self._tau is None:
            return [0, 0.0, 0.0]  # n, mean, variance
        return [0, 0.0, 0.0, 0.0]  # and the event time of the last sample learnt

    def score_one(self, state: list[float], x: float) -> float:
        return (x - state[1]) / self.spread(math.sqrt(state[2]), state[1])

    def learn_one(self, state: list[float], x: float, ts: float) -> None:
        alpha = self._alpha
        if self._tau is not None:
            if len(state) < 4:  # a state kept before `tau`
                state.append(ts)
            elif state[0] and ts <= state[3]:
                return
            alpha = -math.expm1((state[3] - ts) / self._tau)
            state[3] = ts
        if state[0] == 0:
            state[1] = x
        else:
            delta = x - state[1]
            if self._clip is not None:
                reach = self._clip * self.spread(math.sqrt(state[2]), state[1])
                delta = min(max(delta, -reach), reach)
            state[1] += alpha * delta
            state[2] = (1 - alpha) * (state[2] + alpha * delta * delta)
        state[0] += 1

    def annotate(self, state: list[float], fields: dict[str, Any]) -> None:
        # Null until a sample was learnt (`learn_when` can refuse the first ones): an
        # average of nothing is not 0.
        fields[self._mean_field] = state[1] if state[0] else None
