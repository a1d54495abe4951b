-- The master password's SCRAM-SHA-256 verifier (PostgreSQL's format,
-- SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>); the password is never kept.
ALTER TABLE clusters ADD COLUMN master_user_verifier TEXT;
