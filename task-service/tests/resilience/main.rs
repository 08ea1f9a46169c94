//! task-service (and auth-service beside it) under faults: the database going away and coming
//! back, every connection killed under load, shutdown while requests are in flight, and a login
//! storm saturating the hashing pool.
//! Each test owns its servers and bounds its own runtime.

mod bcrypt_saturation;
mod connection_drop;
mod db_outage;
mod drain;
mod helpers;
mod read_retry;
