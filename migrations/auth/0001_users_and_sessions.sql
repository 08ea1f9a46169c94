-- auth-service owns the `auth` schema; task-service never reads it.

CREATE TABLE auth.users (
    id            uuid        PRIMARY KEY,
    -- Stored trimmed, as the user typed it; compared case-insensitively through the index below.
    email         text        NOT NULL,
    -- bcrypt's modular-crypt string ($2b$<cost>$…): the cost travels with the hash, so a raised
    -- BCRYPT_COST can rehash old passwords at their next login.
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Uniqueness and lookup are both on lower(email): Alice@x and alice@x are one account.
CREATE UNIQUE INDEX users_email_key ON auth.users (lower(email));

-- A session is one login and every refresh token rotated from it (the token "family").
CREATE TABLE auth.sessions (
    id                uuid        PRIMARY KEY,
    user_id           uuid        NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- When the newest access token of this session expires: a revoked session stays on the
    -- revocation feed until then, and not a second longer.
    access_expires_at timestamptz NOT NULL,
    revoked_at        timestamptz,
    -- 'logout' or 'refresh_reuse'.
    revoked_reason    text
);

CREATE INDEX sessions_user_id ON auth.sessions (user_id);
-- Serves the revocation feed: revoked sessions whose access tokens may still be presented.
CREATE INDEX sessions_revoked ON auth.sessions (revoked_at) WHERE revoked_at IS NOT NULL;

-- Refresh tokens are opaque random values; only their SHA-256 is stored, so a copy of this
-- table cannot be replayed.
CREATE TABLE auth.refresh_tokens (
    token_hash bytea       PRIMARY KEY,
    session_id uuid        NOT NULL REFERENCES auth.sessions (id) ON DELETE CASCADE,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    -- Set when the token is spent. A second use of a spent token is theft or a race: the whole
    -- session is revoked.
    used_at    timestamptz
);

CREATE INDEX refresh_tokens_session_id ON auth.refresh_tokens (session_id);
CREATE INDEX refresh_tokens_expires_at ON auth.refresh_tokens (expires_at);
