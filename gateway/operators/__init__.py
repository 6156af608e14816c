"""The operator registry: one module per operator, registered by its YAML name."""

from __future__ import annotations

from gateway.operators.absence import Absence
from gateway.operators.alert import Alert
from gateway.operators.base import Operator
from gateway.operators.baseline import Baseline
from gateway.operators.deadband import Deadband
from gateway.operators.derive import Derive
from gateway.operators.ewma import Ewma
from gateway.operators.features import Features
from gateway.operators.filter import Filter
from gateway.operators.frozen import Frozen
from gateway.operators.infer import Infer
from gateway.operators.spike import Spike
from gateway.operators.validate import Validate
from gateway.operators.window import Window
from gateway.operators.zscore import ZScore

REGISTRY: dict[str, type[Operator]] = {
    op.name: op
    for op in (
        Validate,
        Filter,
        Derive,
        Deadband,
        Spike,
        Frozen,
        Window,
        Features,
        ZScore,
        Ewma,
        Baseline,
        Absence,
        Alert,
        Infer,
    )
}

__all__ = ["REGISTRY"]
