-- Alerts: the state of each (alert, tenant), every transition (event), the webhook outbox, and
-- each (tenant, metric)'s last successful and first failing fetch (for stale_for/failing_for).
-- Times are Unix seconds (UTC), as in history_points.

CREATE TABLE alert_states (
    alert       TEXT    NOT NULL,
    tenant      TEXT    NOT NULL,
    metric      TEXT    NOT NULL,
    -- 'ok' or 'firing'.
    state       TEXT    NOT NULL,
    -- When the state began.
    since       INTEGER NOT NULL,
    -- The value compared and the threshold it was compared with, at the transition.
    value       REAL,
    threshold   REAL,
    -- The rule's definition when the state was set: a reload that changes it resolves the state.
    rule        TEXT    NOT NULL,
    PRIMARY KEY (alert, tenant)
);

CREATE TABLE alert_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Stable event id (evt_…), also in the outbox.
    id          TEXT    NOT NULL UNIQUE,
    -- 'alert.firing' or 'alert.resolved'.
    type        TEXT    NOT NULL,
    alert       TEXT    NOT NULL,
    tenant      TEXT    NOT NULL,
    metric      TEXT    NOT NULL,
    value       REAL,
    threshold   REAL,
    since       INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    -- The exact JSON body every attempt sends (and signs).
    body        TEXT    NOT NULL
);
CREATE INDEX alert_events_by_at ON alert_events (at);

-- The outbox: one row per (event, endpoint), written in the transaction of the state change.
CREATE TABLE webhook_deliveries (
    -- The `webhook-id` header: the same on every attempt.
    message_id    TEXT    PRIMARY KEY,
    event_id      TEXT    NOT NULL,
    webhook       TEXT    NOT NULL,
    -- 'pending', 'delivered' or 'failed'.
    status        TEXT    NOT NULL,
    attempts      INTEGER NOT NULL,
    next_attempt  INTEGER NOT NULL,
    -- A replica attempting the row holds it until then (a crashed replica's lease expires).
    claimed_until INTEGER NOT NULL,
    last_status   INTEGER,
    last_error    TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, webhook, next_attempt);

CREATE TABLE alert_fetches (
    tenant        TEXT    NOT NULL,
    metric        TEXT    NOT NULL,
    last_success  INTEGER,
    -- The first failure since the last success (NULL while fetches succeed).
    first_failure INTEGER,
    PRIMARY KEY (tenant, metric)
);
