//! The task fields a client sends, parsed once at the edge. Lengths count Unicode scalar
//! values (what a person calls characters), not bytes.

use serde::{Deserialize, Deserializer};

pub const TITLE_MAX_CHARS: usize = 200;
pub const DESCRIPTION_MAX_CHARS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskTitle(String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDescription(String);

impl TaskTitle {
    pub fn parse(raw: String) -> Result<Self, String> {
        let chars = raw.chars().count();
        if chars == 0 {
            return Err("title must not be empty".into());
        }
        if chars > TITLE_MAX_CHARS {
            return Err(format!(
                "title must be at most {TITLE_MAX_CHARS} characters"
            ));
        }
        reject_nul("title", &raw)?;
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TaskDescription {
    pub fn parse(raw: String) -> Result<Self, String> {
        if raw.chars().count() > DESCRIPTION_MAX_CHARS {
            return Err(format!(
                "description must be at most {DESCRIPTION_MAX_CHARS} characters"
            ));
        }
        reject_nul("description", &raw)?;
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// PostgreSQL text cannot hold U+0000.
fn reject_nul(field: &str, value: &str) -> Result<(), String> {
    if value.contains('\0') {
        return Err(format!("{field} must not contain NUL characters"));
    }
    Ok(())
}

/// A field of a partial update: left out, sent as `null`, or sent with a value. serde alone
/// cannot tell the first two apart, and `"description": null` must clear while a missing
/// description must not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Patch<T> {
    #[default]
    Absent,
    Null,
    Value(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Only called when the field is present (absent fields take the default).
        Ok(match Option::<T>::deserialize(deserializer)? {
            Some(value) => Patch::Value(value),
            None => Patch::Null,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn titles_are_one_to_two_hundred_characters() {
        assert!(TaskTitle::parse(String::new()).is_err());
        assert!(TaskTitle::parse("x".into()).is_ok());
        assert!(TaskTitle::parse("x".repeat(200)).is_ok());
        assert!(
            TaskTitle::parse("x".repeat(201))
                .unwrap_err()
                .contains("200")
        );
        // 200 four-byte characters are 800 bytes and still a valid title.
        assert!(TaskTitle::parse("🦀".repeat(200)).is_ok());
        assert!(TaskTitle::parse("🦀".repeat(201)).is_err());
    }

    #[test]
    fn descriptions_are_at_most_a_thousand_characters() {
        assert!(TaskDescription::parse(String::new()).is_ok());
        assert!(TaskDescription::parse("é".repeat(1000)).is_ok());
        assert!(TaskDescription::parse("é".repeat(1001)).is_err());
    }

    #[test]
    fn nul_characters_are_rejected() {
        assert!(TaskTitle::parse("a\0b".into()).unwrap_err().contains("NUL"));
        assert!(TaskDescription::parse("\0".into()).is_err());
    }

    #[test]
    fn patch_tells_absent_from_null_from_value() {
        #[derive(Deserialize)]
        struct Body {
            #[serde(default)]
            d: Patch<String>,
        }
        let parse = |json: &str| serde_json::from_str::<Body>(json).unwrap().d;
        assert_eq!(parse("{}"), Patch::Absent);
        assert_eq!(parse(r#"{"d": null}"#), Patch::Null);
        assert_eq!(parse(r#"{"d": "x"}"#), Patch::Value("x".into()));
        assert!(serde_json::from_str::<Body>(r#"{"d": 5}"#).is_err());
    }

    proptest! {
        #[test]
        fn accepted_titles_fit_the_column(raw in "\\PC{0,250}") {
            if let Ok(title) = TaskTitle::parse(raw.clone()) {
                let chars = title.as_str().chars().count();
                prop_assert!((1..=TITLE_MAX_CHARS).contains(&chars));
            } else {
                let chars = raw.chars().count();
                prop_assert!(chars == 0 || chars > TITLE_MAX_CHARS || raw.contains('\0'));
            }
        }
    }
}
