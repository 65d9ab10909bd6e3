-- Which Entra tenant each gateway tenant id stands for. A tenant id re-pointed at another Entra
-- tenant starts a new series: the previous customer's points and alert events move under an
-- archived id, its alert states are reset (`history::binding`).
CREATE TABLE tenant_bindings (
    tenant       TEXT   NOT NULL PRIMARY KEY,
    entra_tenant TEXT   NOT NULL,
    -- When the binding was made or last changed (Unix seconds).
    bound_at     BIGINT NOT NULL
);
