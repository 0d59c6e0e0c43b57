"""How the in-memory broker routes, as RabbitMQ does: bindings from an exchange to queues
and to other exchanges, matched by the exchange's kind (direct, topic, fanout, headers), and
an exchange's `alternate-exchange` for what none of its bindings take.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.errors import TopologyError
from common.transport.topology import Exchange, Topology


@dataclass(frozen=True)
class Binding:
    source: str  # an exchange
    key: str
    target: str  # a queue, or an exchange when `to_exchange`
    to_exchange: bool = False
    match: tuple[tuple[str, Any], ...] = ()  # the arguments of a headers binding


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: `*` is one word, `#` is zero or more words."""

    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        if not k:
            return False
        return (p[0] == "*" or p[0] == k[0]) and match(p[1:], k[1:])

    return match(pattern.split("."), key.split("."))


def headers_match(match: Mapping[str, Any], headers: Mapping[str, Any]) -> bool:
    """`x-match` `all` (the default) or `any` over the binding's other arguments."""
    wanted = {k: v for k, v in match.items() if not k.startswith("x-")}
    hits = [k in headers and headers[k] == v for k, v in wanted.items()]
    return any(hits) if match.get("x-match") == "any" else all(hits)


class Routes:
    """Exchanges and bindings; the caller holds the broker's lock."""

    def __init__(self) -> None:
        self.exchanges: dict[str, Exchange] = {}
        self.bindings: list[Binding] = []

    def declare(self, topology: Topology, queues: Mapping[str, object]) -> None:
        """Exchanges, then exchange bindings, then (queues being declared by the caller)
        queue bindings, then the removal of old bindings: RabbitMQ's order too."""
        for exchange in topology.exchanges:
            known = self.exchanges.get(exchange.name)
            if known is not None and known != exchange:
                raise TopologyError(f"exchange {exchange.name} exists with other arguments")
            self.exchanges[exchange.name] = exchange
        for exchange in topology.exchanges:
            for source, key in exchange.bindings:
                self._bind(Binding(source, key, exchange.name, to_exchange=True))
        for queue in topology.queues:
            if queue.name not in queues:
                raise TopologyError(f"queue {queue.name} was not declared")
            for source, key in queue.bindings:
                self._bind(Binding(source, key, queue.name, match=tuple(queue.match.items())))
        for queue_name, source, key in topology.unbindings:
            self.bindings = [
                b
                for b in self.bindings
                if (b.source, b.key, b.target, b.to_exchange) != (source, key, queue_name, False)
            ]

    def _bind(self, binding: Binding) -> None:
        if binding.source not in self.exchanges:
            raise TopologyError(f"cannot bind to undeclared exchange {binding.source}")
        if binding not in self.bindings:
            self.bindings.append(binding)

    def route(self, exchange_name: str, routing_key: str, headers: Mapping[str, Any]) -> list[str]:
        """The queues a message reaches, each once; [] when it is unroutable."""
        targets: list[str] = []
        self._route(exchange_name, routing_key, headers, targets, set())
        return targets

    def _route(
        self, name: str, key: str, headers: Mapping[str, Any], out: list[str], seen: set[str]
    ) -> None:
        exchange = self.exchanges.get(name)
        if exchange is None:
            raise TopologyError(f"exchange {name!r} was never declared")
        if name in seen:
            return
        seen.add(name)
        before = len(out)
        for binding in self.bindings:
            if binding.source != name or not self._matches(exchange, binding, key, headers):
                continue
            if binding.to_exchange:
                self._route(binding.target, key, headers, out, seen)
            elif binding.target not in out:
                out.append(binding.target)
        alternate = exchange.arguments.get("alternate-exchange")
        if len(out) == before and alternate is not None:
            self._route(str(alternate), key, headers, out, seen)

    @staticmethod
    def _matches(
        exchange: Exchange, binding: Binding, key: str, headers: Mapping[str, Any]
    ) -> bool:
        if exchange.kind == "fanout":
            return True
        if exchange.kind == "direct":
            return binding.key == key
        if exchange.kind == "topic":
            return topic_matches(binding.key, key)
        return headers_match(dict(binding.match), headers)
