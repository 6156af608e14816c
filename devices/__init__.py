"""Device simulators for the demo deployments: a smart factory and a smart farm.

Fleets (`devices.factory`, `devices.farm`) are pure and vectorized: `step(t)` advances
every device to simulated time `t` in one numpy pass and returns `(topic, payload)` pairs.
Faults are injected on a schedule (`devices.faults`) and written out as ground truth
(`devices.labels`) so that detection can be scored. Transports (`devices.transport`) put
the encoded readings (`devices.codec`) on MQTT or CoAP; `devices.runner` paces it all in
wall-clock time, and `devices.cli` is `fogline devices`.
"""

from devices.clock import FakeClock, SimClock, SystemClock
from devices.codec import Codec
from devices.factory import FactoryConfig, FactoryFleet
from devices.farm import FarmConfig, FarmFleet
from devices.faults import FaultSpec, FaultSpecError, parse_faults
from devices.fleet import Fleet, Message
from devices.runner import Runner, RunStats

__all__ = [
    "Codec",
    "FactoryConfig",
    "FactoryFleet",
    "FakeClock",
    "FarmConfig",
    "FarmFleet",
    "FaultSpec",
    "FaultSpecError",
    "Fleet",
    "Message",
    "RunStats",
    "Runner",
    "SimClock",
    "SystemClock",
    "parse_faults",
]
