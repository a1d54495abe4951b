-- Clones and restores: the clone group a cluster belongs to, and, for a cluster made by
-- RestoreDBClusterToPointInTime, its source (identifier then, and volume), the instant
-- (microseconds since the Unix epoch) and the restore type, so that its volume can be made
-- exactly as requested, again after a crash.
ALTER TABLE clusters ADD COLUMN clone_group_id TEXT;
ALTER TABLE clusters ADD COLUMN restored_from_cluster TEXT;
ALTER TABLE clusters ADD COLUMN restored_from_volume TEXT;
ALTER TABLE clusters ADD COLUMN restored_to BIGINT;
ALTER TABLE clusters ADD COLUMN restore_type TEXT;
CREATE INDEX clusters_by_clone_group ON clusters (clone_group_id) WHERE clone_group_id IS NOT NULL;
