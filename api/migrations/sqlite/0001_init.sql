-- Accounts, bearer tokens, login throttling, projects and the sync bookkeeping.
-- Times are milliseconds since the Unix epoch (BIGINT), dates are ISO `YYYY-MM-DD` text.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

-- Only the sha256 of a token is stored: a leaked table does not leak sessions.
CREATE TABLE auth_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX auth_tokens_expiry ON auth_tokens (expires_at);

CREATE TABLE login_failures (
    key       TEXT NOT NULL,
    failed_at BIGINT NOT NULL
);
CREATE INDEX login_failures_key ON login_failures (key, failed_at);

-- One row per user: the seq counter (locked by every write transaction, which is what
-- makes seq order commit order), the purge horizon, and the live set's count and digest.
CREATE TABLE sync_state (
    user_id    TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    purged_seq BIGINT NOT NULL,
    live_count BIGINT NOT NULL,
    checksum   TEXT NOT NULL
);

-- A row carries the seq of its last change; a tombstone keeps `deleted_at`.
CREATE TABLE projects (
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    id              TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    name            TEXT NOT NULL,
    client          TEXT NOT NULL,
    city            TEXT NOT NULL,
    budget_centimes BIGINT NOT NULL,
    status          TEXT NOT NULL,
    start_date      TEXT,
    end_date        TEXT,
    progress        BIGINT NOT NULL,
    notes           TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    deleted_at      BIGINT,
    PRIMARY KEY (user_id, id)
);
CREATE UNIQUE INDEX projects_user_seq ON projects (user_id, seq);
CREATE INDEX projects_tombstones ON projects (deleted_at) WHERE deleted_at IS NOT NULL;

-- The stored ack of every op, so a re-sent op answers the same and changes nothing.
CREATE TABLE op_acks (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    op_id      TEXT NOT NULL,
    ack        TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, op_id)
);
CREATE INDEX op_acks_created ON op_acks (created_at);

-- Exact content of each committed batch, read by the change-bus listeners of other
-- processes (PostgreSQL only; SQLite publishes in process and leaves this empty).
CREATE TABLE change_log (
    user_id    TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    change     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, seq)
);
CREATE INDEX change_log_created ON change_log (created_at);
