//! Passwords: their rules, and argon2id hashing on a bounded pool.
//!
//! One argon2id hash takes about 19 MiB of working memory and tens of
//! milliseconds of a core, so hashing without a bound lets a flood of logins
//! take the process's memory. The pool runs at most half the cores' worth of
//! hashes at once (at least one); at most [`MAX_PASSWORD_QUEUE`] more wait
//! their turn, in order, and any further one is refused at once with
//! `RESOURCE_EXHAUSTED`.
//!
//! Each worker keeps its working memory from one hash to the next (zeroed
//! in between). Allocating it afresh for every hash, as argon2's own
//! `PasswordHasher` does, leaves the allocator holding on to many such
//! blocks: resident memory grew by 19 MiB per hash for the first several.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::RngCore;
use tokio::sync::{Semaphore, TryAcquireError};

use super::check_len;
use crate::Error;
use crate::limits::{MAX_PASSWORD_BYTES, MAX_PASSWORD_QUEUE, MIN_PASSWORD_BYTES};

/// The most working memory a stored hash may ask for, in 1 KiB blocks
/// (new hashes take argon2's default, 19 MiB).
const MAX_MEMORY_BLOCKS: usize = 64 * 1024;

/// Checks a new password against the rules.
pub(super) fn check_new(password: &str) -> Result<(), Error> {
    if password.len() < MIN_PASSWORD_BYTES {
        return Err(Error::InvalidArgument(format!(
            "password must be at least {MIN_PASSWORD_BYTES} bytes"
        )));
    }
    check_len("password", password, MAX_PASSWORD_BYTES)
}

#[derive(Clone)]
pub(super) struct PasswordPool {
    workers: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    /// The working memory of idle workers.
    memories: Arc<Mutex<Vec<Vec<Block>>>>,
}

impl PasswordPool {
    /// Half this machine's cores (at least one), and the standard queue.
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new((cores / 2).max(1), MAX_PASSWORD_QUEUE)
    }

    pub fn new(workers: usize, max_waiting: usize) -> Self {
        Self {
            workers: Arc::new(Semaphore::new(workers.max(1))),
            waiting: Arc::default(),
            max_waiting,
            memories: Arc::default(),
        }
    }

    /// Hashes a new password with argon2id and a random salt, as a PHC
    /// string.
    pub async fn hash(&self, password: String) -> Result<String, Error> {
        self.run(move |memory| {
            let params = Params::default();
            let salt = new_salt()?;
            let output = argon2id(
                &params,
                Version::default(),
                &password,
                salt.as_salt(),
                memory,
            )?;
            let phc = PasswordHash {
                algorithm: Algorithm::Argon2id.ident(),
                version: Some(Version::default().into()),
                params: ParamsString::try_from(&params).map_err(hashing)?,
                salt: Some(salt.as_salt()),
                hash: Some(output),
            };
            Ok(phc.to_string())
        })
        .await
    }

    /// Whether `password` matches the stored `hash`. Without a hash (an
    /// unknown user) the same work is done and the answer is `false`, so
    /// that the time taken does not tell which users exist.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, Error> {
        self.run(move |memory| {
            let Some(hash) = hash else {
                let salt = new_salt()?;
                argon2id(
                    &Params::default(),
                    Version::default(),
                    &password,
                    salt.as_salt(),
                    memory,
                )?;
                return Ok(false);
            };
            let stored = PasswordHash::new(&hash).map_err(hashing)?;
            if Algorithm::try_from(stored.algorithm).map_err(hashing)? != Algorithm::Argon2id {
                return Err(Error::Internal(
                    "a stored password hash is not argon2id".into(),
                ));
            }
            let version = match stored.version {
                Some(v) => Version::try_from(v).map_err(hashing)?,
                None => Version::default(),
            };
            let params = Params::try_from(&stored).map_err(hashing)?;
            let (Some(salt), Some(expected)) = (stored.salt, stored.hash) else {
                return Err(Error::Internal(
                    "a stored password hash has no salt or output".into(),
                ));
            };
            let computed = argon2id(&params, version, &password, salt, memory)?;
            // `Output` compares in constant time.
            Ok(computed == expected)
        })
        .await
    }

    /// Runs `work` on a blocking thread, with a worker's memory, once a
    /// worker is free. The worker stays taken until `work` ends, even if the
    /// caller stops waiting.
    async fn run<T, F>(&self, work: F) -> Result<T, Error>
    where
        F: FnOnce(&mut Vec<Block>) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        let permit = match self.workers.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) => {
                let _queued = self.join_queue()?;
                self.workers
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| Error::Unavailable("the service center is stopping".into()))?
            }
            Err(TryAcquireError::Closed) => {
                return Err(Error::Unavailable("the service center is stopping".into()));
            }
        };
        let memories = self.memories.clone();
        tokio::task::spawn_blocking(move || {
            let mut memory = memories.lock().expect("memories").pop().unwrap_or_default();
            let result = work(&mut memory);
            memory.fill(Block::default());
            memories.lock().expect("memories").push(memory);
            drop(permit);
            result
        })
        .await
        .map_err(|e| Error::Internal(format!("password hashing: {e}")))?
    }

    fn join_queue(&self) -> Result<Queued<'_>, Error> {
        let ahead = self.waiting.fetch_add(1, Ordering::SeqCst);
        let queued = Queued(&self.waiting);
        if ahead >= self.max_waiting {
            return Err(Error::ResourceExhausted(
                "too many logins are being checked; try again in a moment".into(),
            ));
        }
        Ok(queued)
    }

    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

