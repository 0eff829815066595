-- The demo "ERP": one table of job operations and their runs, read by erpsync's generic-sql
-- source (see erpsync-demo.toml for the column mapping). Times are UTC wall time.
CREATE TABLE shop_operations (
    run_key          varchar(64)   PRIMARY KEY,
    job              varchar(32)   NOT NULL,
    operation        varchar(16)   NOT NULL,
    machine          varchar(32)   NOT NULL,
    part             varchar(64),
    quantity         integer,
    setup_hours      numeric(10, 3),
    minutes_per_part numeric(10, 3),
    status           varchar(16)   NOT NULL,
    started_at       timestamp,
    ended_at         timestamp
);

INSERT INTO shop_operations
    (run_key, job, operation, machine, part, quantity, setup_hours, minutes_per_part, status, started_at, ended_at)
VALUES
    ('W1001-10-1', 'W1001', '10', 'HAAS-VF2', 'BRACKET-A', 250, 0.5, 1.2, 'running',
        (now() AT TIME ZONE 'UTC') - interval '2 hours', NULL),
    ('W1001-20-1', 'W1001', '20', 'MAZAK-QT', 'BRACKET-A', 250, 0.75, 0.8, 'queued', NULL, NULL),
    ('W1002-10-1', 'W1002', '10', 'MAZAK-QT', 'SHAFT-7', 40, 1.0, 6.5, 'setup',
        (now() AT TIME ZONE 'UTC') - interval '20 minutes', NULL),
    ('W1003-10-1', 'W1003', '10', 'DMG-5X', 'HOUSING-2', 12, 2.0, 45.0, 'done',
        (now() AT TIME ZONE 'UTC') - interval '5 hours', (now() AT TIME ZONE 'UTC') - interval '1 hour');
