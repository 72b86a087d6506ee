-- What the conflict, rollback and backup endpoints need beyond the ingest schema.

-- A conflict can be resolved by an edited version (neither stored nor incoming); the chosen
-- value is kept for the audit trail, next to the before-image of the row.
ALTER TABLE ferry_conflicts DROP CONSTRAINT ferry_conflicts_status_check;
ALTER TABLE ferry_conflicts ADD CONSTRAINT ferry_conflicts_status_check
    CHECK (status IN ('open', 'kept_stored', 'took_incoming', 'edited', 'dismissed'));
ALTER TABLE ferry_conflicts ADD COLUMN resolution jsonb;

-- A backup's id is chosen by the browser (`BackupMetadata::backup_id`): any short text, not
-- necessarily a UUID.
ALTER TABLE ferry_backups ALTER COLUMN id TYPE text;
ALTER TABLE ferry_backups ADD CONSTRAINT ferry_backups_id_length
    CHECK (length(id) BETWEEN 1 AND 200);

