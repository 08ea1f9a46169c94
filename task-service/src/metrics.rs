//! task-service's business metrics.

use prometheus::{IntCounter, Registry};

#[derive(Clone)]
pub struct TaskMetrics {
    pub created: IntCounter,
    pub completed: IntCounter,
    pub deleted: IntCounter,
}

impl TaskMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        Ok(Self {
            created: counter("tasks_created_total", "Tasks created.")?,
            completed: counter("tasks_completed_total", "Tasks marked completed.")?,
            deleted: counter("tasks_deleted_total", "Tasks deleted.")?,
        })
    }
}
