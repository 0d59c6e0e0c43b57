"""Settling outcomes, in one place: `settler.py` (the thread that records, publishes onward
and acks in batches), `rows.py` (the delivery rows' update, with its PostgreSQL fast path in
`rows_pg.py`), `onward.py` (the message each outcome publishes before its ack).
"""

from dispatcher.settle.settler import Settler

__all__ = ["Settler"]
