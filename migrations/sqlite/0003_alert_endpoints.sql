-- The endpoints a firing event was queued for (a JSON array of webhook names): its resolve goes
-- to them only, never to an endpoint added later or one that never took the alert. NULL on
-- states written before this column (their resolve goes to the endpoints that take the alert).
ALTER TABLE alert_states ADD COLUMN endpoints TEXT;
