"""Delivery policy (docs/architecture.md section 6), one owner per decision: `retry.py` (what
an answer means and when a retry comes back), `admission/` (whether a delivery may take a
thread and go out now: lanes, in-flight cap, circuit breaker, rate limit), `autodisable.py`
(when a failing subscription is disabled, written with the settled batch).
"""
