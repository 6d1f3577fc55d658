"""Notifications: what happened, rendered per channel, delivered from a durable outbox."""
