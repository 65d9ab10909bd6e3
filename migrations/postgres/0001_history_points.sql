-- One row per (tenant, metric, bucket): an hour, or a day once rolled up (`resolution`).
-- Times are Unix seconds (UTC), the one type both engines share through sqlx's Any driver.
CREATE TABLE history_points (
    tenant      TEXT             NOT NULL,
    metric      TEXT             NOT NULL,
    -- The bucket's start: a whole hour, or midnight UTC for a day.
    at          BIGINT           NOT NULL,
    -- 3600 (an hour) or 86400 (a day: rolled up, or a backfilled daily snapshot).
    resolution  BIGINT           NOT NULL,
    -- The last reading of the bucket and when it was read (orders readings that arrive late).
    last        DOUBLE PRECISION NOT NULL,
    last_at     BIGINT           NOT NULL,
    min         DOUBLE PRECISION NOT NULL,
    max         DOUBLE PRECISION NOT NULL,
    samples     BIGINT           NOT NULL,
    -- The highest possible score at the last reading (`secure` only).
    max_score   DOUBLE PRECISION,
    PRIMARY KEY (tenant, metric, at)
);

-- Roll-up and retention scan by age over every tenant.
CREATE INDEX history_points_by_age ON history_points (resolution, at);
