//! Conditional requests (RFC 9110 §13): the strong `ETag` of a task, `If-Match` and
//! `If-None-Match` on reads and writes, and the weak `ETag` of a page of the list.
//!
//! A task's ETag is `"<version>"`: the version the database bumps whenever the task's content
//! changes. The ETags this service hands out are the only ones that can match; any other entity
//! tag in a header (a weak one in `If-Match`, or one of another shape) simply never matches.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use std::hash::{DefaultHasher, Hash, Hasher};

/// The only request headers the task handlers read: `If-Match`, `If-None-Match` and
/// `Idempotency-Key`, copied alone (nothing is allocated when they are absent). A `HeaderMap`
/// extractor would clone every header of every request to read these.
#[derive(Debug, Default)]
pub struct ClientHeaders {
    if_match: Vec<HeaderValue>,
    if_none_match: Vec<HeaderValue>,
    pub idempotency_key: Vec<HeaderValue>,
}

impl ClientHeaders {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let values = |name| headers.get_all(name).iter().cloned().collect();
        Self {
            if_match: values(header::IF_MATCH),
            if_none_match: values(header::IF_NONE_MATCH),
            idempotency_key: headers
                .get_all(super::idempotency::HEADER)
                .iter()
                .cloned()
                .collect(),
        }
    }

    pub fn if_match(&self) -> IfMatch {
        IfMatch::from_values(&self.if_match)
    }

    /// Whether the request carries `If-None-Match` at all.
    pub fn has_if_none_match(&self) -> bool {
        !self.if_none_match.is_empty()
    }

    /// Whether `If-None-Match` matches a representation whose ETag is `current` (then a GET
    /// answers 304). Weak comparison: `W/"3"` matches `"3"`.
    pub fn none_match_hits(&self, current: &HeaderValue) -> bool {
        match entity_tags(&self.if_none_match) {
            None => false,
            Some(Tags::Any) => true,
            Some(Tags::List(tags)) => {
                let current = opaque(current.as_bytes());
                tags.iter().any(|tag| Some(tag.opaque) == current)
            }
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientHeaders {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::from_headers(&parts.headers))
    }
}

/// The strong ETag of a task at `version`.
pub fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits and quotes")
}

/// What an `If-Match` header asks of a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// No header: the write goes ahead as without conditions. `*` is the same for a task that
    /// exists, and one that does not is a 404 either way.
    Unconditional,
    /// Only if the task is at one of these versions (none: it cannot match).
    Versions(Vec<i64>),
    /// Only at the version `If-None-Match` was checked against (it named another): the task
    /// changing in between fails the write as that header's precondition.
    CheckedAt(i64),
}

impl IfMatch {
    fn from_values(values: &[HeaderValue]) -> Self {
        match entity_tags(values) {
            None | Some(Tags::Any) => Self::Unconditional,
            // Strong comparison: a weak tag never matches.
            Some(Tags::List(tags)) => Self::Versions(
                tags.iter()
                    .filter(|tag| !tag.weak)
                    .filter_map(|tag| tag.version)
                    .collect(),
            ),
        }
    }

    /// Whether a task at `version` meets the condition (a read's `If-Match`).
    pub fn admits(&self, version: i64) -> bool {
        self.versions()
            .is_none_or(|versions| versions.contains(&version))
    }

    /// The versions to compare with, as the statements take them: `None` = no condition.
    pub fn versions(&self) -> Option<&[i64]> {
        match self {
            Self::Unconditional => None,
            Self::Versions(versions) => Some(versions),
            Self::CheckedAt(version) => Some(std::slice::from_ref(version)),
        }
    }
}

/// The weak ETag of a page of the list: a hash of the query it answers and of each task's id
/// and version on it. Any change to a task on the page, or to which tasks are on it, changes
/// it. A weak validator needs no cryptographic hash: std's SipHash is several times cheaper
/// per page than SHA-256, and a binary of another Rust version hashing differently only costs
/// a client one full answer during a rollout.
pub fn page_etag(query: &str, tasks: impl IntoIterator<Item = (i64, i64)>) -> HeaderValue {
    let mut hasher = DefaultHasher::new();
    query.hash(&mut hasher);
    for (id, version) in tasks {
        (id, version).hash(&mut hasher);
    }
    HeaderValue::from_str(&format!("W/\"{:016x}\"", hasher.finish())).expect("hex digits")
}

