"""Domain logic: plain functions taking plain values and the acting principal.

A service owns its transaction (`with database.atomic()`), raises the errors of
`appliance.errors`, and is called alike by the JSON API and the dashboard.

The core lives at this level and every domain may use it: the clock, prefixed ids,
cursor pagination, the acting principal, the audit log, money, run-time settings and
projects (the tenant every other domain hangs off). The domains are subpackages:
accounts/, limits/, instances/, billing/, events/, webhooks/, ops/; each one's
`__init__` says what it owns.
"""
