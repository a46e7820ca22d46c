-- The order_sync_outbox table for PostgreSQL, for DBAs who apply DDL by hand.
-- Everything below this header is generated from the Alembic migrations (worker/outbox/migrations):
--     order-sync outbox init --sql
-- Equivalent to running `order-sync outbox init` against the database. A unit test checks
-- that it matches worker/outbox/table.py.

BEGIN;

CREATE TABLE order_sync_outbox_version (
    version_num VARCHAR(32) NOT NULL, 
    CONSTRAINT order_sync_outbox_version_pkc PRIMARY KEY (version_num)
);

-- Running upgrade  -> 0001

CREATE TABLE order_sync_outbox (
    id BIGSERIAL NOT NULL, 
    event_id TEXT NOT NULL, 
    order_id INTEGER NOT NULL, 
    occurred_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    changes JSONB, 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    published_at TIMESTAMP WITH TIME ZONE, 
    attempts INTEGER DEFAULT 0 NOT NULL, 
    last_error TEXT, 
    PRIMARY KEY (id), 
    CONSTRAINT order_sync_outbox_event_id_key UNIQUE (event_id)
);

CREATE INDEX ix_order_sync_outbox_pending ON order_sync_outbox (id) WHERE published_at IS NULL;

CREATE INDEX ix_order_sync_outbox_published_at ON order_sync_outbox (published_at);

INSERT INTO order_sync_outbox_version (version_num) VALUES ('0001') RETURNING order_sync_outbox_version.version_num;

COMMIT;