/// A place in the queue, given up when dropped.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn hashing(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("password hashing: {e}"))
}

fn new_salt() -> Result<SaltString, Error> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    SaltString::encode_b64(&salt).map_err(hashing)
}

/// Argon2id of `password` in `memory`, grown to what `params` need.
fn argon2id(
    params: &Params,
    version: Version,
    password: &str,
    salt: Salt<'_>,
    memory: &mut Vec<Block>,
) -> Result<Output, Error> {
    let blocks = params.block_count();
    if blocks > MAX_MEMORY_BLOCKS {
        return Err(Error::Internal(format!(
            "a stored password hash asks for {blocks} KiB of memory; at most {MAX_MEMORY_BLOCKS} are allowed"
        )));
    }
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut salt_bytes = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_bytes).map_err(hashing)?;
    let argon2 = Argon2::new(Algorithm::Argon2id, version, params.clone());
    let len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    Output::init_with(len, |out| {
        argon2
            .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut memory[..blocks])
            .map_err(Into::into)
    })
    .map_err(hashing)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// Waits until `condition` holds, failing after a generous deadline.
    async fn until(what: &str, condition: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn hashes_verify_and_an_unknown_user_never_matches() {
        let pool = PasswordPool::new(1, 4);
        let hash = pool.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(
            pool.verify("correct horse".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(!pool.verify("wrong horse".into(), Some(hash)).await.unwrap());
        assert!(!pool.verify("correct horse".into(), None).await.unwrap());
    }

    #[tokio::test]
    async fn hashes_are_standard_phc_strings_both_ways() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let pool = PasswordPool::new(1, 4);
        let ours = pool.hash("correct horse".into()).await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        // Hashes stored by earlier builds (argon2's own hasher) still verify.
        let salt = new_salt().unwrap();
        let theirs = Argon2::default()
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        assert!(
            pool.verify("correct horse".into(), Some(theirs.clone()))
                .await
                .unwrap()
        );
        assert!(
            !pool
                .verify("correct horsf".into(), Some(theirs))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn a_worker_keeps_its_memory_zeroed_between_hashes() {
        let pool = PasswordPool::new(1, 4);
        for _ in 0..3 {
            pool.hash("correct horse".into()).await.unwrap();
        }
        let memories = pool.memories.lock().unwrap();
        assert_eq!(memories.len(), 1, "one worker, one memory");
        assert_eq!(memories[0].len(), Params::default().block_count());
        let zero = format!("{:?}", Block::default());
        let memory = &memories[0];
        for i in [0, memory.len() / 2, memory.len() - 1] {
            assert_eq!(format!("{:?}", memory[i]), zero, "block {i} is zeroed");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_queue_is_bounded_and_the_workers_too() {
        let pool = PasswordPool::new(1, 2);
        // The one worker is busy until told to finish.
        let (finish, finished) = mpsc::channel::<()>();
        let busy = {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run(move |_| {
                    finished.recv().ok();
                    Ok(0)
                })
                .await
            })
        };
        until("the worker is taken", || {
            pool.workers.available_permits() == 0
        })
        .await;
        let queued: Vec<_> = (1..=2)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.run(move |_| Ok(i)).await })
            })
            .collect();
        until("two wait", || pool.waiting() == 2).await;

        let refused = pool.run(|_| Ok(99)).await.unwrap_err();
        assert_eq!(
            refused,
            Error::ResourceExhausted(
                "too many logins are being checked; try again in a moment".into()
            )
        );
        assert_eq!(pool.waiting(), 2, "a refusal leaves the queue as it was");

        finish.send(()).unwrap();
        assert_eq!(busy.await.unwrap().unwrap(), 0);
        let mut answers = Vec::new();
        for task in queued {
            answers.push(task.await.unwrap().unwrap());
        }
        assert_eq!(answers, [1, 2], "the waiting ones ran, in turn");
        assert_eq!(pool.waiting(), 0);
        assert_eq!(pool.workers.available_permits(), 1);
    }

    #[tokio::test]
    async fn a_caller_that_stops_waiting_gives_up_its_place() {
        let pool = PasswordPool::new(1, 1);
        let (finish, finished) = mpsc::channel::<()>();
        let busy = {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run(move |_| {
                    finished.recv().ok();
                    Ok(())
                })
                .await
            })
        };
        until("the worker is taken", || {
            pool.workers.available_permits() == 0
        })
        .await;
        let impatient = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(|_| Ok(())).await })
        };
        until("it waits", || pool.waiting() == 1).await;
        impatient.abort();
        until("its place is given up", || pool.waiting() == 0).await;
        finish.send(()).unwrap();
        busy.await.unwrap().unwrap();
        pool.run(|_| Ok(())).await.unwrap();
    }
}
