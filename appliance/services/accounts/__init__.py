"""Accounts: who people are and how they prove it. Users (signup, email verification,
sign-in, passwords, profiles), TOTP second factors and recovery codes, browser sessions,
access and refresh tokens, SSH public keys, API keys and the short-lived cache of their
authorization facts, the administrators' actions on accounts, and outgoing mail (the
outbox every message goes through). Nothing here knows instances or billing.
"""
