"""The relational model (SQLAlchemy 2), one module per concern; Alembic migrations in
`common/db/migrations/` mirror it. Every model is importable from here."""

from __future__ import annotations

from common.db.days import on_its_day as on_its_day
from common.db.models.base import Base as Base
from common.db.models.limits import ApiRateWindow as ApiRateWindow
from common.db.models.limits import HandshakeLease as HandshakeLease
from common.db.models.limits import RateWindow as RateWindow
from common.db.models.limits import TenantApiLimits as TenantApiLimits
from common.db.models.operations import AuditEntry as AuditEntry
from common.db.models.operations import IdempotencyRecord as IdempotencyRecord
from common.db.models.operations import PoisonMessage as PoisonMessage
from common.db.models.operations import ReplayItem as ReplayItem
from common.db.models.operations import ReplayJob as ReplayJob
from common.db.models.operations import SecretCanary as SecretCanary
from common.db.models.portal import DISPATCHER_HEARTBEAT_S as DISPATCHER_HEARTBEAT_S
from common.db.models.portal import DISPATCHER_LIVE_S as DISPATCHER_LIVE_S
from common.db.models.portal import CircuitState as CircuitState
from common.db.models.portal import DispatcherRow as DispatcherRow
from common.db.models.portal import PortalLink as PortalLink
from common.db.models.portal import PortalTheme as PortalTheme
from common.db.models.tenants import ApiKey as ApiKey
from common.db.models.tenants import EventTypeEntry as EventTypeEntry
from common.db.models.tenants import Subscription as Subscription
from common.db.models.tenants import Tenant as Tenant
from common.db.models.tenants import TenantSettings as TenantSettings
from common.db.models.traffic import Attempt as Attempt
from common.db.models.traffic import Delivery as Delivery
from common.db.models.traffic import EventRow as EventRow
from common.db.models.traffic import HeaderSet as HeaderSet
from common.db.models.traffic import dead_letter_indexes as dead_letter_indexes
