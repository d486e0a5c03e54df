//! Waiting: one poll loop for every "until this holds or the deadline passes", and the one way
//! async calls run mkh's blocking core without blocking a runtime thread.

use std::time::{Duration, Instant};

use crate::error::Result;

/// Calls `probe` every `every` until it yields a value, fails, or `deadline` has passed (then
/// `Ok(None)`: the caller knows what timed out and says so). `probe` runs at least once.
pub(crate) fn until<T>(
    deadline: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<Option<T>> {
    let start = Instant::now();
    loop {
        if let Some(value) = probe()? {
            return Ok(Some(value));
        }
        let elapsed = start.elapsed();
        if elapsed >= deadline {
            return Ok(None);
        }
        std::thread::sleep(every.min(deadline - elapsed));
    }
}

/// Runs blocking work (libvirt, ssh2, child processes) on tokio's blocking pool, so that the
/// calling task's runtime thread stays free, on a current-thread runtime too. A panic in the
/// work is resumed in the caller.
pub(crate) async fn off_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Only a runtime shutting down cancels blocking work.
            Err(e) => panic!("mkh: blocking work was cancelled: {e}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_returns_the_first_value_or_none_at_the_deadline() {
        let mut calls = 0;
        let got = until(Duration::from_secs(5), Duration::from_millis(1), || {
            calls += 1;
            Ok((calls == 3).then_some(calls))
        })
        .unwrap();
        assert_eq!(got, Some(3));
        let start = Instant::now();
        let none: Option<()> = until(Duration::from_millis(50), Duration::from_millis(10), || {
            Ok(None)
        })
        .unwrap();
        assert_eq!(none, None);
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn off_thread_work_leaves_the_runtime_thread_free() {
        let ticker = tokio::spawn(async {
            let mut ticks = 0;
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                ticks += 1;
            }
            ticks
        });
        let slow = off_thread(|| {
            std::thread::sleep(Duration::from_millis(400));
            7
        })
        .await;
        assert_eq!(slow, 7);
        // The ticker ran to its end while the work slept on another thread.
        assert!(ticker.is_finished());
        assert_eq!(ticker.await.unwrap(), 5);
    }
}
