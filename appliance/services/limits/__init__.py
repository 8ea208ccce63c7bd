"""Limits: what keeps one caller from crowding out the others or repeating itself.
Sliding-window counters (failed sign-ins), request rate limits per key, user and IP, the
per-account quotas with operator defaults, overrides and increase requests, and the
Idempotency-Key records of creating requests. Other domains report their usage to the
quotas through `quotas.register_usage`; this package imports none of them.
"""
