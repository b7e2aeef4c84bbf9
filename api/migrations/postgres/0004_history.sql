-- Who changed what: one entry per applied change of a project — a create (every field,
-- `from` null), the fields an update changed with their values before and after, a
-- delete (no fields) — by the device label and session of the push that made it.
-- Refused ops leave none. Entries go with tombstones, after
-- sync.tombstone_retention_days.
CREATE TABLE project_history (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    project_id TEXT NOT NULL,
    at         BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    device     TEXT NOT NULL,
    session_id TEXT,
    fields     TEXT NOT NULL,
    PRIMARY KEY (user_id, seq)
);
CREATE INDEX project_history_project ON project_history (user_id, project_id, seq);
CREATE INDEX project_history_at ON project_history (at);
