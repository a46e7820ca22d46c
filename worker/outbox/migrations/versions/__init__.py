"""Revisions of the outbox schema, oldest first."""
