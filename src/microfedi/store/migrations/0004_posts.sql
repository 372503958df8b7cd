-- Posts (local and remote), their edits, likes, boosts, timelines,
-- notifications, pinned posts and reports.

CREATE TABLE posts (
    -- Snowflake from the publication time, so timelines page by id.
    id            INTEGER PRIMARY KEY,
    uri           TEXT NOT NULL UNIQUE,
    url           TEXT,
    author        TEXT NOT NULL,
    -- Set for posts written here.
    account_id    INTEGER REFERENCES accounts (id),
    type          TEXT NOT NULL,
    visibility    TEXT NOT NULL CHECK (visibility IN ('public', 'unlisted', 'private', 'direct')),
    in_reply_to   TEXT,
    -- Thread root (or the remote `context`), so a conversation stays together.
    conversation  TEXT NOT NULL,
    summary       TEXT NOT NULL DEFAULT '',
    sensitive     INTEGER NOT NULL DEFAULT 0,
    content       TEXT NOT NULL DEFAULT '',
    source        TEXT,
    language      TEXT,
    published     REAL NOT NULL,
    updated       REAL,
    -- JSON lists: addressing, mentions [{href, name}], hashtags, emoji,
    -- attachments [{url, mediaType, name, blurhash, width, height}], poll.
    recipients    TEXT NOT NULL DEFAULT '[]',
    mentions      TEXT NOT NULL DEFAULT '[]',
    hashtags      TEXT NOT NULL DEFAULT '[]',
    emoji         TEXT NOT NULL DEFAULT '[]',
    attachments   TEXT NOT NULL DEFAULT '[]',
    poll          TEXT,
    reply_count   INTEGER NOT NULL DEFAULT 0,
    like_count    INTEGER NOT NULL DEFAULT 0,
    boost_count   INTEGER NOT NULL DEFAULT 0,
    pinned        INTEGER NOT NULL DEFAULT 0,
    received_at   REAL NOT NULL,
    deleted_at    REAL
);
CREATE INDEX posts_author ON posts (author, id);
CREATE INDEX posts_account ON posts (account_id, id) WHERE account_id IS NOT NULL;
CREATE INDEX posts_conversation ON posts (conversation, id);
CREATE INDEX posts_reply ON posts (in_reply_to);
CREATE INDEX posts_public ON posts (id) WHERE visibility = 'public' AND deleted_at IS NULL;

CREATE TABLE post_edits (
    id         INTEGER PRIMARY KEY,
    post_id    INTEGER NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
    summary    TEXT NOT NULL,
    content    TEXT NOT NULL,
    sensitive  INTEGER NOT NULL,
    edited_at  REAL NOT NULL
);
CREATE INDEX post_edits_post ON post_edits (post_id, id);

CREATE TABLE post_tags (
    tag     TEXT NOT NULL,
    post_id INTEGER NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
    PRIMARY KEY (tag, post_id)
) WITHOUT ROWID;

CREATE TABLE likes (
    id         INTEGER PRIMARY KEY,
    uri        TEXT NOT NULL,
    actor      TEXT NOT NULL,
    post_id    INTEGER NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
    created_at REAL NOT NULL,
    UNIQUE (actor, post_id)
);
CREATE INDEX likes_uri ON likes (uri);

CREATE TABLE boosts (
    -- Snowflake of the boost time: a boost appears in timelines when it happened.
    id         INTEGER PRIMARY KEY,
    uri        TEXT NOT NULL UNIQUE,
    actor      TEXT NOT NULL,
    post_id    INTEGER NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
    visibility TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (actor, post_id)
);

-- Home timelines, filled on write (fan-out to the few local accounts), so a
-- page is one index range scan however many posts are stored.
CREATE TABLE home_entries (
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    -- The post's id, or the boost's id for a boost.
    entry_id   INTEGER NOT NULL,
    post_id    INTEGER NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
    boost_id   INTEGER REFERENCES boosts (id) ON DELETE CASCADE,
    PRIMARY KEY (account_id, entry_id)
) WITHOUT ROWID;
CREATE INDEX home_entries_post ON home_entries (post_id);

CREATE TABLE notifications (
    id         INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    type       TEXT NOT NULL CHECK (type IN
                 ('mention', 'follow', 'follow_request', 'favourite', 'reblog', 'update', 'move')),
    actor      TEXT NOT NULL,
    post_id    INTEGER REFERENCES posts (id) ON DELETE CASCADE,
    -- The activity that caused it, so a redelivery does not notify twice.
    activity   TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (account_id, type, activity)
);
CREATE INDEX notifications_account ON notifications (account_id, id);

CREATE TABLE reports (
    id          INTEGER PRIMARY KEY,
    uri         TEXT NOT NULL UNIQUE,
    reporter    TEXT NOT NULL,
    targets     TEXT NOT NULL,
    content     TEXT NOT NULL DEFAULT '',
    created_at  REAL NOT NULL,
    resolved_at REAL
);

-- Set when a local account moved to another (outgoing Move).
ALTER TABLE accounts ADD COLUMN moved_to TEXT;
