-- The server's heartbeat: one row, ticked every second while the server runs. At start (and
-- after any gap in ticks) running leases are extended by the time the server was not ticking,
-- so workers never lose a lease because the server itself was down.
CREATE TABLE server_liveness (
    id        BOOLEAN PRIMARY KEY DEFAULT true CHECK (id),
    last_tick TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO server_liveness DEFAULT VALUES;
