//! Tasks written as JSON response bodies: one task, and a page of them from each task's JSON.
//!
//! sonic-rs writes them, through the same `Serialize` derive serde_json would use. serde_json
//! checks every byte of every string (keys, ids, titles, timestamps) against its escape table
//! one at a time, which was about 40 % of the time a page of 100 tasks took to write; sonic-rs
//! checks 16 bytes at a time and writes the same bytes (a test below holds the two to the same
//! output for any text). Side by side in `cargo bench -p common --bench hot_path -- serialize`:
//! 28–37 µs per page of 100 against 48–60 µs (`deploy/bench/RESULTS.md`, run 52).

use super::Task;
use crate::error::Result;

/// `task`'s JSON.
pub fn task(task: &Task) -> Result<String> {
    sonic_rs::to_string(task).map_err(unwritable)
}

/// The JSON array of `parts`, each already a task's JSON ([`task`]), in order.
pub fn array<'a>(parts: impl ExactSizeIterator<Item = &'a str> + Clone) -> Vec<u8> {
    let written: usize = parts.clone().map(str::len).sum();
    // The exact size (the parts, a comma between each two, the brackets): a buffer that grew
    // by doubling would keep up to twice the body in memory, where the page cache keeps it.
    let mut body = Vec::with_capacity(written + parts.len().max(1) + 1);
    body.push(b'[');
    for (index, part) in parts.enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(part.as_bytes());
    }
    body.push(b']');
    body
}

/// A task that cannot be written as JSON is a row that could not be decoded: a 500.
fn unwritable(error: sonic_rs::Error) -> crate::error::Error {
    sqlx::Error::Decode(Box::new(error)).into()
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use proptest::prelude::*;
    use uuid::Uuid;

    use super::*;

    fn a_task(
        id: i64,
        user: u128,
        title: String,
        description: Option<String>,
        micros: i64,
    ) -> Task {
        let at = DateTime::<Utc>::from_timestamp_micros(micros).unwrap();
        Task {
            id,
            user_id: Uuid::from_u128(user),
            title,
            description,
            completed: id % 2 == 0,
            created_at: at,
            updated_at: at,
            version: 1,
        }
    }

    /// Any text, weighted towards what needs escaping: quotes, backslashes, control
    /// characters, and characters beyond ASCII.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[\\x00-\\x1f\"\\\\/a-z\\x7f\u{80}-\u{10ffff}]{0,40}",
            "\\PC{0,200}",
        ]
    }

    proptest! {
        /// A task's body is, byte for byte, what serde_json writes for it, so clients see the
        /// same JSON as before and a page built from parts equals the page written whole.
        #[test]
        fn writes_what_serde_json_writes(
            tasks in prop::collection::vec(
                (any::<i64>(), any::<u128>(), text(), prop::option::of(text()),
                 0_i64..253_402_300_800_000_000),
                0..8,
            ),
        ) {
            let tasks: Vec<Task> = tasks
                .into_iter()
                .map(|(id, user, title, description, at)| a_task(id, user, title, description, at))
                .collect();
            let parts: Vec<String> = tasks.iter().map(|t| task(t).unwrap()).collect();
            for (one, part) in tasks.iter().zip(&parts) {
                prop_assert_eq!(part, &serde_json::to_string(one).unwrap());
            }
            let page = array(parts.iter().map(String::as_str));
            prop_assert_eq!(String::from_utf8(page).unwrap(), serde_json::to_string(&tasks).unwrap());
        }
    }

    #[test]
    fn an_empty_page_is_an_empty_array() {
        assert_eq!(array(std::iter::empty()), b"[]");
    }
}
