-- Domains, accounts and instance actors: what the Host-based router needs.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- Bumped by triggers whenever domains, accounts or instance actors change, so a
-- running server notices changes made by the CLI (another process) cheaply.
INSERT INTO meta (key, value) VALUES ('directory_generation', '0');

CREATE TABLE domains (
    id             INTEGER PRIMARY KEY,
    domain         TEXT NOT NULL UNIQUE,
    -- Host that serves this domain's ActivityPub URLs; NULL: the domain itself.
    service_domain TEXT,
    created_at     REAL NOT NULL
);

CREATE TABLE accounts (
    id              INTEGER PRIMARY KEY,
    username        TEXT NOT NULL,
    -- The handle domain (alice.example in @alice@alice.example).
    domain          TEXT NOT NULL,
    -- The URL host of the actor: the domain's service domain, or the domain.
    host            TEXT NOT NULL,
    display_name    TEXT NOT NULL DEFAULT '',
    summary         TEXT NOT NULL DEFAULT '',
    password_hash   TEXT NOT NULL,
    is_admin        INTEGER NOT NULL DEFAULT 0,
    locked          INTEGER NOT NULL DEFAULT 0,
    discoverable    INTEGER NOT NULL DEFAULT 1,
    private_key_pem TEXT NOT NULL,
    public_key_pem  TEXT NOT NULL,
    also_known_as   TEXT NOT NULL DEFAULT '[]',
    fields          TEXT NOT NULL DEFAULT '[]',
    avatar_url      TEXT,
    header_url      TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    -- Removed accounts keep their row and key (to sign the actor's Delete);
    -- the username stays taken on that host, as other servers remember it.
    deleted_at      REAL
);
CREATE UNIQUE INDEX accounts_host_username ON accounts (host, username);
CREATE INDEX accounts_domain ON accounts (domain);

-- One Application actor per URL host; it signs our outgoing GETs.
CREATE TABLE instance_actors (
    host            TEXT PRIMARY KEY,
    private_key_pem TEXT NOT NULL,
    public_key_pem  TEXT NOT NULL,
    created_at      REAL NOT NULL
);

CREATE TRIGGER domains_ins AFTER INSERT ON domains BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'directory_generation';
END;
CREATE TRIGGER domains_upd AFTER UPDATE ON domains BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'directory_generation';
END;
CREATE TRIGGER domains_del AFTER DELETE ON domains BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'directory_generation';
END;
CREATE TRIGGER accounts_ins AFTER INSERT ON accounts BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'directory_generation';
END;
CREATE TRIGGER accounts_upd AFTER UPDATE ON accounts BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'directory_generation';
END;
CREATE TRIGGER accounts_del AFTER DELETE ON accounts BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'directory_generation';
END;
CREATE TRIGGER instance_actors_ins AFTER INSERT ON instance_actors BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'directory_generation';
END;
