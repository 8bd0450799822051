-- Every archived room message and DM, once, keyed by its log and id. The
-- frame is stored as it was delivered, so a page is served without
-- re-encoding. A page is a range scan of the primary key.
CREATE TABLE IF NOT EXISTS messages (
    log TEXT NOT NULL,
    id_ms BIGINT NOT NULL,
    id_seq BIGINT NOT NULL,
    frame BYTEA NOT NULL,
    archived_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (log, id_ms, id_seq)
);
