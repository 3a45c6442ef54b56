"""Response: policies that contain a compromised device through real control points.

A policy file (YAML, see docs/policies.md) maps alert conditions to actions:
quarantine, rate limit, disable the MQTT client, suspend the SIM, lock the
IMEI, notify. :class:`Responder` applies it to each alert, with guards
(allow-list, blast-radius cap, time to live, idempotence, retries), and
records every decision and action in the alert store and its ledger.
"""

from iotwarden.response.policy import PolicySet, load_policies, parse_policies
from iotwarden.response.responder import Responder, ResponseError, attach_policies
from iotwarden.response.store import Action, Decision

__all__ = ["Action", "Decision", "PolicySet", "Responder", "ResponseError", "attach_policies", "load_policies", "parse_policies"]