enum Tags<'a> {
    Any,
    List(Vec<Tag<'a>>),
}

struct Tag<'a> {
    weak: bool,
    /// Between the quotes.
    opaque: &'a [u8],
    /// The version, when the tag is one of ours.
    version: Option<i64>,
}

/// The entity tags of all `values` (every header of one name) together; `None` without one. A
/// header that is not a valid list matches nothing (an empty list), never everything.
fn entity_tags(values: &[HeaderValue]) -> Option<Tags<'_>> {
    if values.is_empty() {
        return None;
    }
    let mut tags = Vec::new();
    for value in values {
        let bytes = value.as_bytes();
        if bytes.trim_ascii() == b"*" {
            return Some(Tags::Any);
        }
        for item in bytes.split(|&b| b == b',') {
            let item = item.trim_ascii();
            if item.is_empty() {
                continue;
            }
            let (weak, quoted) = match item.strip_prefix(b"W/") {
                Some(rest) => (true, rest),
                None => (false, item),
            };
            let Some(opaque) = opaque(quoted) else {
                continue;
            };
            // Ours only as we write them: strong comparison is byte for byte, so `"01"` is
            // not the ETag `"1"`.
            let version = std::str::from_utf8(opaque)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<i64>().ok().filter(|v| v.to_string() == s));
            tags.push(Tag {
                weak,
                opaque,
                version,
            });
        }
    }
    Some(Tags::List(tags))
}

/// The opaque part of `"…"` or `W/"…"`.
fn opaque(tag: &[u8]) -> Option<&[u8]> {
    let tag = tag.strip_prefix(b"W/").unwrap_or(tag);
    tag.strip_prefix(b"\"")?.strip_suffix(b"\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: header::HeaderName, values: &[&str]) -> ClientHeaders {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        ClientHeaders::from_headers(&map)
    }

    #[test]
    fn if_match_takes_strong_tags_of_ours_from_every_header() {
        let map = headers(header::IF_MATCH, &["\"3\", W/\"4\"", "\"7\",\"x\""]);
        assert_eq!(map.if_match(), IfMatch::Versions(vec![3, 7]));
        assert_eq!(ClientHeaders::default().if_match(), IfMatch::Unconditional);
        let any = headers(header::IF_MATCH, &[" * "]);
        assert_eq!(any.if_match(), IfMatch::Unconditional);
        let garbage = headers(header::IF_MATCH, &["3, nonsense"]);
        assert_eq!(garbage.if_match(), IfMatch::Versions(vec![]));
        // Strong comparison is byte for byte: another spelling of a version is not its tag.
        let spelled = headers(header::IF_MATCH, &["\"03\", \"+3\", \"3 \""]);
        assert_eq!(spelled.if_match(), IfMatch::Versions(vec![]));
    }

    #[test]
    fn if_none_match_compares_weakly() {
        let current = etag(3);
        let hits = |values: &[&str], current: &HeaderValue| {
            headers(header::IF_NONE_MATCH, values).none_match_hits(current)
        };
        assert!(hits(&["W/\"3\""], &current));
        assert!(hits(&["\"1\", \"3\""], &current));
        assert!(hits(&["*"], &current));
        assert!(!hits(&["\"4\""], &current));
        assert!(!ClientHeaders::default().none_match_hits(&current));
        let page = page_etag("q", [(1, 1)]);
        assert!(hits(&[page.to_str().unwrap()], &page));
    }

    #[test]
    fn the_page_etag_changes_with_any_task_on_it_and_with_the_query() {
        let base = page_etag("limit=100", [(2, 1), (1, 1)]);
        assert_eq!(base, page_etag("limit=100", [(2, 1), (1, 1)]));
        assert_ne!(base, page_etag("limit=100", [(2, 2), (1, 1)]));
        assert_ne!(base, page_etag("limit=100", [(2, 1)]));
        assert_ne!(base, page_etag("limit=10", [(2, 1), (1, 1)]));
        assert!(base.to_str().unwrap().starts_with("W/\""));
    }
}
