"""Events: the outbox every state change writes to in its own transaction, the catalogue
of event types, reading the event log, in-app notifications made from events, and the
live Server-Sent Events stream. Webhooks subscribe to the same events (the webhooks
package fans them out); this package does not send HTTP.
"""
