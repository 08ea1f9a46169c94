//! The deleted-users feed's contract: what auth-service serves on its admin port at
//! `GET /internal/deleted-users?after=<seq>&limit=<n>` and task-service reads to purge the
//! tasks of deleted accounts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The path on auth-service's admin port.
pub const PATH: &str = "/internal/deleted-users";

/// The most entries one page holds.
pub const PAGE_MAX: i64 = 1000;

/// One deleted account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct DeletedUser {
    /// Increasing, with gaps: the reader's cursor.
    pub seq: i64,
    pub user_id: Uuid,
    pub deleted_at: DateTime<Utc>,
}

/// A page of the feed.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeletedUsersPage {
    /// Deletions with `seq` greater than the `after` asked for, in `seq` order.
    pub entries: Vec<DeletedUser>,
    /// Retention has removed every entry up to this `seq`: a reader whose cursor is below it
    /// has missed deletions.
    pub pruned_through: i64,
}
