-- Remote actors, follow relationships, blocks, inbox deduplication, and the
-- activities we publish (served at their ids, delivered by tasks).

CREATE TABLE remote_actors (
    id                INTEGER PRIMARY KEY,
    uri               TEXT NOT NULL UNIQUE,
    host              TEXT NOT NULL,
    type              TEXT NOT NULL,
    username          TEXT NOT NULL,
    -- Domain of the verified WebFinger handle (differs from host on split domains).
    acct_domain       TEXT,
    name              TEXT NOT NULL DEFAULT '',
    summary           TEXT NOT NULL DEFAULT '',
    url               TEXT,
    inbox             TEXT NOT NULL,
    shared_inbox      TEXT,
    outbox            TEXT,
    followers         TEXT,
    following         TEXT,
    icon_url          TEXT,
    header_url        TEXT,
    key_id            TEXT,
    public_key_pem    TEXT,
    manually_approves INTEGER NOT NULL DEFAULT 0,
    also_known_as     TEXT NOT NULL DEFAULT '[]',
    moved_to          TEXT,
    fetched_at        REAL NOT NULL,
    created_at        REAL NOT NULL,
    deleted_at        REAL
);
CREATE INDEX remote_actors_key_id ON remote_actors (key_id);
CREATE INDEX remote_actors_handle ON remote_actors (username, acct_domain);
CREATE INDEX remote_actors_fetched ON remote_actors (fetched_at);

-- follower follows followee; both are actor URIs, local or remote.
CREATE TABLE follows (
    id          INTEGER PRIMARY KEY,
    follower    TEXT NOT NULL,
    followee    TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'accepted')),
    -- The Follow activity's id: Accept, Reject and Undo refer to it.
    activity_id TEXT NOT NULL,
    created_at  REAL NOT NULL,
    accepted_at REAL,
    UNIQUE (follower, followee)
);
CREATE INDEX follows_followee ON follows (followee, state, id);
CREATE INDEX follows_activity ON follows (activity_id);

CREATE TABLE blocks (
    id          INTEGER PRIMARY KEY,
    blocker     TEXT NOT NULL,
    blocked     TEXT NOT NULL,
    activity_id TEXT NOT NULL,
    created_at  REAL NOT NULL,
    UNIQUE (blocker, blocked)
);
CREATE INDEX blocks_blocked ON blocks (blocked);

-- Ids of activities already taken in, so a redelivery is processed once.
CREATE TABLE inbox_seen (
    activity_id TEXT PRIMARY KEY,
    received_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX inbox_seen_received ON inbox_seen (received_at);

-- Activities published by local accounts.
CREATE TABLE activities (
    id         INTEGER PRIMARY KEY,
    uri        TEXT NOT NULL UNIQUE,
    account_id INTEGER NOT NULL REFERENCES accounts (id),
    type       TEXT NOT NULL,
    document   TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX activities_account ON activities (account_id, id);
