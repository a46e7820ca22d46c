"""marshmallow schemas for the order-change event contract and the Update Order body (no I/O)."""
