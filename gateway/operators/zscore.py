"""`zscore`: how many standard deviations a value lies from its key's running mean.

```yaml
- zscore: {field: vibration_rms, warmup: 12, exclude_above: 4}   # adds vibration_rms_z
```

Mean and variance are Welford's running estimates over every learnt sample of the key.
"""

from __future__ import annotations

import math
from typing import ClassVar

from gateway.operators.anomaly import AnomalyScore, DetectorConfig
from gateway.operators.base import StepContext


class ZScoreConfig(DetectorConfig):
    suffix: ClassVar[str] = "z"


class ZScore(AnomalyScore):
    name = "zscore"
    Config = ZScoreConfig

    def __init__(self, config: ZScoreConfig, ctx: StepContext) -> None:
        super().__init__(config, ctx)

    def new_state(self) -> list[float]:
        return [0, 0.0, 0.0]  # n, mean, sum of squared deviations

    def score_one(self, state: list[float], x: float) -> float:
        n, mean, m2 = state
        std = math.sqrt(m2 / n) if n else 0.0
        return (x - mean) / self.spread(std, mean)

    def learn_one(self, state: list[float], x: float, ts: float) -> None:
        state[0] += 1
        delta = x - state[1]
        state[1] += delta / state[0]
        state[2] += delta * (x - state[1])
