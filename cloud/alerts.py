"""Folding alert events into episodes: one row per `(gateway, alert_id)`.

The gateway sends a `raised` and later a `cleared` event with the same `alert_id`. They
may reach the cloud in either order (separate batches, separate replicas), so each event
fills only what it knows and the result does not depend on the order:

* an episode is `open` when raised and `cleared` once its clear is stored (from `open` or
  `acknowledged`: the condition is gone at the source, whatever an operator did);
* `acknowledged` and `resolved` are operators' words (`act`, below): acknowledging says
  "someone is on it" (an open episode becomes `acknowledged`, a cleared one stays
  `cleared` and records who); resolving closes the episode for good, and a clear that
  arrives later fills `cleared_at` but leaves it `resolved`. A later raise never reopens
  an episode, because a new episode has a new `alert_id`;
* rule, severity, device, `raised_at` and the message come from the raise when it is
  stored, from the clear otherwise (the clear carries them too);
* `payload` keeps both events' data under `raised` and `cleared`;
* a gateway's health record lists the alerts it holds raised (`alerts_raised`), and an
  episode still open at the cloud that is not listed is closed by `reconcile`, with a
  reason: the gateway lost it (a restart, a state reset) and its clear will never come.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, Engine, insert, select, update

from cloud.db import writing
from cloud.models import (
    MAX_DEVICE,
    MAX_GATEWAY,
    MAX_RULE,
    MAX_USER,
    Activity,
    Alert,
    Gateway,
    Silence,
)

# The cloud's own episodes, which no gateway lists: diagnoses (`cloud.store._diagnosis`);
# `gateway_silent` ones have no raised_seq and never match `reconcile` either.
DIAGNOSIS_PREFIX = "model:"
CLOSED_BY_GATEWAY = "gateway"
GONE_REASON = "the gateway no longer holds this alert (restart or state reset)"

OPERATOR_FIELDS = (
    "acknowledged_by",
    "resolved_at",
    "resolved_by",
    "assignee",
    "false_alarm",
    "silence_id",
)


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
            "closed_by": None,
            "close_reason": None,
            "payload": {},
            **dict.fromkeys(OPERATOR_FIELDS),
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
        episode.update(closed_by=None, close_reason=None)  # the real clear, after all
        if episode["state"] in ("open", "acknowledged"):
            episode["state"] = "cleared"
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


def reconcile(
    conn: Connection,
    gateway: str,
    health_seq: int,
    held: frozenset[str],
    at: float,
    now: float,
) -> list[int]:
    """Close the gateway's open episodes that its newest health record does not list.

    Only episodes raised by a record numbered before the health record (`raised_seq <
    health_seq`): the gateway lists what it holds as it numbers that record, so a raise
    numbered later may simply be newer than the list. The caller holds the gateway's lock
    and calls this only for a health record newer than every one stored before, so a
    stale or replayed one closes nothing. `at` is when the gateway said so (its clock).
    Returns the episodes closed, each logged in `activity`.
    """
    rows = conn.execute(
        select(Alert.id, Alert.alert_id, Alert.state).where(
            Alert.gateway_id == gateway,
            Alert.state.in_(("open", "acknowledged")),
            Alert.raised_seq < health_seq,
            Alert.alert_id.not_like(f"{DIAGNOSIS_PREFIX}%"),
        )
    ).all()
    gone = sorted((r for r in rows if r.alert_id not in held), key=lambda r: r.id)
    if not gone:
        return []
    conn.execute(
        update(Alert)
        .where(Alert.id.in_([r.id for r in gone]))
        .values(
            state="cleared",
            cleared_at=at,
            closed_by=CLOSED_BY_GATEWAY,
            close_reason=GONE_REASON,
            updated_at=now,
        )
    )
    detail = {"health_seq": health_seq, "reason": GONE_REASON, "to": "cleared"}
    conn.execute(
        insert(Activity),
        [
            {
                "at": now,
                "actor": f"gateway {gateway}",
                "action": "closed",
                "alert": r.id,
                "detail": {**detail, "from": r.state},
            }
            for r in gone
        ],
    )
    return [r.id for r in gone]


# -- operators' actions --------------------------------------------------------------------

Action = Literal["acknowledge", "resolve", "assign", "comment", "false_alarm"]
ACTIONS: tuple[Action, ...] = ("acknowledge", "resolve", "assign", "comment", "false_alarm")
MAX_TEXT = 2000  # characters of a comment or a false-alarm reason


class ActionError(ValueError):
    """An action that cannot be taken as asked (the API answers 422)."""


@dataclass(frozen=True, slots=True)
class ActionResult:
    """Episodes changed, and those the action did not apply to (already resolved...)."""

    changed: list[int]
    unchanged: list[int]
    missing: list[int]


def _check_text(action: Action, text: str | None) -> str | None:
    text = (text or "").strip()
    if action in ("comment", "false_alarm") and not text:
        raise ActionError(f"{action}: say why (a non-empty text is required)")
    if action == "assign" and len(text) > MAX_USER:
        raise ActionError(f"assign: a user name has at most {MAX_USER} characters")
    if len(text) > MAX_TEXT:
        raise ActionError(f"{action}: at most {MAX_TEXT} characters")
    return text or None


def _transition(
    row: Any, action: Action, actor: str, text: str | None, now: float
) -> dict[str, Any] | None:
    """The columns an action sets on one episode; None when it does not apply."""
    if action == "acknowledge":
        if row.state == "resolved" or row.acknowledged_at is not None:
            return None
        state = "acknowledged" if row.state == "open" else row.state
        return {"state": state, "acknowledged_at": now, "acknowledged_by": actor}
    if action == "resolve":
        if row.state == "resolved":
            return None
        return {"state": "resolved", "resolved_at": now, "resolved_by": actor}
    if action == "assign":
        return None if row.assignee == text else {"assignee": text}
    if action == "false_alarm":
        values: dict[str, Any] = {"false_alarm": text}
        if row.state != "resolved":  # a false alarm needs no more work
            values.update(state="resolved", resolved_at=now, resolved_by=actor)
        return values
    return {}  # a comment changes nothing but the log


def act(
    engine: Engine,
    ids: list[int],
    action: Action,
    actor: str,
    now: float,
    text: str | None = None,
) -> ActionResult:
    """Apply one action to episodes, in one transaction, each change logged in `activity`.

    The gateway rows are locked first, in id order, as ingest locks them: ingest rewrites
    an episode's columns from what it read under that lock, so an action taken between its
    read and its write would otherwise be lost (PostgreSQL; SQLite has one writer anyway).
    """
    if action not in ACTIONS:
        raise ActionError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    text = _check_text(action, text)
    wanted = sorted(set(ids))
    changed: list[int] = []
    unchanged: list[int] = []
    with writing(engine) as conn:
        owners = select(Alert.gateway_id).where(Alert.id.in_(wanted))
        conn.execute(
            select(Gateway.id)
            .where(Gateway.id.in_(owners))
            .order_by(Gateway.id)
            .with_for_update(key_share=True)
        ).all()
        rows = conn.execute(
            select(Alert.id, Alert.state, Alert.acknowledged_at, Alert.assignee).where(
                Alert.id.in_(wanted)
            )
        ).all()
        log: list[dict[str, Any]] = []
        for row in sorted(rows, key=lambda r: r.id):
            values = _transition(row, action, actor, text, now)
            if values is None:
                unchanged.append(row.id)
                continue
            if values:
                conn.execute(update(Alert).where(Alert.id == row.id).values(**values))
            changed.append(row.id)
            detail = {"from": row.state, "to": values.get("state", row.state)}
            if text is not None:
                detail["text"] = text
            log.append(
                {"at": now, "actor": actor, "action": action, "alert": row.id, "detail": detail}
            )
        if log:
            conn.execute(insert(Activity), log)
    found = {r.id for r in rows}
    return ActionResult(changed, unchanged, [i for i in wanted if i not in found])


def mark_silenced(conn: Connection, episodes: list[dict[str, Any]], now: float) -> None:
    """Mark new episodes that an active silence covers (they are stored all the same):
    ingest's and the silence watch's."""
    gateways = sorted({e["gateway_id"] for e in episodes})
    active = conn.execute(
        select(Silence.id, Silence.gateway_id, Silence.device, Silence.rule)
        .where(Silence.gateway_id.in_(gateways), Silence.until > now, Silence.ended_at.is_(None))
        .order_by(Silence.id)
    ).all()
    if not active:
        return
    for episode in episodes:
        for silence_id, gateway, device, rule in active:
            if (
                gateway == episode["gateway_id"]
                and rule == episode["rule"]
                and device in (None, episode["device"])
            ):
                episode["silence_id"] = silence_id
                break


def add_silence(
    engine: Engine,
    gateway: str,
    device: str | None,
    rule: str,
    until: float,
    reason: str | None,
    actor: str,
    now: float,
) -> int:
    """Mute `rule` on a gateway (or one device) until `until`; episodes not yet resolved
    that it covers are marked now, later ones as they arrive. Nothing is dropped."""
    if until <= now:
        raise ActionError("a silence must end in the future")
    if not gateway or not rule:
        raise ActionError("a silence names a gateway and a rule")
    if len(gateway) > MAX_GATEWAY or len(rule) > MAX_RULE or len(device or "") > MAX_DEVICE:
        raise ActionError("gateway, device or rule too long")
    reason = (reason or "").strip()[:MAX_TEXT] or None
    with writing(engine) as conn:
        silence_id = int(
            conn.execute(
                insert(Silence)
                .values(
                    gateway_id=gateway,
                    device=device or None,
                    rule=rule,
                    until=until,
                    reason=reason,
                    created_by=actor,
                    created_at=now,
                )
                .returning(Silence.id)
            ).scalar_one()
        )
        covered = (
            update(Alert)
            .where(
                Alert.gateway_id == gateway,
                Alert.rule == rule,
                Alert.state != "resolved",
                Alert.silence_id.is_(None),
            )
            .values(silence_id=silence_id)
        )
        if device:
            covered = covered.where(Alert.device == device)
        conn.execute(covered)
        detail = {"silence": silence_id, "gateway": gateway, "device": device, "rule": rule}
        conn.execute(
            insert(Activity).values(
                at=now,
                actor=actor,
                action="silence",
                alert=None,
                detail={**detail, "until": until, "reason": reason},
            )
        )
    return silence_id


def end_silence(engine: Engine, silence_id: int, actor: str, now: float) -> bool:
    """End a silence early; False if there is none active with that id."""
    with writing(engine) as conn:
        ended = conn.execute(
            update(Silence)
            .where(Silence.id == silence_id, Silence.ended_at.is_(None), Silence.until > now)
            .values(ended_at=now)
        ).rowcount
        if ended:
            conn.execute(
                insert(Activity).values(
                    at=now,
                    actor=actor,
                    action="unsilence",
                    alert=None,
                    detail={"silence": silence_id},
                )
            )
    return bool(ended)
