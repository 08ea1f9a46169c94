//! auth-service through real HTTP on port 0, against a fresh PostgreSQL database per test.

mod admin;
mod errors;
mod helpers;
mod limits;
mod login;
mod logout;
mod me;
mod openapi;
mod refresh;
mod register;
mod tokens;
