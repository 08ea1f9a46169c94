//! The application state of a service, behind one `Arc`.
//!
//! axum clones the state for every request and for every extractor that takes it. A struct of
//! handles (database pool, metrics, keys) costs one reference count per field on each clone;
//! behind one `Arc` it costs one. That was about 4 % of task-service's CPU under load. Each
//! service declares its own type (the framework's traits are implemented on it there, which
//! Rust's orphan rule allows only for a type of the service's own), hence a macro.

/// Declares `pub struct $state(Arc<$fields>)`: `Clone`, `$state::new($fields)`, and a `Deref`
/// to `$fields`, so handlers read `state.db` as before.
#[macro_export]
macro_rules! shared_state {
    ($state:ident, $fields:ty) => {
        /// The state every request reaches, behind one `Arc` (see `common::state`).
        #[derive(Clone)]
        pub struct $state(::std::sync::Arc<$fields>);

        impl $state {
            pub fn new(fields: $fields) -> Self {
                Self(::std::sync::Arc::new(fields))
            }
        }

        impl ::std::ops::Deref for $state {
            type Target = $fields;

            fn deref(&self) -> &$fields {
                &self.0
            }
        }
    };
}
