"""The in-memory subscription index: event type -> matching subscriptions, without a scan.

Patterns are exact dotted names (`order.created`), prefix wildcards (`order.*` matches every
type that starts with `order.`, at any depth) or `*` for every type. A lookup costs one dict
probe per dot in the event type, however many subscriptions there are.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

ALL = "*"


@dataclass(frozen=True)
class Target:
    subscription_id: str
    tenant_id: str
    event_types: tuple[str, ...]
    operations: frozenset[str] = frozenset()  # empty: every operation, and events without one
    payload_filter: dict[str, Any] | None = field(default=None, hash=False, compare=False)

    def accepts_operation(self, operation: str | None) -> bool:
        return not self.operations or (operation is not None and operation in self.operations)


class SubscriptionIndex:
    def __init__(self, targets: Iterable[Target] = ()) -> None:
        self._exact: dict[tuple[str, str], list[Target]] = defaultdict(list)
        self._prefix: dict[tuple[str, str], list[Target]] = defaultdict(list)
        self._all: dict[str, list[Target]] = defaultdict(list)
        self.size = 0
        for target in targets:
            self._add(target)

    def _add(self, target: Target) -> None:
        self.size += 1
        for pattern in set(target.event_types):
            if pattern == ALL:
                self._all[target.tenant_id].append(target)
            elif pattern.endswith(".*"):
                self._prefix[(target.tenant_id, pattern[:-2])].append(target)
            else:
                self._exact[(target.tenant_id, pattern)].append(target)

    def match(self, tenant: str, event_type: str, operation: str | None = None) -> list[Target]:
        """Every subscription of `tenant` that wants this event, each once."""
        found: dict[str, Target] = {}
        candidates = [self._exact.get((tenant, event_type), ()), self._all.get(tenant, ())]
        parts = event_type.split(".")
        for depth in range(1, len(parts)):
            candidates.append(self._prefix.get((tenant, ".".join(parts[:depth])), ()))
        for group in candidates:
            for target in group:
                if target.accepts_operation(operation):
                    found.setdefault(target.subscription_id, target)
        return list(found.values())
