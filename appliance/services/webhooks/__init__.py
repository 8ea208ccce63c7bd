"""Webhooks: endpoints that receive an account's events, signed as Standard Webhooks.
Endpoints and their secrets, deliveries with the retry schedule and the log, sending in
batches, the dispatcher thread of the serving process, signatures (ours and Stripe's),
and the SSRF guard every outbound request to a user's URL goes through.
"""
