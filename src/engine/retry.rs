//! Retrying one external call: backoff with jitter from the policy, a timeout per attempt,
//! and a hook that records each retry before the wait.

use crate::domain::RetryPolicy;
use crate::providers::{ErrorKind, ProviderError};
use std::future::Future;
use std::time::Duration;

/// One failed attempt, as the retry hook sees it.
#[derive(Debug, Clone)]
pub struct RetryNote {
    /// Retry number about to happen (1-based).
    pub retry: u32,
    pub max_retries: u32,
    pub wait: Duration,
    pub error: ProviderError,
}

impl RetryNote {
    pub fn describe(&self) -> String {
        format!(
            "retry {}/{} in {}: {}",
            self.retry,
            self.max_retries,
            crate::config::format_duration(self.wait),
            self.error
        )
    }
}

/// Calls `op` until it succeeds, fails with an error that is not worth retrying, or has
/// failed `1 + policy.max_retries` times. `on_retry` runs before each wait; if it fails
/// (the lease was lost, say) the call is abandoned with that error.
pub async fn with_retry<T, E, Op, Fut, Hook, HookFut>(
    policy: &RetryPolicy,
    timeout: Duration,
    mut jitter: impl FnMut() -> f64,
    mut on_retry: Hook,
    mut op: Op,
) -> Result<Result<T, ProviderError>, E>
where
    Op: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
    Hook: FnMut(RetryNote) -> HookFut,
    HookFut: Future<Output = Result<(), E>>,
{
    let mut failures = 0u32;
    loop {
        let outcome = match tokio::time::timeout(timeout, op()).await {
            Ok(r) => r,
            Err(_) => Err(ProviderError::new(
                "engine",
                ErrorKind::Transient,
                format!(
                    "call timed out after {}",
                    crate::config::format_duration(timeout)
                ),
            )),
        };
        let error = match outcome {
            Ok(v) => return Ok(Ok(v)),
            Err(e) => e,
        };
        failures += 1;
        if !error.retryable() || !policy.may_retry(failures) {
            return Ok(Err(error));
        }
        let wait = policy.delay(failures, jitter());
        on_retry(RetryNote {
            retry: failures,
            max_retries: policy.max_retries,
            wait,
            error,
        })
        .await?;
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::time::Instant;

    fn transient() -> ProviderError {
        ProviderError::new("sim", ErrorKind::Transient, "503")
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_follows_the_schedule_then_gives_up() {
        let policy = RetryPolicy::default();
        let start = Instant::now();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let c2 = calls.clone();
        let out: Result<Result<(), ProviderError>, ()> = with_retry(
            &policy,
            Duration::from_secs(60),
            || 0.5,
            |_| async { Ok(()) },
            || {
                c2.lock().expect("lock").push(start.elapsed().as_secs());
                async { Err(transient()) }
            },
        )
        .await;
        assert!(matches!(out, Ok(Err(_))));
        // Attempts at 0, then after 5 s, 10 s and 20 s more: 4 attempts in all.
        assert_eq!(*calls.lock().expect("lock"), vec![0, 5, 15, 35]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_call_times_out_and_is_retried() {
        let policy = RetryPolicy {
            backoff: vec![Duration::from_secs(1)],
            max_retries: 1,
            ..RetryPolicy::default()
        };
        let start = Instant::now();
        let attempts = Arc::new(Mutex::new(0));
        let a2 = attempts.clone();
        let out: Result<Result<u8, ProviderError>, ()> = with_retry(
            &policy,
            Duration::from_secs(60),
            || 0.5,
            |_| async { Ok(()) },
            || {
                let n = {
                    let mut g = a2.lock().expect("lock");
                    *g += 1;
                    *g
                };
                async move {
                    if n == 1 {
                        std::future::pending::<()>().await;
                    }
                    Ok(7)
                }
            },
        )
        .await;
        assert_eq!(out.expect("hook ok").expect("second attempt works"), 7);
        assert_eq!(start.elapsed(), Duration::from_secs(61));
    }

    #[tokio::test(start_paused = true)]
    async fn invalid_errors_are_not_retried_and_hook_errors_abort() {
        let policy = RetryPolicy::default();
        let out: Result<Result<(), ProviderError>, ()> = with_retry(
            &policy,
            Duration::from_secs(1),
            || 0.5,
            |_| async { Ok(()) },
            || async { Err(ProviderError::new("sim", ErrorKind::Invalid, "bad plan")) },
        )
        .await;
        assert_eq!(
            out.expect("no hook error").expect_err("fails").message,
            "bad plan"
        );
        let out: Result<Result<(), ProviderError>, &str> = with_retry(
            &policy,
            Duration::from_secs(1),
            || 0.5,
            |_| async { Err("lease lost") },
            || async { Err(transient()) },
        )
        .await;
        assert_eq!(out.expect_err("aborted"), "lease lost");
    }
}
