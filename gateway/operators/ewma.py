"""`ewma`: distance from an exponentially weighted moving average, in moving std units.

```yaml
- ewma: {field: flow_mean, alpha: 0.1, warmup: 10}   # adds flow_mean_ewma and flow_mean_ewma_z
```

Unlike `zscore`, old samples fade (weight `1 - alpha` per step), so slow drifts become
normal and only sudden changes score high.
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
    min_std: float = Field(1e-9, gt=0, description="Floor on the moving standard deviation.")

    def extra_outputs(self) -> list[str]:
        return [f"{self.field}_ewma"]


class Ewma(AnomalyScore):
    name = "ewma"
    Config = EwmaConfig

    def __init__(self, config: EwmaConfig, ctx: StepContext) -> None:
        super().__init__(config, ctx)
        self._alpha = config.alpha
        self._min_std = config.min_std
        self._mean_field = f"{config.field}_ewma"

    def new_state(self) -> list[float]:
        return [0, 0.0, 0.0]  # n, mean, variance

    def score_one(self, state: list[float], x: float) -> float:
        return abs(x - state[1]) / max(math.sqrt(state[2]), self._min_std)

    def learn_one(self, state: list[float], x: float) -> None:
        if state[0] == 0:
            state[1] = x
        else:
            delta = x - state[1]
            state[1] += self._alpha * delta
            state[2] = (1 - self._alpha) * (state[2] + self._alpha * delta * delta)
        state[0] += 1

    def annotate(self, state: list[float], fields: dict[str, Any]) -> None:
        fields[self._mean_field] = state[1]
