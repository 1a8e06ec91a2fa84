//! The time and the randomness the cluster's components read, from one place, so the deterministic simulation can
//! replace both: [`simulate`] puts the calling thread on a simulated wall clock (set by the simulation as it moves
//! time on, [`set_simulated_now`] - and free to jump) and a seeded random generator. Elsewhere these are the system
//! clock and the operating system's randomness. Monotonic deadlines use `tokio::time::Instant`, which follows
//! tokio's (there paused and advanced) clock.

use std::cell::RefCell;
use std::time::{Duration, SystemTime};

use rand::{Rng, SeedableRng};

struct Simulated {
    now: SystemTime,
    rng: rand::rngs::StdRng,
}

thread_local! {
    static SIMULATED: RefCell<Option<Simulated>> = const { RefCell::new(None) };
}

/// Puts this thread on a simulated wall clock reading `now` and seeds its randomness with `seed`.
pub fn simulate(now: SystemTime, seed: u64) {
    SIMULATED.with(|s| {
        *s.borrow_mut() = Some(Simulated {
            now,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        })
    });
}

/// Sets the simulated wall clock (no effect unless [`simulate`] was called on this thread).
pub fn set_simulated_now(now: SystemTime) {
    SIMULATED.with(|s| {
        if let Some(sim) = s.borrow_mut().as_mut() {
            sim.now = now;
        }
    });
}

/// Takes this thread back to the system clock and randomness.
pub fn stop_simulating() {
    SIMULATED.with(|s| *s.borrow_mut() = None);
}

/// Whether this thread runs on the simulated clock.
pub fn simulated() -> bool {
    SIMULATED.with(|s| s.borrow().is_some())
}

/// The wall-clock time now.
pub fn now() -> SystemTime {
    SIMULATED
        .with(|s| s.borrow().as_ref().map(|sim| sim.now))
        .unwrap_or_else(SystemTime::now)
}

/// The wall-clock time now, as UTC.
pub fn utc_now() -> chrono::DateTime<chrono::Utc> {
    now().into()
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> Duration {
    now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Runs blocking work (git, files) on tokio's blocking threads - or, on the simulated clock, where nothing may
/// happen on another thread, right here.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    if simulated() {
        Ok(work())
    } else {
        tokio::task::spawn_blocking(work).await
    }
}

/// A random number below `bound` (which must be > 0).
pub fn random_below(bound: u64) -> u64 {
    SIMULATED
        .with(|s| {
            s.borrow_mut()
                .as_mut()
                .map(|sim| sim.rng.random_range(0..bound))
        })
        .unwrap_or_else(|| rand::rng().random_range(0..bound))
}

/// A random (version 4) UUID, as object uids are.
pub fn uuid() -> String {
    let bytes: [u8; 16] = SIMULATED
        .with(|s| s.borrow_mut().as_mut().map(|sim| sim.rng.random()))
        .unwrap_or_else(rand::random);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simulated_clock_reads_what_it_is_set_to_and_randomness_follows_the_seed() {
        let epoch = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        simulate(epoch, 7);
        assert_eq!(now(), epoch);
        set_simulated_now(epoch + Duration::from_secs(90));
        assert_eq!(now(), epoch + Duration::from_secs(90));
        assert_eq!(utc_now().timestamp(), 1_800_000_090);
        let first: Vec<String> = (0..3).map(|_| uuid()).collect();
        simulate(epoch, 7);
        let again: Vec<String> = (0..3).map(|_| uuid()).collect();
        assert_eq!(first, again);
        simulate(epoch, 8);
        assert_ne!(uuid(), first[0]);
        stop_simulating();
        let real = SystemTime::now();
        assert!(now() >= real && now() < real + Duration::from_secs(5));
        assert_ne!(uuid(), uuid());
    }
}
