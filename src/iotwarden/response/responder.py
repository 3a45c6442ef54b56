"""The responder: turns alerts into decisions and actions, and keeps actions on course.

``on_alert`` evaluates every policy against an alert as it opens. ``tick``
retries failed actuator calls with exponential backoff and undoes
containment whose time to live has passed. Analysts ``approve``, ``reject``,
``release`` and ``confirm`` actions by id. Every decision and every change of
an action's state is written to the store and appended to its ledger in one
transaction. Actuator calls happen outside transactions, so a slow control
point does not hold the store's write lock.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from iotwarden.decisions.alerts import Alert
from iotwarden.errors import IotwardenError
from iotwarden.observation import format_time
from iotwarden.response.actuators import ActionRequest, Actuator, ActuatorError, Target, build_actuators
from iotwarden.response.policy import Guards, Policy, PolicySet, load_policies
from iotwarden.response.store import Action, ResponseTables
from iotwarden.store import AlertStore

__all__ = ["Responder", "ResponseError", "attach_policies"]

logger = logging.getLogger(__name__)

SYSTEM_ACTOR = "iotwarden-responder"


class ResponseError(IotwardenError):
    """An analyst command cannot be carried out (unknown id, or wrong state)."""


class Responder:
    """Apply response policies to alerts through actuators.

    Args:
        store: The alert store; the response tables are created in it.
        policies: A loaded policy file, or None to only manage existing actions
            (as the ``actions`` command does without ``--policies``).
        actuators: Actuators by name; default: built from the policy file.
        clock: Wall-clock time in epoch seconds (tests pass a fake one).
    """

    def __init__(
        self,
        store: AlertStore,
        policies: PolicySet | None = None,
        actuators: dict[str, Actuator] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.policies = policies or PolicySet(path=None, policies=[])
        self.actuators = actuators if actuators is not None else build_actuators(self.policies)
        self.tables = ResponseTables(store.connection)
        self.clock = clock
        self._lock = threading.RLock()
        if self.policies.path is not None:
            with self.tables.transaction():
                self.tables.set_meta("policy_file", str(Path(self.policies.path).resolve()))

    @classmethod
    def from_file(cls, store: AlertStore, path: str | os.PathLike[str], **options: Any) -> Responder:
        """Load a policy file and build its actuators."""
        return cls(store, load_policies(path), **options)

    def close(self) -> None:
        for actuator in self.actuators.values():
            actuator.close()

    @property
    def guards(self) -> Guards:
        return self.policies.guards

    # Alerts -------------------------------------------------------------------

    def on_alert(self, alert: Alert) -> list[Action]:
        """Evaluate every policy against an alert that just opened; return the actions created or updated."""
        with self._lock:
            touched: list[Action] = []
            for policy in self.policies.policies:
                if not policy.condition.matches_alert(alert, self.policies):
                    continue
                touched.extend(self._fire(policy, alert))
            return touched

    def _fire(self, policy: Policy, alert: Alert) -> list[Action]:
        now = self.clock()
        condition = policy.condition
        with self.tables.transaction():
            self.tables.record_hit(policy.name, alert.device, alert.id, alert.time)
            if condition.repeat_count > 1:
                window = condition.repeat_within or 0.0
                hits = self.tables.count_hits(policy.name, alert.device, alert.time - window, alert.time)
                if hits < condition.repeat_count:
                    reason = f"{hits} of {condition.repeat_count} matching alerts within {window:g} s"
                    self._decide(now, policy, alert, "waiting_for_repeats", reason, [])
                    return []

        mode = policy.mode
        reason = _alert_reason(policy, alert)
        age = now - alert.time
        max_age = self.guards.max_alert_age
        if mode != "dry_run" and max_age is not None and age > max_age:
            mode = "dry_run"
            reason += f"; recorded as dry run because the alert is {age:.0f} s old (guards.max_alert_age {max_age:g} s)"

        allowed = alert.device in self.guards.allow_list
        created: list[Action] = []
        duplicates: list[Action] = []
        to_execute: list[Action] = []
        containment = [spec for spec in policy.actions if spec.kind != "notify"]
        with self.tables.transaction():
            for spec in containment:
                if allowed:
                    continue
                existing = self._open_action(alert.device, spec.kind, spec.actuator, now, dry_run=(mode == "dry_run"))
                if existing is not None:
                    if alert.id not in existing.trigger_alerts:
                        existing.trigger_alerts.append(alert.id)
                        existing.updated_at = now
                        self.tables.update_action(existing)
                    duplicates.append(existing)
                    continue
                action = self._new_action(now, policy, spec, alert, mode, reason)
                if mode == "approval":
                    action.state = "awaiting_approval"
                elif mode == "automatic":
                    cap = self._blast_radius_reason(alert.device, now)
                    if cap:
                        action.state = "awaiting_approval"
                        action.reason += "; " + cap
                    else:
                        action.state = "pending"
                        action.next_attempt_at = now
                        to_execute.append(action)
                self.tables.insert_action(action)
                self._ledger_action(action, "created", actor=f"policy:{policy.name}")
                created.append(action)

            notify_specs = [spec for spec in policy.actions if spec.kind == "notify"]
            skip_notify = bool(containment) and not allowed and not created and bool(duplicates)
            if not skip_notify:
                for spec in notify_specs:
                    action = self._new_action(now, policy, spec, alert, mode, reason)
                    action.params = {**action.params, "notification": self._notification(policy, alert, created, allowed, mode)}
                    if mode != "dry_run":
                        action.state = "pending"
                        action.next_attempt_at = now
                        to_execute.append(action)
                    self.tables.insert_action(action)
                    self._ledger_action(action, "created", actor=f"policy:{policy.name}")
                    created.append(action)

            if allowed:
                outcome, detail = "allow_listed", f"{alert.device} is on the allow-list, so no containment"
            elif containment and not created and duplicates:
                outcome, detail = "already_contained", "already in place: " + ", ".join(a.id for a in duplicates)
            else:
                outcome, detail = mode, reason
            self._decide(now, policy, alert, outcome, detail, [a.id for a in created] + [a.id for a in duplicates])

        for action in to_execute:
            self._apply(action)
        return [self.tables.action(a.id) or a for a in created + duplicates]

    def _open_action(self, device: str, kind: str, actuator: str, now: float, *, dry_run: bool) -> Action | None:
        """Return the action that already contains this device this way, so a second alert adds no second rule."""
        states = ("awaiting_approval", "pending", "active", "dry_run") if dry_run else ("awaiting_approval", "pending", "active")
        for action in self.tables.actions(states=states, device=device, kind=kind, actuator=actuator, newest_first=True):
            if action.state == "dry_run" and (action.expires_at or 0) <= now:
                continue
            return action
        return None

    def _blast_radius_reason(self, device: str, now: float) -> str:
        cap = self.guards.blast_radius_max
        if cap is None:
            return ""
        period = self.guards.blast_radius_period
        devices = self.tables.contained_devices_since(now - period)
        if device in devices or len(devices) < cap:
            return ""
        return f"waiting for approval: blast-radius cap of {cap} devices per {period:g} s reached"

    def _new_action(self, now: float, policy: Policy, spec: Any, alert: Alert, mode: str, reason: str) -> Action:
        ttl = None if spec.kind == "notify" else (spec.ttl or policy.ttl or self.guards.default_ttl)
        return Action(
            id="a-" + uuid.uuid4().hex[:12],
            created_at=now,
            updated_at=now,
            device=alert.device,
            kind=spec.kind,
            actuator=spec.actuator,
            policy=policy.name,
            mode=mode,
            state="dry_run",
            reason=reason,
            alert_id=alert.id,
            trigger_alerts=[alert.id],
            target=self.policies.device_attributes(alert.device),
            params=dict(spec.params),
            ttl=ttl,
            # A dry run keeps the would-be expiry, so repeats within it are not recorded twice.
            expires_at=(now + ttl) if (mode == "dry_run" and ttl) else None,
        )

    def _notification(self, policy: Policy, alert: Alert, created: list[Action], allowed: bool, mode: str) -> dict[str, Any]:
        actions = [{"id": a.id, "kind": a.kind, "actuator": a.actuator, "state": a.state} for a in created]
        messages = [spec.params["message"] for spec in policy.actions if spec.kind == "notify" and spec.params.get("message")]
        message = messages[0] if messages else None
        summary = f"{policy.name}: {alert.device} {alert.category} alert ({alert.severity}, score {alert.score:.1f})"
        if allowed:
            summary += "; device is allow-listed, no containment"
        elif actions:
            summary += "; " + ", ".join(f"{a['kind']} via {a['actuator']} {a['state']}" for a in actions)
        return {
            "event": "iotwarden.response",
            "policy": policy.name,
            "mode": mode,
            "device": alert.device,
            "alert_id": alert.id,
            "incident_id": alert.incident_id,
            "category": alert.category,
            "severity": alert.severity,
            "score": round(float(alert.score), 3),
            "alert_time": format_time(alert.time),
            "explanation": alert.explanation,
            "actions": actions,
            "message": message or summary,
        }

    def _decide(self, now: float, policy: Policy, alert: Alert, outcome: str, reason: str, action_ids: list[str]) -> None:
        decision_id = self.tables.insert_decision(now, policy.name, alert.device, alert.id, outcome, reason, action_ids)
        payload = {
            "decision": decision_id, "policy": policy.name, "device": alert.device, "alert_id": alert.id,
            "outcome": outcome, "reason": reason, "actions": action_ids,
        }
        self.store.ledger.append_many([("response_decision", payload, f"policy:{policy.name}")])
        logger.info("policy %s on alert %s of %s: %s (%s)", policy.name, alert.id, alert.device, outcome, reason)

    def _ledger_action(self, action: Action, event: str, *, actor: str, detail: str = "") -> None:
        payload = {
            "action": action.id, "event": event, "state": action.state, "device": action.device, "kind": action.kind,
            "actuator": action.actuator, "policy": action.policy, "alert_id": action.alert_id, "reason": action.reason,
        }
        if detail:
            payload["detail"] = detail
        if action.expires_at is not None and action.state == "active":
            payload["expires_at"] = action.expires_at
        self.store.ledger.append_many([("response_action", payload, actor)])

    # Execution ------------------------------------------------------------------

    def _request(self, action: Action, *, ttl: float | None) -> ActionRequest:
        return ActionRequest(id=action.id, kind=action.kind, target=Target(action.device, dict(action.target)), params=dict(action.params), ttl=ttl, reason=action.reason)

    def _actuator(self, action: Action) -> Actuator:
        actuator = self.actuators.get(action.actuator)
        if actuator is None:
            raise ActuatorError(f"no actuator named {action.actuator!r} is configured (load the policy file that defines it)")
        return actuator

    def _backoff(self, attempts: int) -> float:
        return min(self.guards.retry_max, self.guards.retry_initial * 2 ** max(0, attempts - 1))

    def _apply(self, action: Action) -> Action:
        """Apply a pending action once; on failure schedule a retry (or mark it failed)."""
        now = self.clock()
        ttl = None if action.confirmed_by else action.ttl
        try:
            handle = self._actuator(action).apply(self._request(action, ttl=ttl))
        except Exception as error:  # noqa: BLE001 - any actuator failure must keep the action
            return self._record_failure(action, error, expected_state="pending", event="apply_failed")
        with self.tables.transaction():
            current = self.tables.action(action.id)
            if current is None or current.state != "pending":
                # Released or rejected while the call was under way: undo what was just applied.
                if current is not None and current.state in ("releasing", "released"):
                    current.handle = handle
                    current.state = "releasing"
                    current.next_attempt_at = now
                    self.tables.update_action(current)
                return current or action
            action = current
            one_shot = getattr(self._actuator(action), "one_shot", False) or action.kind == "notify"
            action.state = "done" if one_shot else "active"
            action.handle = handle
            action.activated_at = now
            action.expires_at = None if (one_shot or action.confirmed_by or not action.ttl) else now + action.ttl
            action.next_attempt_at = None
            action.last_error = None
            action.attempts += 1
            action.updated_at = now
            self.tables.update_action(action)
            self._ledger_action(action, "applied", actor=SYSTEM_ACTOR)
        logger.info("action %s: %s of %s via %s is %s", action.id, action.kind, action.device, action.actuator, action.state)
        return action

    def _revert(self, action: Action) -> Action:
        """Revert an action in state releasing once; on failure schedule a retry."""
        now = self.clock()
        try:
            if action.handle is not None or action.activated_at is not None or action.attempts:
                self._actuator(action).revert(self._request(action, ttl=None), action.handle or {})
        except Exception as error:  # noqa: BLE001 - a release must never be lost
            return self._record_failure(action, error, expected_state="releasing", event="revert_failed", retry_always=True)
        with self.tables.transaction():
            current = self.tables.action(action.id)
            if current is None or current.state != "releasing":
                return current or action
            action = current
            action.state = "expired" if action.release_reason == "expired" else "released"
            action.next_attempt_at = None
            action.last_error = None
            action.updated_at = now
            self.tables.update_action(action)
            self._ledger_action(action, "reverted", actor=action.released_by or SYSTEM_ACTOR)
        logger.info("action %s: %s of %s via %s is %s", action.id, action.kind, action.device, action.actuator, action.state)
        return action

    def _record_failure(self, action: Action, error: Exception, *, expected_state: str, event: str, retry_always: bool = False) -> Action:
        now = self.clock()
        retryable = retry_always or not isinstance(error, ActuatorError) or error.retryable
        message = str(error) or type(error).__name__
        with self.tables.transaction():
            current = self.tables.action(action.id)
            if current is None or current.state != expected_state:
                return current or action
            action = current
            action.attempts += 1
            action.last_error = message
            action.updated_at = now
            if retryable:
                action.next_attempt_at = now + self._backoff(action.attempts)
            else:
                action.state = "failed"
                action.next_attempt_at = None
            self.tables.update_action(action)
            self._ledger_action(action, event, actor=SYSTEM_ACTOR, detail=message)
        if not isinstance(error, ActuatorError):
            logger.error("action %s: unexpected error from actuator %s", action.id, action.actuator, exc_info=error)
        if retryable:
            logger.warning("action %s (%s of %s via %s): attempt %d failed, retry in %.1f s: %s", action.id, action.kind, action.device, action.actuator, action.attempts, action.next_attempt_at - now, message)
        else:
            logger.error("action %s (%s of %s via %s) failed and will not be retried: %s", action.id, action.kind, action.device, action.actuator, message)
        return action

    def tick(self, now: float | None = None) -> list[Action]:
        """Retry due actuator calls and undo expired containment; return the actions that changed.

        Call it every few seconds from a long-running service; ``now``
        defaults to the clock.
        """
        with self._lock:
            now = self.clock() if now is None else now
            changed: list[Action] = []
            for action in self.tables.expired(now):
                with self.tables.transaction():
                    action.state = "releasing"
                    action.attempts = 0  # from here on, attempts count revert calls
                    action.release_reason = "expired"
                    action.next_attempt_at = now
                    action.updated_at = now
                    if not self.tables.update_action(action, expected_state="active"):
                        continue
                    self._ledger_action(action, "expiring", actor=SYSTEM_ACTOR, detail="time to live passed without an analyst's confirmation")
            for action in self.tables.actions(states=("releasing",), due_before=now):
                changed.append(self._revert(action))
            for action in self.tables.actions(states=("pending",), due_before=now):
                changed.append(self._apply(action))
            return changed

    # Analyst commands -------------------------------------------------------------

    def _get(self, action_id: str) -> Action:
        action = self.tables.action(action_id)
        if action is None:
            raise ResponseError(f"no action with id {action_id!r}; see 'iotwarden actions list'")
        return action

    def _transition(self, action: Action, expected: str, analyst: str, event: str, detail: str = "") -> None:
        with self.tables.transaction():
            if not self.tables.update_action(action, expected_state=expected):
                current = self._get(action.id)
                raise ResponseError(f"action {action.id} changed to {current.state} meanwhile; try again")
            self._ledger_action(action, event, actor=f"analyst:{analyst}", detail=detail)

    def approve(self, action_id: str, analyst: str, *, execute: bool = True) -> Action:
        """Approve an action that waits for approval (or retry a failed one) and apply it now.

        With ``execute=False`` (no actuators at hand) it stays pending for the
        running responder's next ``tick``.
        """
        with self._lock:
            action = self._get(action_id)
            if action.state not in ("awaiting_approval", "failed"):
                raise ResponseError(f"action {action_id} is {action.state}; only actions awaiting approval or failed can be approved")
            expected = action.state
            now = self.clock()
            action.state = "pending"
            action.approved_by = analyst
            action.next_attempt_at = now
            action.updated_at = now
            self._transition(action, expected, analyst, "approved")
            logger.info("action %s approved by %s", action_id, analyst)
            return self._apply(action) if execute else action

    def reject(self, action_id: str, analyst: str, reason: str = "") -> Action:
        """Decline an action that waits for approval."""
        with self._lock:
            action = self._get(action_id)
            if action.state != "awaiting_approval":
                raise ResponseError(f"action {action_id} is {action.state}; only actions awaiting approval can be rejected")
            action.state = "rejected"
            action.released_by = analyst
            action.release_reason = reason or "rejected by analyst"
            action.updated_at = self.clock()
            self._transition(action, "awaiting_approval", analyst, "rejected", reason)
            logger.info("action %s rejected by %s: %s", action_id, analyst, reason)
            return action

    def release(self, action_id: str, analyst: str, reason: str = "", *, execute: bool = True) -> Action:
        """Undo a containment, or cancel one not yet applied.

        Works in every state: an action already released, expired, rejected
        or done is returned unchanged. A failed revert is retried by ``tick``.
        """
        with self._lock:
            action = self._get(action_id)
            if action.state in ("released", "expired", "rejected", "done", "dry_run"):
                return action
            now = self.clock()
            expected = action.state
            action.released_by = analyst
            action.release_reason = reason or "released by analyst"
            action.updated_at = now
            if action.state == "releasing":
                action.next_attempt_at = now
                self._transition(action, expected, analyst, "release_requested", reason)
            elif action.state in ("awaiting_approval", "failed") or (action.state == "pending" and not action.attempts):
                # Nothing is in force: a failed action never applied, since its error was not retryable.
                action.state = "released"
                action.next_attempt_at = None
                self._transition(action, expected, analyst, "cancelled", reason)
                return action
            else:
                # active, or pending after attempts that may have partly applied
                if action.state == "active":
                    action.attempts = 0  # from here on, attempts count revert calls
                action.state = "releasing"
                action.next_attempt_at = now
                self._transition(action, expected, analyst, "release_requested", reason)
            logger.info("action %s release requested by %s", action_id, analyst)
            return self._revert(action) if execute else action

    def confirm(self, action_id: str, analyst: str, *, execute: bool = True) -> Action:
        """Keep an active containment beyond its time to live, until released."""
        with self._lock:
            action = self._get(action_id)
            if action.state != "active":
                raise ResponseError(f"action {action_id} is {action.state}; only active actions can be confirmed")
            action.confirmed_by = analyst
            action.expires_at = None
            action.updated_at = self.clock()
            self._transition(action, "active", analyst, "confirmed")
            logger.info("action %s confirmed by %s", action_id, analyst)
            if execute:
                # Re-apply without a time to live, so the control point's own timeout no longer ends it.
                try:
                    action.handle = self._actuator(action).apply(self._request(action, ttl=None))
                    with self.tables.transaction():
                        self.tables.update_action(action)
                except Exception as error:  # noqa: BLE001
                    action.state = "pending"
                    action.next_attempt_at = self.clock()
                    with self.tables.transaction():
                        self.tables.update_action(action)
                    return self._record_failure(action, error, expected_state="pending", event="apply_failed")
            return action

    # Reading ----------------------------------------------------------------------

    def get(self, action_id: str) -> Action:
        """Return one action by id."""
        return self._get(action_id)

    def list_actions(self, *, state: str | None = None, device: str | None = None, limit: int | None = None) -> list[Action]:
        """Return actions, newest first."""
        return self.tables.actions(states=(state,) if state else None, device=device, limit=limit, newest_first=True)

    def decisions(self, *, device: str | None = None, policy: str | None = None) -> list[Any]:
        """Return decisions, oldest first."""
        return self.tables.decisions(device=device, policy=policy)


def _alert_reason(policy: Policy, alert: Alert) -> str:
    return (
        f"policy {policy.name} ({policy.mode}) matched alert {alert.id}: {alert.category}, severity {alert.severity}, "
        f"score {alert.score:.1f}, cohort {alert.cohort}"
    )


def attach_policies(
    store: AlertStore,
    policy_path: str | os.PathLike[str],
    on_alert: Callable[[Alert], None] | None = None,
    *,
    tick_interval: float = 5.0,
) -> tuple[Callable[[Alert], None], Responder]:
    """Load a policy file and return an ``on_alert`` callback that runs it, with its responder.

    The callback calls ``on_alert`` (if given) and then the responder, and
    runs ``Responder.tick`` at most every ``tick_interval`` seconds, so
    retries and expiries also happen during a replay. A long-running service
    should also call ``responder.tick()`` on a timer, and ``responder.close()``
    at the end.
    """
    responder = Responder.from_file(store, policy_path)
    last_tick = [0.0]

    def callback(alert: Alert) -> None:
        if on_alert is not None:
            on_alert(alert)
        responder.on_alert(alert)
        now = responder.clock()
        if now - last_tick[0] >= tick_interval:
            last_tick[0] = now
            responder.tick(now)

    return callback, responder
