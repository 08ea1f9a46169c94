-- The account lifecycle: sessions a user can list and end, an absolute session lifetime,
-- accounts an operator disables, and the feed of deleted accounts task-service purges from.
-- Expand only: release N−1's pods keep working on this schema (every new column is nullable or
-- has a default, and they never delete a user).

-- Set by `auth-service users disable`: no login, no refresh, every session revoked.
ALTER TABLE auth.users ADD COLUMN disabled_at timestamptz;

ALTER TABLE auth.sessions
    -- The last login or refresh: what `GET /sessions` shows as last used.
    ADD COLUMN last_used_at timestamptz NOT NULL DEFAULT now(),
    -- login + SESSION_MAX_LIFETIME_SECONDS: no refresh token of the session outlives it. NULL for
    -- sessions a release before this one started (they end with their refresh tokens).
    ADD COLUMN ends_at      timestamptz,
    -- What the client said at login, shown so a user can tell their sessions apart. Kept as
    -- long as the session row: it is deleted when its last token has expired.
    ADD COLUMN user_agent   text,
    ADD COLUMN client_ip    text;

-- A deleted account's sessions outlive it, revoked, until their access tokens have expired:
-- the revocation feed must keep listing them, or task-service would accept those tokens until
-- they expire. So deleting a user no longer deletes its sessions; it detaches them.
ALTER TABLE auth.sessions ALTER COLUMN user_id DROP NOT NULL;
ALTER TABLE auth.sessions DROP CONSTRAINT sessions_user_id_fkey;
ALTER TABLE auth.sessions ADD CONSTRAINT sessions_user_id_fkey
    FOREIGN KEY (user_id) REFERENCES auth.users (id) ON DELETE SET NULL;

-- Deleted accounts, read by task-service (through the admin port's /internal/deleted-users)
-- with a cursor on `seq` kept in its own schema, so that it purges their tasks itself, even
-- after an outage. Entries are kept DELETED_USERS_RETENTION_SECONDS.
CREATE TABLE auth.deleted_users (
    seq        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    uuid        NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX deleted_users_deleted_at ON auth.deleted_users (deleted_at);

-- The highest `seq` the retention cleanup has removed: a reader whose cursor is below it has
-- missed deletions, and says so instead of silently keeping their tasks.
CREATE TABLE auth.deleted_users_pruned (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    through  bigint  NOT NULL
);

INSERT INTO auth.deleted_users_pruned (through) VALUES (0);
