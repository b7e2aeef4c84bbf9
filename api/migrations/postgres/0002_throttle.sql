-- Login and registration throttling: one counter per key (an account and IP pair, an IP,
-- an account, a registering IP) for the window that started with its first attempt.
-- A row is upserted, and so locked, by the transaction that counts an attempt, which is
-- what keeps the count exact however many attempts arrive at once; the per-attempt rows
-- of `login_failures` were read and written in separate statements and raced.
DROP TABLE login_failures;

CREATE TABLE throttle (
    key        TEXT PRIMARY KEY,
    attempts   BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX throttle_expiry ON throttle (expires_at);
