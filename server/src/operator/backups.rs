//! Encrypted backups the browser uploads before it migrates: stored opaque, per user.
//!
//! The server cannot read a backup (it is sealed with the user's passphrase or a key that
//! never leaves the browser); it only checks that the bytes start with a well-formed
//! `ferry-backup` header ([`ferry_core::backup::read_header`]) whose `backup_id` is the one the
//! upload names, so that a wrong file is refused at once rather than discovered on restore.
//! Uploading the same id again with the same bytes is a no-op (a retry); with other bytes it
//! is refused. Every query is scoped by the token's user.

use tokio_postgres::Client;
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::db::sql::rfc3339_sql;
use crate::db::{DbError, query_error};

/// Longest accepted backup id, in characters.
pub const MAX_BACKUP_ID: usize = 200;

pub use ferry_core::contract::StoredBackup;

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum BackupUploadError {
    /// The id is empty, too long or holds control characters.
    #[error(
        "the X-Ferry-Backup-Id header must be 1 to {MAX_BACKUP_ID} characters without control characters, found {0:?}"
    )]
    BadId(String),
    /// The bytes are not a Ferry backup.
    #[error("the body is not a Ferry backup: {0}")]
    NotABackup(#[from] ferry_core::backup::BackupError),
    /// The header names another id.
    #[error(
        "the backup's own id is {inside:?} but X-Ferry-Backup-Id says {header:?}: send the id from the backup's metadata"
    )]
    IdMismatch {
        /// In the file.
        inside: String,
        /// In the request header.
        header: String,
    },
    /// Another backup with this id exists.
    #[error(
        "a different backup with id {0:?} is already stored: backups are never replaced; use a new id"
    )]
    Exists(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Stores `bytes` as `user`'s backup `id` (see the module documentation).
pub async fn store(
    client: &Client,
    user: Uuid,
    id: &str,
    bytes: &[u8],
) -> Result<StoredBackup, BackupUploadError> {
    if id.is_empty() || id.chars().count() > MAX_BACKUP_ID || id.chars().any(char::is_control) {
        return Err(BackupUploadError::BadId(id.to_owned()));
    }
    let header = ferry_core::backup::read_header(bytes)?;
    if header.metadata.backup_id != id {
        return Err(BackupUploadError::IdMismatch {
            inside: header.metadata.backup_id,
            header: id.to_owned(),
        });
    }
    let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
    let inserted = client
        .execute_typed(
            "INSERT INTO ferry_backups (user_id, id, size_bytes, blob) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id, id) DO NOTHING",
            &[
                (&user, Type::UUID),
                (&id, Type::TEXT),
                (&size, Type::INT8),
                (&bytes, Type::BYTEA),
            ],
        )
        .await
        .map_err(query_error("store the backup"))?;
    if inserted == 0 {
        let same: bool = client
            .query_typed_one(
                "SELECT blob = $3 FROM ferry_backups WHERE user_id = $1 AND id = $2",
                &[
                    (&user, Type::UUID),
                    (&id, Type::TEXT),
                    (&bytes, Type::BYTEA),
                ],
            )
            .await
            .and_then(|row| row.try_get(0))
            .map_err(query_error("compare with the stored backup"))?;
        if !same {
            return Err(BackupUploadError::Exists(id.to_owned()));
        }
    }
    let listed = list(client, user, Some(id)).await?;
    listed.into_iter().next().ok_or_else(|| {
        DbError::Query {
            context: "read the stored backup back".to_owned(),
            reason: format!("backup {id:?} is not there after it was stored"),
            code: None,
        }
        .into()
    })
}

/// `user`'s backups (only `id`, when given), newest first.
pub async fn list(
    client: &Client,
    user: Uuid,
    id: Option<&str>,
) -> Result<Vec<StoredBackup>, DbError> {
    let rows = client
        .query_typed(
            &format!(
                "SELECT id, size_bytes, {} FROM ferry_backups
                 WHERE user_id = $1 AND ($2::text IS NULL OR id = $2)
                 ORDER BY created_at DESC, id",
                rfc3339_sql("created_at")
            ),
            &[(&user, Type::UUID), (&id, Type::TEXT)],
        )
        .await
        .map_err(|e| DbError::query("list the backups", &e))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let read = |row: &tokio_postgres::Row| -> Result<StoredBackup, tokio_postgres::Error> {
            Ok(StoredBackup {
                id: row.try_get(0)?,
                size: u64::try_from(row.try_get::<_, i64>(1)?).unwrap_or(0),
                created_at: row.try_get(2)?,
            })
        };
        out.push(read(&row).map_err(|e| DbError::query("read a backup", &e))?);
    }
    Ok(out)
}

/// The bytes of `user`'s backup `id`, if there is one.
pub async fn fetch(client: &Client, user: Uuid, id: &str) -> Result<Option<Vec<u8>>, DbError> {
    client
        .query_typed_opt(
            "SELECT blob FROM ferry_backups WHERE user_id = $1 AND id = $2",
            &[(&user, Type::UUID), (&id, Type::TEXT)],
        )
        .await
        .map_err(|e| DbError::query("read the backup", &e))?
        .map(|row| row.try_get(0))
        .transpose()
        .map_err(|e| DbError::query("read the backup", &e))
}
