//! The list's pages this replica has answered, kept with the id and version of each task on
//! them, so that a page that has not changed is answered again without reading its rows'
//! columns or serializing them: an unchanged page costs one statement that returns two integers
//! per task (`list_versions.sql`), and its body is the bytes kept.
//!
//! Why the kept JSON is exact: a task's JSON is a function of its id and version. `id` and
//! `user_id` never change (a trigger refuses), and the `tasks_bump_version` trigger moves the
//! version whenever any other column the JSON shows changes, and makes any write of the version
//! itself the old one + 1 (`migrations/tasks/0009_…`). Ids are drawn from a sequence and never
//! reused by the service; restoring a backup or inserting rows with explicit old ids is not
//! covered: restart task-service after either. So a page whose tasks have, in
//! order, the ids and versions of a kept page has that page's body. The check runs against the
//! database every time, so a change made through another replica, by the purge or in SQL is
//! seen as it would be without the cache; the cache never answers without it.
//!
//! A kept page that has changed is brought up to date rather than read again whole: its tasks
//! still at their kept versions keep their JSON, and only the others are read, by id
//! (`get_many.sql`), and serialized. If one of those changed again between the two statements,
//! or most of the page is new, the page is read whole, so a page is always one snapshot. (One
//! statement that is given the kept ids and versions and returns only the changed tasks' columns
//! was measured too: its join cost PostgreSQL more than the two statements together on an
//! unchanged page, the common case; `deploy/bench/RESULTS.md`, run 43.)
//!
//! A write through this replica forgets the user's pages (`forget`), so the list that usually
//! follows it reads the rows plainly instead of checking a page it knows has changed. That is
//! only a saving: a page kept from before a write is still checked.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::body::Bytes;
use common::db::Db;
use prometheus::{IntCounterVec, Opts, Registry};
use quick_cache::Weighter;
use quick_cache::sync::Cache;
use uuid::Uuid;

use super::store::{self, ListFilter};
use super::{Task, body, conditional};
use crate::error::Result;

/// Pages kept per user: the first page of each filter a client shows, and the one after.
const PAGES_PER_USER: usize = 4;

/// The map's shards. quick_cache splits the weight among them and refuses an entry heavier than
/// a shard holds; a fixed count (rather than one per core × 4) keeps a shard of the default
/// 16 MiB at 2 MiB on any machine.
const SHARDS: usize = 8;

/// A user's pages together may weigh this share of the whole (1 MiB of the default): older
/// pages make way, and a page heavier than this alone is answered but not kept.
const USER_SHARE: u64 = 16;

/// One answered page.
pub struct Page {
    /// (id, version) of each task on it, in order.
    pub tasks: Vec<(i64, i64)>,
    /// Each task's JSON, in the same order: what an update of the page reuses.
    fragments: Vec<Arc<str>>,
    /// The page's JSON body: the fragments as an array.
    pub body: Bytes,
    /// What keeping it costs, in bytes: the body, the fragments and their bookkeeping.
    weight: u64,
}

impl Page {
    fn of(tasks: &[Task]) -> Result<Self> {
        let fragments = tasks.iter().map(fragment).collect::<Result<_>>()?;
        Ok(Self::assemble(
            tasks.iter().map(|task| (task.id, task.version)).collect(),
            fragments,
        ))
    }

    fn assemble(tasks: Vec<(i64, i64)>, fragments: Vec<Arc<str>>) -> Self {
        let body = body::array(fragments.iter().map(|part| &**part));
        let written: usize = fragments.iter().map(|part| part.len()).sum();
        let weight = (body.capacity() + written + 256 + 64 * tasks.len()) as u64;
        Self {
            tasks,
            fragments,
            weight,
            body: Bytes::from(body),
        }
    }

    /// The ids of the tasks `now` names (ids and versions, in order) that this page does not
    /// hold at those versions.
    fn missing(&self, now: &[(i64, i64)]) -> Vec<i64> {
        let held: HashSet<&(i64, i64)> = self.tasks.iter().collect();
        now.iter()
            .filter(|task| !held.contains(task))
            .map(|(id, _)| *id)
            .collect()
    }

