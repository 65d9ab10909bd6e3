-- Per-control history: a row only when a control's score, maximum or state changes for a
-- tenant (about 20 rows per control and year, not one per reading). Control ids are stored
-- once, in `history_controls`; the rows name them by number. Times are Unix seconds (UTC).
CREATE TABLE history_controls (
    id       INTEGER PRIMARY KEY,
    -- Graph's control id (`controlName`, the profile's `id`).
    control  TEXT    NOT NULL UNIQUE
);

CREATE TABLE history_control_points (
    tenant     TEXT    NOT NULL,
    control    INTEGER NOT NULL REFERENCES history_controls (id),
    -- When the new value was first read.
    at         INTEGER NOT NULL,
    score      REAL    NOT NULL,
    max_score  REAL,
    -- `default`, `ignored`, `third_party` or `reviewed`.
    state      TEXT    NOT NULL,
    PRIMARY KEY (tenant, control, at)
) WITHOUT ROWID;

-- Retention deletes by age over every tenant.
CREATE INDEX history_control_points_by_age ON history_control_points (at);

-- `control_regressed` alerts: per (alert, tenant), the controls done at the last evaluation
-- and those that regressed since (JSON lists of control ids).
CREATE TABLE alert_control_states (
    alert      TEXT    NOT NULL,
    tenant     TEXT    NOT NULL,
    -- The rule's definition when written: a changed rule starts over.
    rule       TEXT    NOT NULL,
    done       TEXT    NOT NULL,
    regressed  TEXT    NOT NULL,
    PRIMARY KEY (alert, tenant)
);
