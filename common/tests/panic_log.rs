//! A panic is one JSON log line (`telemetry::log_panics`), in a test binary of its own: the hook
//! is process-wide, and other tests report their failures through Rust's own.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing_subscriber::layer::SubscriberExt;

/// Log lines written to memory.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_panic_is_one_error_line_of_the_json_log() {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber =
        tracing_subscriber::registry().with(common::telemetry::json_lines(move || writer.clone()));
    tracing::subscriber::set_global_default(subscriber).unwrap();
    common::telemetry::log_panics();

    let line = line!() + 3;
    let outcome = std::thread::Builder::new()
        .name("worker-7".into())
        .spawn(|| panic!("the reason, {}", 42))
        .unwrap()
        .join();
    // Rust's hook again, so that a failing assertion below is reported as usual.
    let _ = std::panic::take_hook();
    assert!(outcome.is_err(), "the thread panicked");

    let written = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let logged: Vec<serde_json::Value> = written
        .lines()
        .map(|line| serde_json::from_str(line).expect("every line is JSON"))
        .collect();
    assert_eq!(logged.len(), 1, "one line: {written}");
    assert_eq!(logged[0]["level"], "ERROR");
    assert_eq!(logged[0]["message"], "panicked");
    assert_eq!(logged[0]["panic"], "the reason, 42");
    assert_eq!(logged[0]["thread"], "worker-7");
    let location = logged[0]["location"].as_str().unwrap();
    assert!(
        location.starts_with(&format!("common/tests/panic_log.rs:{line}:")),
        "{location}"
    );
}
