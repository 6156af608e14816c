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
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import Field

from gateway.operators.anomaly import AnomalyScore, DetectorConfig
from gateway.operators.base import StepContext


class EwmaConfig(DetectorConfig):
    suffix: ClassVar[str] = "ewma_z"
    alpha: float = Field(0.1, gt=0, le=1, description="Weight of the newest sample.")
    min_std: float = Field(
        1e-9,
        gt=0,
        description="Floor on the moving standard deviation (with `clip`: the field's noise).",
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


class Ewma(AnomalyScore):
    name = "ewma"
    Config = EwmaConfig

    def __init__(self, config: EwmaConfig, ctx: StepContext) -> None:
        super().__init__(config, ctx)
        self._alpha = config.alpha
        self._min_std = config.min_std
        self._clip = config.clip
        self._mean_field = f"{config.field}_ewma"

    def new_state(self) -> list[float]:
        return [0, 0.0, 0.0]  # n, mean, variance

    def score_one(self, state: list[float], x: float) -> float:
        return (x - state[1]) / max(math.sqrt(state[2]), self._min_std)

    def learn_one(self, state: list[float], x: float) -> None:
        if state[0] == 0:
            state[1] = x
        else:
            delta = x - state[1]
            if self._clip is not None:
                reach = self._clip * max(math.sqrt(state[2]), self._min_std)
                delta = min(max(delta, -reach), reach)
            state[1] += self._alpha * delta
            state[2] = (1 - self._alpha) * (state[2] + self._alpha * delta * delta)
        state[0] += 1

    def annotate(self, state: list[float], fields: dict[str, Any]) -> None:
        fields[self._mean_field] = state[1]
