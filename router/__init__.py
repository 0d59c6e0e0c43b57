"""The router: matches events to subscriptions and emits one delivery message per target."""

from router.index import SubscriptionIndex, Target
from router.worker import Router

__all__ = ["Router", "SubscriptionIndex", "Target"]
