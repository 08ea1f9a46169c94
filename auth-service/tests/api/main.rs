//! auth-service through real HTTP on port 0, against a fresh PostgreSQL database per test.

mod admin;
mod delete_me;
mod errors;
mod helpers;
mod limits;
mod login;
mod logout;
mod logout_scope;
mod me;
mod openapi;
mod operator;
mod password;
mod refresh;
mod register;
mod session_lifetime;
mod sessions;
mod tokens;