    /// The page `now` names, from this page's fragments and the `fetched` tasks; `None` when
    /// a fetched task is not at the version `now` has (it changed again, or is gone).
    fn updated(&self, now: Vec<(i64, i64)>, fetched: Vec<Task>) -> Result<Option<Self>> {
        let held: HashMap<(i64, i64), &Arc<str>> =
            self.tasks.iter().copied().zip(&self.fragments).collect();
        let fetched: HashMap<(i64, i64), &Task> = fetched
            .iter()
            .map(|task| ((task.id, task.version), task))
            .collect();
        let mut fragments = Vec::with_capacity(now.len());
        for key in &now {
            let part = match (held.get(key), fetched.get(key)) {
                (Some(part), _) => Arc::clone(part),
                (None, Some(task)) => fragment(task)?,
                (None, None) => return Ok(None),
            };
            fragments.push(part);
        }
        Ok(Some(Self::assemble(now, fragments)))
    }

    /// The page's weak ETag: `query` names the filter, the tasks their versions.
    pub fn etag(&self, query: &str) -> axum::http::HeaderValue {
        conditional::page_etag(query, self.tasks.iter().copied())
    }
}

fn fragment(task: &Task) -> Result<Arc<str>> {
    body::task(task).map(Arc::from)
}

/// One user's kept pages, newest first.
#[derive(Clone, Default)]
struct UserPages(Vec<(ListFilter, Arc<Page>)>);

#[derive(Clone)]
struct ByBytes;

impl Weighter<Uuid, UserPages> for ByBytes {
    fn weight(&self, _user: &Uuid, pages: &UserPages) -> u64 {
        pages.0.iter().map(|(_, page)| page.weight).sum()
    }
}

/// Kept pages, at most `LIST_CACHE_MAX_BYTES` of them; 0 keeps none.
#[derive(Clone)]
pub struct PageCache {
    pages: Option<Arc<Cache<Uuid, UserPages, ByBytes>>>,
    /// The most one user's pages may weigh together.
    per_user: u64,
    answered: IntCounterVec,
}

impl PageCache {
    pub fn new(max_bytes: u64, registry: &Registry) -> prometheus::Result<Self> {
        let answered = IntCounterVec::new(
            Opts::new(
                "task_list_pages_total",
                "List pages answered: `kept` (unchanged since this replica answered it, its body reused), `updated` (kept but changed: only its changed tasks read) or `read` (read whole: not kept, or most of it changed).",
            ),
            &["page"],
        )?;
        registry.register(Box::new(answered.clone()))?;
        // Made at 0 so that a dashboard's rate() has a series from the start.
        for page in ["kept", "updated", "read"] {
            answered.with_label_values(&[page]);
        }
        // A page of 100 tasks weighs about 60 KB: the estimate sizes the map, not the limit.
        let users = (max_bytes / 60_000).clamp(16, 1_000_000) as usize;
        let pages = match max_bytes {
            0 => None,
            _ => {
                let options = quick_cache::OptionsBuilder::new()
                    .shards(SHARDS)
                    .estimated_items_capacity(users)
                    .weight_capacity(max_bytes)
                    .build()
                    .map_err(|error| prometheus::Error::Msg(error.to_string()))?;
                Some(Arc::new(Cache::with_options(
                    options,
                    ByBytes,
                    Default::default(),
                    Default::default(),
                )))
            }
        };
        Ok(Self {
            pages,
            per_user: max_bytes / USER_SHARE,
            answered,
        })
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
                .find(|(kept, _)| *kept == filter)
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
            let missing = kept.missing(&now);
            if missing.len() <= now.len() / 2 {
                let users = vec![user; missing.len()];
                let fetched = if missing.is_empty() {
                    Vec::new()
                } else {
                    db.read(|mut conn| {
                        let (ids, users) = (&missing, &users);
                        async move { store::get_many(&mut conn, ids, users).await }
                    })
                    .await?
                };
                if let Some(page) = kept.updated(now, fetched)? {
                    self.answered.with_label_values(&["updated"]).inc();
                    let page = Arc::new(page);
                    self.keep(cache, user, filter, Arc::clone(&page));
                    return Ok(page);
                }
            }
        }
        self.answered.with_label_values(&["read"]).inc();
        let page = Arc::new(read(db, user, filter).await?);
        self.keep(cache, user, filter, Arc::clone(&page));
        Ok(page)
    }

    fn keep(
        &self,
        cache: &Cache<Uuid, UserPages, ByBytes>,
        user: Uuid,
        filter: ListFilter,
        page: Arc<Page>,
    ) {
        if page.weight > self.per_user {
            return;
        }
        let mut pages = cache.get(&user).unwrap_or_default();
        pages.0.retain(|(kept, _)| *kept != filter);
        pages.0.insert(0, (filter, page));
        pages.0.truncate(PAGES_PER_USER);
        while ByBytes.weight(&user, &pages) > self.per_user {
            pages.0.pop();
        }
        cache.insert(user, pages);
    }

    /// Forgets `user`'s pages: this replica has just changed their tasks.
    pub fn forget(&self, user: Uuid) {
        if let Some(cache) = &self.pages {
            cache.remove(&user);
        }
    }
}

