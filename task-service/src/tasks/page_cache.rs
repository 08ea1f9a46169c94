//! The list's pages this replica has answered, kept with the id and version of each task on
//! them, so that a page that has not changed is answered again without reading its rows'
//! columns or serializing them: an unchanged page costs one statement that returns two integers
//! per task (`list_versions.sql`), and its body is the bytes kept.
//!
//! Why the kept body is exact: a task's JSON is a function of its id and version. `id` and
//! `user_id` never change (a trigger refuses), `created_at` is set once, and title, description,
//! completed and `updated_at` change only together with `version` (the `tasks_bump_version`
//! trigger moves it whenever one of the first three changes, under the same condition as
//! `update.sql` moves `updated_at`). Ids are never reused. So a page whose tasks have, in
//! order, the ids and versions of a kept page has that page's body. The check runs against the
//! database every time, so a change made through another replica, by the purge or in SQL is
//! seen as it would be without the cache; the cache never answers without it.
//!
//! A write through this replica forgets the user's pages (`forget`), so the list that usually
//! follows it reads the rows at once instead of checking a page it knows has changed. That is
//! only a saving: a page kept from before a write is still checked.

use std::sync::Arc;

use axum::body::Bytes;
use common::db::Db;
use prometheus::{IntCounterVec, Opts, Registry};
use quick_cache::Weighter;
use quick_cache::sync::Cache;
use uuid::Uuid;

use super::store::{self, ListFilter};
use super::{Task, conditional};
use crate::error::Result;

/// Pages kept per user: the first page of each filter a client shows, and the one after.
const PAGES_PER_USER: usize = 4;

/// One answered page.
pub struct Page {
    /// (id, version) of each task on it, in order.
    pub tasks: Vec<(i64, i64)>,
    /// Its JSON body.
    pub body: Bytes,
}

impl Page {
    fn of(tasks: &[Task]) -> Result<Self> {
        // Rows that cannot be written as JSON are rows that could not be decoded: a 500.
        let body =
            serde_json::to_vec(tasks).map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
        Ok(Self {
            tasks: tasks.iter().map(|task| (task.id, task.version)).collect(),
            body: Bytes::from(body),
        })
    }

    /// The page's weak ETag: `query` names the filter, the tasks their versions.
    pub fn etag(&self, query: &str) -> axum::http::HeaderValue {
        conditional::page_etag(query, self.tasks.iter().copied())
    }
}

/// One user's kept pages, newest first.
#[derive(Clone, Default)]
struct UserPages(Vec<(ListFilter, Arc<Page>)>);

#[derive(Clone)]
struct ByBytes;

impl Weighter<Uuid, UserPages> for ByBytes {
    fn weight(&self, _user: &Uuid, pages: &UserPages) -> u64 {
        pages
            .0
            .iter()
            .map(|(_, page)| 64 + page.body.len() + 16 * page.tasks.len())
            .sum::<usize>() as u64
    }
}

/// Kept pages, at most `LIST_CACHE_MAX_BYTES` of them; 0 keeps none.
#[derive(Clone)]
pub struct PageCache {
    pages: Option<Arc<Cache<Uuid, UserPages, ByBytes>>>,
    answered: IntCounterVec,
}

impl PageCache {
    pub fn new(max_bytes: u64, registry: &Registry) -> prometheus::Result<Self> {
        let answered = IntCounterVec::new(
            Opts::new(
                "task_list_pages_total",
                "List pages answered: `kept` (unchanged since this replica answered it, its body reused), `changed` (kept but changed: read again) or `read` (not kept).",
            ),
            &["page"],
        )?;
        registry.register(Box::new(answered.clone()))?;
        // Made at 0 so that a dashboard's rate() has a series from the start.
        for page in ["kept", "changed", "read"] {
            answered.with_label_values(&[page]);
        }
        // A page of 100 tasks is about 25 KiB: the estimate sizes the map, not the limit.
        let pages = (max_bytes > 0).then(|| {
            let users = (max_bytes / 25_000).clamp(16, 1_000_000) as usize;
            Arc::new(Cache::with_weighter(users, max_bytes, ByBytes))
        });
        Ok(Self { pages, answered })
    }

    /// `user`'s page for `filter`: the kept one if its tasks are unchanged, otherwise read now
    /// (and kept).
    pub async fn page(&self, db: &Db, user: Uuid, filter: ListFilter) -> Result<Arc<Page>> {
        let Some(cache) = &self.pages else {
            self.answered.with_label_values(&["read"]).inc();
            return read(db, user, filter).await.map(Arc::new);
        };
        let kept = cache.get(&user).and_then(|pages| {
            pages
                .0
                .iter()
                .find(|(kept, _)| same_filter(kept, &filter))
                .map(|(_, page)| Arc::clone(page))
        });
        if let Some(kept) = kept {
            let now = db
                .read(|mut conn| async move { store::list_versions(&mut conn, user, filter).await })
                .await?;
            if now == kept.tasks {
                self.answered.with_label_values(&["kept"]).inc();
                return Ok(kept);
            }
            self.answered.with_label_values(&["changed"]).inc();
        } else {
            self.answered.with_label_values(&["read"]).inc();
        }
        let page = Arc::new(read(db, user, filter).await?);
        let mut pages = cache.get(&user).unwrap_or_default();
        pages.0.retain(|(kept, _)| !same_filter(kept, &filter));
        pages.0.insert(0, (filter, Arc::clone(&page)));
        pages.0.truncate(PAGES_PER_USER);
        cache.insert(user, pages);
        Ok(page)
    }

    /// Forgets `user`'s pages: this replica has just changed their tasks.
    pub fn forget(&self, user: Uuid) {
        if let Some(cache) = &self.pages {
            cache.remove(&user);
        }
    }
}

fn same_filter(a: &ListFilter, b: &ListFilter) -> bool {
    (a.completed, a.after, a.limit) == (b.completed, b.after, b.limit)
}

async fn read(db: &Db, user: Uuid, filter: ListFilter) -> Result<Page> {
    let tasks = db
        .read(|mut conn| async move { store::list(&mut conn, user, filter).await })
        .await?;
    Page::of(&tasks)
}
