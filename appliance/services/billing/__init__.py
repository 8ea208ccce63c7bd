"""Billing: prepaid credit in integer minor units. The append-only ledger, the per-account
billing state and operator settings, hourly metering and its charges, usage reports, the
prepaid account (overview, alerts, spend cap, grants, suspension), promo codes, monthly
invoices with their PDF, and optional Stripe top-ups. Money is parsed and shown by
`appliance.services.money` only.
"""
