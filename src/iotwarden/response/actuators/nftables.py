"""Linux gateway firewall through nftables.

Quarantine puts the device's address in a set with a timeout; rules in a
``forward`` chain drop packets from and to every address in the set, so the
gateway stops routing the device's traffic while the device can still reach
the gateway itself (DHCP, DNS). The set timeout is the containment's time to
live, so a quarantine lapses even if iotwarden is not running.

A rate limit adds two rules (source and destination) with a ``limit rate
over`` statement that drops what exceeds the rate; the rules carry the
action id as their comment and are deleted by handle on release.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import shutil
import subprocess
from typing import Any

from iotwarden.response.actuators.base import ActionRequest, Actuator, ActuatorError

__all__ = ["NftablesActuator"]

logger = logging.getLogger(__name__)

COMMENT_PREFIX = "iotwarden:"


class NftablesActuator(Actuator):
    """Quarantine and rate limits in an ``inet`` table that this actuator creates.

    Args:
        name: The actuator's name in the policy file.
        table: Name of the ``inet`` table (created on first use, left in place).
        netns: Run ``nft`` inside this network namespace (``ip netns exec``).
        nft: The ``nft`` executable.
        timeout: Seconds one ``nft`` call may take.
    """

    kinds = frozenset({"quarantine", "rate_limit"})

    def __init__(self, name: str, *, table: str = "iotwarden", netns: str | None = None, nft: str = "nft", timeout: float = 5.0) -> None:
        super().__init__(name)
        self.table = table
        self.netns = netns
        self.nft = nft
        self.timeout = timeout
        self._ready = False

    # nft calls ----------------------------------------------------------------

    def _command(self, *args: str) -> list[str]:
        base = [self.nft, *args]
        if self.netns:
            return ["ip", "netns", "exec", self.netns, *base]
        return base

    def _run(self, *args: str, script: str | None = None) -> str:
        if shutil.which(self.nft) is None and not self.nft.startswith("/"):
            raise ActuatorError(f"{self.name}: the nft command {self.nft!r} is not installed (Debian package nftables)", retryable=False)
        command = self._command(*args, *(["-f", "-"] if script is not None else []))
        try:
            result = subprocess.run(command, input=script, capture_output=True, text=True, timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired as error:
            raise ActuatorError(f"{self.name}: {' '.join(command)} timed out after {self.timeout} s") from error
        except OSError as error:
            raise ActuatorError(f"{self.name}: cannot run {' '.join(command)}: {error}") from error
        if result.returncode != 0:
            detail = result.stderr.strip().replace("\n", " | ")
            raise ActuatorError(f"{self.name}: {' '.join(command)} failed (exit {result.returncode}): {detail}")
        return result.stdout

    def ensure_table(self) -> None:
        """Create the table, sets and chain unless they exist."""
        if self._ready:
            return
        try:
            self._run("list", "table", "inet", self.table)
        except ActuatorError:
            self._run(script=self._table_script())
            logger.info("%s: created nftables table inet %s", self.name, self.table)
        self._ready = True

    def _table_script(self) -> str:
        t = self.table
        return (
            f"table inet {t} {{\n"
            "  set quarantine4 { type ipv4_addr; flags timeout; }\n"
            "  set quarantine6 { type ipv6_addr; flags timeout; }\n"
            # Ahead of ordinary filter chains, so a quarantine is not bypassed by their accepts.
            "  chain forward { type filter hook forward priority filter - 10; policy accept;\n"
            "    ip saddr @quarantine4 counter drop\n"
            "    ip daddr @quarantine4 counter drop\n"
            "    ip6 saddr @quarantine6 counter drop\n"
            "    ip6 daddr @quarantine6 counter drop\n"
            "  }\n"
            "}\n"
        )

    # Actions ------------------------------------------------------------------

    def apply(self, request: ActionRequest) -> dict[str, Any]:
        address = _address(request, self.name)
        self.ensure_table()
        if request.kind == "quarantine":
            set_name = "quarantine4" if address.version == 4 else "quarantine6"
            element = f"inet {self.table} {set_name} {{ {address} }}"
            timeout = "" if request.ttl is None else f" timeout {max(1, math.ceil(request.ttl))}s"
            # add + delete + add in one transaction replaces an element that is
            # already there (with another timeout) without a moment of no rule.
            self._run(script=f"add element {element}\ndelete element {element}\nadd element inet {self.table} {set_name} {{ {address}{timeout} }}\n")
            return {"address": str(address), "set": set_name}
        if request.kind == "rate_limit":
            rate = _limit_expression(request.params)
            family = "ip" if address.version == 4 else "ip6"
            comment = COMMENT_PREFIX + request.id
            lines = [f"delete rule inet {self.table} forward handle {handle}" for handle in self._rule_handles(comment)]
            for direction in ("saddr", "daddr"):
                lines.append(f'add rule inet {self.table} forward {family} {direction} {address} limit rate over {rate} counter drop comment "{comment}"')
            self._run(script="\n".join(lines) + "\n")
            return {"address": str(address), "comment": comment}
        raise ActuatorError(f"{self.name}: nftables cannot perform {request.kind!r}", retryable=False)

    def revert(self, request: ActionRequest, handle: dict[str, Any]) -> None:
        self.ensure_table()
        if request.kind == "quarantine":
            address = handle.get("address") or str(_address(request, self.name))
            set_name = handle.get("set") or ("quarantine4" if ipaddress.ip_address(address).version == 4 else "quarantine6")
            element = f"inet {self.table} {set_name} {{ {address} }}"
            self._run(script=f"add element {element}\ndelete element {element}\n")
            return
        if request.kind == "rate_limit":
            comment = handle.get("comment") or COMMENT_PREFIX + request.id
            handles = self._rule_handles(comment)
            if handles:
                self._run(script="".join(f"delete rule inet {self.table} forward handle {h}\n" for h in handles))
            return
        raise ActuatorError(f"{self.name}: nftables cannot revert {request.kind!r}", retryable=False)

    def _rule_handles(self, comment: str) -> list[int]:
        listing = json.loads(self._run("-j", "-a", "list", "chain", "inet", self.table, "forward"))
        handles = []
        for item in listing.get("nftables", []):
            rule = item.get("rule")
            if rule and rule.get("comment") == comment:
                handles.append(int(rule["handle"]))
        return handles

    def quarantined(self) -> dict[str, float | None]:
        """Return the quarantined addresses with the seconds left before each expires (None: no timeout)."""
        self.ensure_table()
        found: dict[str, float | None] = {}
        for set_name in ("quarantine4", "quarantine6"):
            listing = json.loads(self._run("-j", "list", "set", "inet", self.table, set_name))
            for item in listing.get("nftables", []):
                for element in (item.get("set") or {}).get("elem", []) or []:
                    if isinstance(element, dict) and "elem" in element:
                        found[str(element["elem"]["val"])] = element["elem"].get("expires")
                    else:
                        found[str(element)] = None
        return found


def _address(request: ActionRequest, actuator: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    value = request.target.require("ip", actuator)
    try:
        return ipaddress.ip_address(str(value))
    except ValueError:
        raise ActuatorError(f"device {request.target.device!r}: invalid ip {value!r}", retryable=False) from None


def _limit_expression(params: dict[str, Any]) -> str:
    """Return the nft rate for ``rate`` in ``unit`` pps (packets) or kbps (kilobits) per second."""
    rate = params.get("rate")
    unit = params.get("unit", "pps")
    if not isinstance(rate, (int, float)) or rate <= 0:
        raise ActuatorError(f"rate_limit needs a positive rate, got {rate!r}", retryable=False)
    if unit == "pps":
        return f"{max(1, round(rate))}/second"
    if unit == "kbps":
        return f"{max(1, round(rate * 125))} bytes/second"
    raise ActuatorError(f"rate_limit unit must be pps or kbps, got {unit!r}", retryable=False)
