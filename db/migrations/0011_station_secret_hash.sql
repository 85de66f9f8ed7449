-- A station's credential is kept as an Argon2id hash (`secret_hash`); the
-- plaintext HJ 212 password column is no longer written, and what an
-- earlier version stored there is erased.

ALTER TABLE stations ADD COLUMN IF NOT EXISTS secret_hash text;

UPDATE stations SET hj212_password = NULL WHERE hj212_password IS NOT NULL;