async fn read(db: &Db, user: Uuid, filter: ListFilter) -> Result<Page> {
    let tasks = db
        .read(|mut conn| async move { store::list(&mut conn, user, filter).await })
        .await?;
    Page::of(&tasks)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    fn task(id: i64, version: i64, title: &str) -> Task {
        let at = Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).unwrap();
        Task {
            id,
            user_id: Uuid::nil(),
            title: title.into(),
            description: None,
            completed: false,
            created_at: at,
            updated_at: at,
            version,
        }
    }

    #[test]
    fn an_updated_page_is_the_page_of_its_tasks_now() {
        let kept = Page::of(&[task(3, 1, "c"), task(2, 1, "b"), task(1, 1, "a")]).unwrap();
        let now = [task(4, 1, "new"), task(3, 1, "c"), task(1, 2, "a, renamed")];
        let keys: Vec<(i64, i64)> = now.iter().map(|t| (t.id, t.version)).collect();
        assert_eq!(kept.missing(&keys), [4, 1]);
        let fetched = vec![now[2].clone(), now[0].clone()];
        let updated = kept.updated(keys.clone(), fetched).unwrap().unwrap();
        let whole = Page::of(&now).unwrap();
        assert_eq!(updated.body, whole.body);
        assert_eq!(updated.tasks, keys);
        let parsed: serde_json::Value = serde_json::from_slice(&updated.body).unwrap();
        assert_eq!(parsed[2]["title"], "a, renamed");
    }

    #[test]
    fn older_pages_make_way_within_a_users_share_and_a_heavier_page_is_not_kept() {
        let page = |tasks: i64| {
            Arc::new(Page::of(&(1..=tasks).map(|id| task(id, 1, "t")).collect::<Vec<_>>()).unwrap())
        };
        let filter = |limit| ListFilter {
            completed: None,
            after: None,
            limit,
        };
        let small = page(3);
        // Room for two such pages per user, not three.
        let cache = PageCache::new((3 * small.weight - 1) * USER_SHARE, &Registry::new()).unwrap();
        let pages = cache.pages.as_ref().unwrap();
        let user = Uuid::new_v4();
        let kept_limits = || -> Vec<i64> {
            let kept = pages.get(&user).unwrap();
            kept.0.iter().map(|(filter, _)| filter.limit).collect()
        };
        for limit in 1..=3 {
            cache.keep(pages, user, filter(limit), page(3));
        }
        assert_eq!(kept_limits(), [3, 2], "newest first, the oldest made way");
        assert!(ByBytes.weight(&user, &pages.get(&user).unwrap()) <= cache.per_user);

        cache.keep(pages, user, filter(4), page(40));
        assert_eq!(
            kept_limits(),
            [3, 2],
            "a page heavier than the share is answered, not kept"
        );
    }

    #[test]
    fn a_body_is_kept_at_its_own_size() {
        let page = Page::of(&(1..=100).map(|id| task(id, 1, "t")).collect::<Vec<_>>()).unwrap();
        let written: usize = page.fragments.iter().map(|part| part.len()).sum();
        assert_eq!(
            page.body.len(),
            written + 99 + 2,
            "the parts, 99 commas, two brackets"
        );
        // The weight counts the buffer's capacity: equal to the body's length, nothing spare.
        assert_eq!(
            page.weight as usize,
            page.body.len() + written + 256 + 64 * 100
        );
    }

    #[test]
    fn a_task_fetched_at_another_version_than_checked_is_no_update() {
        let kept = Page::of(&[task(2, 1, "b"), task(1, 1, "a")]).unwrap();
        // The check saw task 1 at version 2; by the fetch it was at 3.
        let updated = kept
            .updated(vec![(2, 1), (1, 2)], vec![task(1, 3, "a, twice")])
            .unwrap();
        assert!(updated.is_none());
        // Gone by the fetch.
        assert!(
            kept.updated(vec![(2, 1), (1, 2)], vec![])
                .unwrap()
                .is_none()
        );
    }
}
