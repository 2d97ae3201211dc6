-- The dashboard's (/ui) login sessions. The browser's cookie holds a random
-- 256-bit token; only its SHA-256 is stored, so a read of this table cannot be
-- replayed as a cookie. Every state-changing form carries csrf_token.
CREATE TABLE ui_sessions (
    token_hash BYTEA       PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    csrf_token TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    last_seen  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ui_sessions_expires_idx ON ui_sessions (expires_at);
