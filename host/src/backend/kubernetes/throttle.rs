//! Client-side rate limit for API requests (`kubernetes.connection.qps` and `burst`): a token
//! bucket, as client-go has, so a login storm cannot flood the API server.
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::Mutex;

pub struct Throttle {
    qps: f64,
    burst: f64,
    /// Tokens left and when they were counted. Waiters queue on the (fair) lock, so requests
    /// go out in the order they asked.
    bucket: Mutex<(f64, Instant)>,
}

impl Throttle {
    pub fn new(qps: f32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            qps: f64::from(qps).max(0.001),
            burst,
            bucket: Mutex::new((burst, Instant::now())),
        }
    }

    /// Waits until one more request may go out.
    pub async fn acquire(&self) {
        let mut bucket = self.bucket.lock().await;
        loop {
            let now = Instant::now();
            let (tokens, since) = *bucket;
            let tokens =
                (tokens + now.duration_since(since).as_secs_f64() * self.qps).min(self.burst);
            if tokens >= 1.0 {
                *bucket = (tokens - 1.0, now);
                return;
            }
            *bucket = (tokens, now);
            tokio::time::sleep(Duration::from_secs_f64((1.0 - tokens) / self.qps)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_pass_then_the_rate_applies() {
        let throttle = Throttle::new(10.0, 3);
        let start = tokio::time::Instant::now();
        for _ in 0..3 {
            throttle.acquire().await;
        }
        assert!(start.elapsed() < Duration::from_millis(1));
        for _ in 0..5 {
            throttle.acquire().await;
        }
        // Five more at 10 per second: half a second of (virtual) time.
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(490) && waited <= Duration::from_millis(600),
            "{waited:?}"
        );
    }
}
