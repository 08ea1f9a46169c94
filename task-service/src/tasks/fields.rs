//! The task fields a client sends, parsed once at the edge. Lengths count Unicode scalar
//! values (what a person calls characters), not bytes.

use serde::{Deserialize, Deserializer};

pub const TITLE_MAX_CHARS: usize = 200;
/// The title's pattern in the OpenAPI document: no U+0000, and at least one character that is
/// not whitespace as `str::trim` defines it (Unicode White_Space, listed out: JSON Schema's and
/// Python's `\s` each mean a different set). A unit test holds the list to `char::is_whitespace`.
pub const TITLE_PATTERN: &str = r"^[^\u0000]*[^\u0000\u0009-\u000D\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028-\u2029\u202F\u205F\u3000][^\u0000]*$";
pub const DESCRIPTION_MAX_CHARS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskTitle(String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDescription(String);

impl TaskTitle {
    /// Surrounding whitespace is trimmed (`"  Buy milk "` is stored as `"Buy milk"`), and a
    /// title of only whitespace is refused. The length limit counts the title as sent, so the
    /// document's `maxLength` is exactly what is enforced.
    pub fn parse(raw: String) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("title must not be empty".into());
        }
        if raw.chars().count() > TITLE_MAX_CHARS {
            return Err(format!(
                "title must be at most {TITLE_MAX_CHARS} characters"
            ));
        }
        reject_nul("title", &raw)?;
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err("title must contain a character other than whitespace".into());
        }
        if trimmed.len() == raw.len() {
            return Ok(Self(raw));
        }
        Ok(Self(trimmed.to_owned()))
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
    fn titles_are_trimmed_and_whitespace_only_is_refused() {
        assert_eq!(
            TaskTitle::parse("  Buy milk \t".into()).unwrap().as_str(),
            "Buy milk"
        );
        assert_eq!(TaskTitle::parse("a  b".into()).unwrap().as_str(), "a  b");
        for blank in [" ", "\t\n", "\u{3000}\u{a0}\u{2028}"] {
            assert!(
                TaskTitle::parse(blank.into())
                    .unwrap_err()
                    .contains("whitespace"),
                "{blank:?}"
            );
        }
        // The limit counts what was sent: 200 characters plus padding is too long.
        assert!(TaskTitle::parse(format!(" {} ", "x".repeat(199))).is_err());
        assert!(TaskTitle::parse(format!(" {}", "x".repeat(199))).is_ok());
    }

    /// The document's pattern lists exactly the characters `str::trim` removes.
    #[test]
    fn the_documented_pattern_refuses_exactly_what_parse_trims_away() {
        let whitespace: Vec<u32> = (0..=u32::from(char::MAX))
            .filter_map(char::from_u32)
            .filter(|c| c.is_whitespace())
            .map(u32::from)
            .collect();
        let mut class = String::new();
        let mut i = 0;
        while i < whitespace.len() {
            let start = whitespace[i];
            while i + 1 < whitespace.len() && whitespace[i + 1] == whitespace[i] + 1 {
                i += 1;
            }
            class.push_str(&format!("\\u{start:04X}"));
            if whitespace[i] != start {
                class.push_str(&format!("-\\u{:04X}", whitespace[i]));
            }
            i += 1;
        }
        assert_eq!(
            TITLE_PATTERN,
            format!(r"^[^\u0000]*[^\u0000{class}][^\u0000]*$")
        );
        use utoipa::OpenApi;
        let document = serde_json::to_value(crate::openapi::ApiDoc::openapi()).unwrap();
        let schemas = &document["components"]["schemas"];
        for schema in ["NewTask", "TaskUpdate"] {
            assert_eq!(
                schemas[schema]["properties"]["title"]["pattern"], TITLE_PATTERN,
                "{schema}"
            );
        }
    }

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
        fn accepted_titles_fit_the_column(raw in "[ \\t\\u{3000}]{0,3}\\PC{0,250}[ \\t]{0,3}") {
            if let Ok(title) = TaskTitle::parse(raw.clone()) {
                let chars = title.as_str().chars().count();
                prop_assert!((1..=TITLE_MAX_CHARS).contains(&chars));
                prop_assert_eq!(title.as_str(), raw.trim());
            } else {
                let chars = raw.chars().count();
                prop_assert!(
                    raw.trim().is_empty() || chars > TITLE_MAX_CHARS || raw.contains('\0')
                );
            }
        }
    }
}
