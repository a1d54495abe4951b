-- Clients reach a cluster's database by its name (DatabaseName, else the identifier): one
-- name, one cluster.
CREATE UNIQUE INDEX clusters_by_database ON clusters (COALESCE(database_name, id));
