//! What is going wrong with a running task right now (transient faults it is retrying), so
//! `get` can show it while the task stays Running.

use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default, Debug)]
pub struct Health {
    /// Per part of the task (`target`, or a channel name): its current problem.
    problems: Mutex<BTreeMap<String, String>>,
}

impl Health {
    pub fn problem(&self, part: &str, problem: impl ToString) {
        if let Ok(mut problems) = self.problems.lock() {
            problems.insert(part.to_owned(), problem.to_string());
        }
    }

    pub fn resolved(&self, part: &str) {
        if let Ok(mut problems) = self.problems.lock() {
            problems.remove(part);
        }
    }

    /// `part: problem` joined with `; `, or None when all is well.
    pub fn summary(&self) -> Option<String> {
        let problems = self.problems.lock().ok()?;
        if problems.is_empty() {
            return None;
        }
        Some(
            problems
                .iter()
                .map(|(part, problem)| format!("{part}: {problem}"))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Health;

    #[test]
    fn problems_are_listed_by_part_until_resolved() {
        let health = Health::default();
        assert_eq!(health.summary(), None);
        health.problem("target", "unavailable");
        health.problem("dml_0", "broker down");
        assert_eq!(
            health.summary().as_deref(),
            Some("dml_0: broker down; target: unavailable")
        );
        health.resolved("dml_0");
        health.resolved("target");
        assert_eq!(health.summary(), None);
    }
}
