//! Running a query's independent jobs on scoped threads, one per job.

use crate::Result;

/// Runs `run` on every job: the first on the calling thread, each other on a
/// scoped thread of its own. Returns the first error (in job order) after all
/// have finished. A panicking job panics the caller.
pub(crate) fn run_jobs<J: Send>(jobs: Vec<J>, run: impl Fn(J) -> Result<()> + Sync) -> Result<()> {
    let run = &run;
    std::thread::scope(|scope| -> Result<()> {
        let mut jobs = jobs.into_iter();
        let first = jobs.next();
        let handles: Vec<_> = jobs.map(|j| scope.spawn(move || run(j))).collect();
        let mut result = first.map_or(Ok(()), run);
        for h in handles {
            let r = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            result = result.and(r);
        }
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_job_runs_and_the_first_error_wins() {
        let ran = AtomicUsize::new(0);
        let r = run_jobs(vec![0, 1, 2, 3], |j| {
            ran.fetch_add(1, Ordering::Relaxed);
            match j {
                1 | 3 => Err(crate::Error::InvalidInput(format!("job {j}"))),
                _ => Ok(()),
            }
        });
        assert_eq!(ran.load(Ordering::Relaxed), 4);
        assert!(matches!(r, Err(crate::Error::InvalidInput(m)) if m == "job 1"));
        assert!(run_jobs(Vec::<u8>::new(), |_| Ok(())).is_ok());
    }
}
