//! `Json`, `Path` and `Query` extractors whose rejections are problem+json.
//!
//! axum's own extractors answer bad input with plain text. These wrap them and answer with a
//! [`Problem`] whose status the service chooses through [`RequestShape`]: auth-service says 400,
//! task-service 422 (both as the seed has it). Content-type and size errors keep their own
//! status (415, 413).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::{DeserializeOwned, Deserializer, MapAccess, Visitor};

use crate::Problem;

/// Implemented by a service's state: which status a malformed request gets.
pub trait RequestShape {
    const SHAPE_ERROR: StatusCode;
}

/// A JSON body, which must be an object. Unknown fields are ignored (serde's default).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

/// A path parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

/// A query string.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: RequestShape + Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<Object<T>>::from_request(req, state).await {
            Ok(axum::Json(Object(value))) => Ok(Json(value)),
            Err(rejection) => Err(json_problem::<S>(&rejection)),
        }
    }
}

/// `T` read from a JSON object only. serde's derived structs also accept an array of their
/// fields in order, so `[]` would be an empty update and `["x"]` a task titled "x".
struct Object<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(std::marker::PhantomData<T>);

        impl<'de, T: serde::Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(ObjectVisitor(std::marker::PhantomData))
            .map(Object)
    }
}

fn json_problem<S: RequestShape>(rejection: &JsonRejection) -> Problem {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected a request body with Content-Type: application/json",
        ),
        JsonRejection::BytesRejection(_) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is larger than the limit",
            )
        }
        JsonRejection::JsonDataError(_) | JsonRejection::JsonSyntaxError(_) => {
            Problem::new(S::SHAPE_ERROR, bounded(rejection.body_text()))
        }
        _ => Problem::new(rejection.status(), bounded(rejection.body_text())),
    }
}

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: RequestShape + Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection @ PathRejection::FailedToDeserializePathParams(_)) => {
                Err(Problem::new(S::SHAPE_ERROR, bounded(rejection.body_text())))
            }
            Err(rejection) => Err(Problem::new(rejection.status(), rejection.body_text())),
        }
    }
}

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: RequestShape + Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection: QueryRejection| {
                Problem::new(S::SHAPE_ERROR, bounded(rejection.body_text()))
            })
    }
}

/// Echoing a whole rejected value back could make a huge error body; keep it short.
fn bounded(mut text: String) -> String {
    const MAX: usize = 300;
    if text.len() > MAX {
        let mut cut = MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::{Object, bounded};

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Fields {
        title: String,
        #[serde(default)]
        done: bool,
    }

    #[test]
    fn only_an_object_is_a_body() {
        let parsed: Object<Fields> = serde_json::from_str(r#"{"title": "x", "extra": 1}"#).unwrap();
        assert_eq!(
            parsed.0,
            Fields {
                title: "x".into(),
                done: false
            }
        );
        for not_an_object in [r#"["x"]"#, "[]", r#"["x", true]"#, "\"x\"", "1", "null"] {
            assert!(
                serde_json::from_str::<Object<Fields>>(not_an_object).is_err(),
                "{not_an_object} was accepted"
            );
        }
        assert!(serde_json::from_str::<Object<Fields>>(r#"{"title": "a", "title": "b"}"#).is_err());
    }

    #[test]
    fn long_rejection_texts_are_cut_on_a_char_boundary() {
        let text = "é".repeat(400);
        let cut = bounded(text);
        assert!(cut.len() <= 300 + '…'.len_utf8());
        assert!(cut.ends_with('…'));
    }
}
