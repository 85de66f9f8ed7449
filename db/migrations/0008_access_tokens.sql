-- People's bearer tokens (the access layer shared by every gRPC service).
-- Only a SHA-256 digest of each token is stored: the token is 256 random
-- bits, so a digest cannot be reversed or guessed, and a leaked table
-- grants nothing. `prefix` (the token's first characters) names a token
-- in listings and revocations without revealing it.

CREATE TABLE IF NOT EXISTS access_tokens (
    prefix      text PRIMARY KEY,
    digest      bytea NOT NULL UNIQUE,
    identity    text NOT NULL,
    role        text NOT NULL CHECK (role IN ('analyst', 'officer', 'admin')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
