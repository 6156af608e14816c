"""Folding alert events into episodes: one row per `(gateway, alert_id)`.

The gateway sends a `raised` and later a `cleared` event with the same `alert_id`. They
may reach the cloud in either order (separate batches, separate replicas), so each event
fills only what it knows and the result does not depend on the order:

* an episode is `open` when raised, `resolved` once its clear is stored (from `open` or
  `acknowledged`: the condition is gone at the source, whatever an operator did);
* `acknowledged` is an operator's word (no API sets it yet); a later raise never
  reopens an episode, because a new episode has a new `alert_id`;
* rule, severity, device, `raised_at` and the message come from the raise when it is
  stored, from the clear otherwise (the clear carries them too);
* `payload` keeps both events' data under `raised` and `cleared`.
"""

from __future__ import annotations

from typing import Any


def apply_event(
    episode: dict[str, Any] | None,
    gateway: str,
    seq: int,
    device: str,
    data: dict[str, Any],
    now: float,
) -> dict[str, Any]:
    """The episode (row values) after one new event; `episode` is not modified."""
    raised = data["state"] == "raised"
    if episode is None:
        episode = {
            "gateway_id": gateway,
            "alert_id": data["alert_id"],
            "raised_seq": None,
            "cleared_seq": None,
            "state": "open",
            "cleared_at": None,
            "acknowledged_at": None,
            "payload": {},
        }
        described = False
    else:
        episode = {**episode, "payload": dict(episode["payload"])}
        described = episode["raised_seq"] is not None
    if raised:
        episode["raised_seq"] = seq
        episode["payload"]["raised"] = data
    else:
        episode["cleared_seq"] = seq
        episode["cleared_at"] = float(data["cleared_at"])
        episode["state"] = "resolved"
        episode["payload"]["cleared"] = data
    if raised or not described:
        episode.update(
            device=device,
            rule=data["rule"],
            severity=data["severity"],
            raised_at=float(data["raised_at"]),
            message=data.get("message"),
        )
    episode["updated_at"] = now
    return episode
