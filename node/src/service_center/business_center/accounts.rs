//! Register, login (also roaming login), refresh, logout, and the
//! authentication of every other call.
//!
//! A login is throttled before anything else ([`super::throttle`]): by its
//! user and by its source address where it is made, and by its user again at
//! the home that checks the password. Passwords are hashed on a bounded pool
//! ([`super::passwords`]). The session is issued by the region where the
//! user logged in ([`super::sessions`]).

use std::net::IpAddr;

use super::sessions::{Issued, SessionToken};
use super::throttle::{Attempt, Key};
use super::{BusinessCenter, check_len, passwords, unexpected};
use crate::Error;
use crate::ids::Id;
use crate::limits::{MAX_PASSWORD_BYTES, MAX_TOKEN_BYTES};
use crate::proto::client_api::{LoginReply, LogoutReply, RegisterReply};
use crate::proto::peer_api::{Register, Verified, VerifyLogin, data_reply, data_request};

fn invalid_credentials() -> Error {
    Error::Unauthenticated("invalid user or password".into())
}

impl BusinessCenter {
    /// Registers a user at its home; forwarded there when that is elsewhere.
    pub async fn register(&self, user: &str, password: &str) -> Result<RegisterReply, Error> {
        let id = Id::parse("user", user)?;
        passwords::check_new(password)?;
        if !self.is_local(&id) {
            let op = data_request::Op::Register(Register {
                user: user.to_owned(),
                password: password.to_owned(),
            });
            return match self.ask_home(id.home(), op).await? {
                data_reply::Result::Registered(reply) => Ok(reply),
                _ => Err(unexpected(id.home())),
            };
        }
        let hash = self.passwords.hash(password.to_owned()).await?;
        let now = self.clock.now_ms();
        let user_id = id.to_string();
        self.dc
            .write(move |tx| tx.insert_user(&user_id, &hash, now))
            .await?;
        tracing::info!(user = %id, "registered");
        Ok(RegisterReply {
            user: id.to_string(),
        })
    }

    /// Logs in at this region, from `source` (the client's address, when
    /// known). The user's home verifies the credentials and records that the
    /// user is attached here.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        source: Option<IpAddr>,
    ) -> Result<LoginReply, Error> {
        let id = Id::parse("user", user)?;
        check_len("password", password, MAX_PASSWORD_BYTES)?;
        let mut keys = vec![Key::user(&id)];
        keys.extend(source.map(Key::address));
        let attempt = self.throttle.begin(keys, self.clock.now_ms())?;
        let checked = if self.is_local(&id) {
            self.check_credentials(&id, password, &self.region)
                .await
                .map(drop)
        } else {
            let op = data_request::Op::VerifyLogin(VerifyLogin {
                user: user.to_owned(),
                password: password.to_owned(),
                attach_region: self.region.to_string(),
            });
            match self.ask_home(id.home(), op).await {
                Ok(data_reply::Result::Verified(verified)) => match verified.assertion {
                    Some(vouched) => {
                        self.assertions
                            .keep(&id, vouched, self.clock.now_ms())
                            .await
                    }
                    None => Err(Error::Internal(format!(
                        "region {} verified {id} without an assertion",
                        id.home()
                    ))),
                },
                Ok(_) => Err(unexpected(id.home())),
                Err(err) => Err(err),
            }
        };
        self.judge(attempt, checked)?;
        let issued = self.sessions.issue(&id, self.clock.now_ms()).await?;
        tracing::info!(user = %id, region = %self.region, "logged in");
        Ok(self.login_reply(issued))
    }

    /// At the home, for another region: checks the password and attaches
    /// the user at `region`. Throttled by user, as logins made here are.
    pub(super) async fn verify_login(
        &self,
        id: &Id,
        password: &str,
        region: &str,
    ) -> Result<Verified, Error> {
        check_len("password", password, MAX_PASSWORD_BYTES)?;
        let attempt = self
            .throttle
            .begin(vec![Key::user(id)], self.clock.now_ms())?;
        let checked = self.check_credentials(id, password, region).await;
        let mut verified = self.judge(attempt, checked)?;
        if region != &*self.region {
            verified.assertion = Some(self.assertions.issue(id, region, self.clock.now_ms())?);
        }
        Ok(verified)
    }

    /// Counts a login attempt's outcome: wrong credentials are a failure;
    /// an error that decided nothing (a region unreachable, the hashing
    /// pool busy) counts neither way.
    fn judge<T>(&self, attempt: Attempt, checked: Result<T, Error>) -> Result<T, Error> {
        match &checked {
            Ok(_) => attempt.succeeded(),
            Err(Error::Unauthenticated(_)) => attempt.failed(self.clock.now_ms()),
            Err(_) => drop(attempt),
        }
        checked
    }

    /// At the home: checks the password and attaches the user at `region`.
    /// An unknown user costs the same hashing as a known one.
    async fn check_credentials(
        &self,
        id: &Id,
        password: &str,
        region: &str,
    ) -> Result<Verified, Error> {
        let user = id.to_string();
        let hash = self.dc.read(move |tx| tx.password_hash(&user)).await?;
        if !self.passwords.verify(password.to_owned(), hash).await? {
            return Err(invalid_credentials());
        }
        let (user, region) = (id.to_string(), region.to_owned());
        self.dc.write(move |tx| tx.attach(&user, &region)).await?;
        Ok(Verified {
            user: id.to_string(),
            assertion: None,
        })
    }

    /// Trades a refresh token of a session issued here for new tokens.
    pub async fn refresh(&self, refresh_token: &str) -> Result<LoginReply, Error> {
        if refresh_token.is_empty() {
            return Err(Error::Unauthenticated(
                "no refresh token: log in first".into(),
            ));
        }
        check_len("refresh token", refresh_token, MAX_TOKEN_BYTES)?;
        let issued = self
            .sessions
            .refresh(refresh_token, self.clock.now_ms())
            .await?;
        tracing::info!(user = %issued.user, region = %self.region, "session refreshed");
        Ok(self.login_reply(issued))
    }

    /// Logs out: revokes the session of each token given (its access and
    /// refresh tokens stop working at once), in the data center and in
    /// memory.
    ///
    /// A session is issued by the region where its user logged in and is
    /// valid only there: no other region ever stores or accepts its tokens.
    /// So revoking it here revokes it at every region where it is in use.
    pub async fn logout(
        &self,
        session: Option<&str>,
        refresh_token: Option<&str>,
    ) -> Result<LogoutReply, Error> {
        let tokens: Vec<SessionToken<'_>> = session
            .filter(|t| !t.is_empty())
            .map(SessionToken::Access)
            .into_iter()
            .chain(
                refresh_token
                    .filter(|t| !t.is_empty())
                    .map(SessionToken::Refresh),
            )
            .collect();
        if tokens.is_empty() {
            return Err(Error::Unauthenticated(
                "no session to log out: send it as `authorization: Bearer <session>`, \
                 or send its refresh token"
                    .into(),
            ));
        }
        for token in [session, refresh_token].into_iter().flatten() {
            check_len("token", token, MAX_TOKEN_BYTES)?;
        }
        let mut revoked = false;
        for token in tokens {
            revoked |= self.sessions.revoke(token).await?;
        }
        if revoked {
            tracing::info!(region = %self.region, "logged out");
        }
        Ok(LogoutReply { revoked })
    }

    /// The user a session token belongs to.
    pub async fn authenticate(&self, token: &str) -> Result<Id, Error> {
        self.sessions.authenticate(token, self.clock.now_ms()).await
    }

    fn login_reply(&self, issued: Issued) -> LoginReply {
        LoginReply {
            session: issued.access,
            user: issued.user.to_string(),
            region: self.region.to_string(),
            expires_at_ms: issued.expires_at_ms,
            refresh_token: issued.refresh,
            refresh_expires_at_ms: issued.refresh_expires_at_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::super::{Clock, for_tests};
    use super::*;
    use crate::limits::{
        ACCESS_TOKEN_TTL_MS, LOGIN_BACKOFF_MS, LOGIN_FAILURES_PER_ADDRESS, LOGIN_FAILURES_PER_USER,
        REFRESH_TOKEN_TTL_MS,
    };

    const PASSWORD: &str = "correct horse";
    const START: i64 = 1_700_000_000_000;

    async fn center_at(now: &Arc<AtomicI64>) -> (tempfile::TempDir, BusinessCenter) {
        let (dir, center) = for_tests("eu").await;
        let now = now.clone();
        let center = center.with_clock(Clock::new(move || now.load(Ordering::SeqCst)));
        for user in ["ann@eu", "bob@eu"] {
            center.register(user, PASSWORD).await.unwrap();
        }
        (dir, center)
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    fn refused(result: Result<impl std::fmt::Debug, Error>) -> String {
        match result {
            Err(Error::ResourceExhausted(message)) => message,
            other => panic!("expected RESOURCE_EXHAUSTED, got {other:?}"),
        }
    }

    fn unauthenticated(result: Result<impl std::fmt::Debug, Error>) -> String {
        match result {
            Err(Error::Unauthenticated(message)) => message,
            other => panic!("expected UNAUTHENTICATED, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_session_expires_is_refreshed_and_is_logged_out_with_its_refresh_token() {
        let now = Arc::new(AtomicI64::new(START));
        let (_dir, center) = center_at(&now).await;
        let login = center
            .login("ann@eu", PASSWORD, ip("192.0.2.1"))
            .await
            .unwrap();
        assert_eq!(login.region, "eu");
        assert_eq!(login.expires_at_ms, START + ACCESS_TOKEN_TTL_MS);
        assert_eq!(login.refresh_expires_at_ms, START + REFRESH_TOKEN_TTL_MS);
        assert_ne!(login.session, login.refresh_token);
        assert_eq!(
            center.authenticate(&login.session).await.unwrap().as_str(),
            "ann@eu"
        );

        now.fetch_add(ACCESS_TOKEN_TTL_MS, Ordering::SeqCst);
        let expired = unauthenticated(center.authenticate(&login.session).await);
        assert_eq!(expired, "session expired; refresh it or log in again");
        let refresh_as_session = unauthenticated(center.authenticate(&login.refresh_token).await);
        assert_eq!(refresh_as_session, "unknown session; log in again");

        let renewed = center.refresh(&login.refresh_token).await.unwrap();
        assert_eq!(
            (renewed.user.as_str(), renewed.region.as_str()),
            ("ann@eu", "eu")
        );
        assert_eq!(
            center
                .authenticate(&renewed.session)
                .await
                .unwrap()
                .as_str(),
            "ann@eu"
        );
        unauthenticated(center.refresh(&login.refresh_token).await);

        let out = center
            .logout(None, Some(&renewed.refresh_token))
            .await
            .unwrap();
        assert!(out.revoked);
        unauthenticated(center.authenticate(&renewed.session).await);
        unauthenticated(center.refresh(&renewed.refresh_token).await);
        let again = center.logout(Some(&renewed.session), None).await.unwrap();
        assert!(!again.revoked, "already logged out");
        unauthenticated(center.logout(None, Some("")).await);
        unauthenticated(center.refresh("").await);
    }

    #[tokio::test]
    async fn oversized_tokens_are_refused_before_any_lookup() {
        let now = Arc::new(AtomicI64::new(START));
        let (_dir, center) = center_at(&now).await;
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(
            center.refresh(&huge).await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            center.logout(None, Some(&huge)).await,
            Err(Error::InvalidArgument(_))
        ));
    }

    #[tokio::test]
    async fn logout_with_the_session_revokes_its_refresh_token_too() {
        let now = Arc::new(AtomicI64::new(START));
        let (_dir, center) = center_at(&now).await;
        let login = center.login("ann@eu", PASSWORD, None).await.unwrap();
        let other = center.login("ann@eu", PASSWORD, None).await.unwrap();
        assert!(
            center
                .logout(Some(&login.session), None)
                .await
                .unwrap()
                .revoked
        );
        unauthenticated(center.authenticate(&login.session).await);
        unauthenticated(center.refresh(&login.refresh_token).await);
        center.authenticate(&other.session).await.unwrap();
    }

    #[tokio::test]
    async fn wrong_passwords_for_a_user_are_throttled_before_the_password_is_checked() {
        let now = Arc::new(AtomicI64::new(START));
        let (_dir, center) = center_at(&now).await;
        for i in 0..LOGIN_FAILURES_PER_USER {
            let source = ip(&format!("198.51.100.{i}"));
            let wrong = center.login("ann@eu", "not the password", source).await;
            assert_eq!(unauthenticated(wrong), "invalid user or password");
        }
        // Even the right password is refused now: it is never checked.
        let message = refused(center.login("ann@eu", PASSWORD, ip("192.0.2.1")).await);
        assert_eq!(
            message,
            "too many failed logins for ann@eu; try again in 1 s"
        );
        // So is another region's request to verify ann here, at her home.
        let ann = Id::parse("user", "ann@eu").unwrap();
        refused(center.verify_login(&ann, PASSWORD, "us").await);
        // Others are not affected.
        center
            .login("bob@eu", PASSWORD, ip("198.51.100.0"))
            .await
            .unwrap();

        now.fetch_add(LOGIN_BACKOFF_MS, Ordering::SeqCst);
        center
            .login("ann@eu", PASSWORD, ip("192.0.2.1"))
            .await
            .unwrap();
        unauthenticated(center.login("ann@eu", "not the password", None).await);
        center.login("ann@eu", PASSWORD, None).await.unwrap();
    }

    #[tokio::test]
    async fn wrong_passwords_from_an_address_are_throttled_across_users() {
        let now = Arc::new(AtomicI64::new(START));
        let (_dir, center) = center_at(&now).await;
        let attacker = ip("203.0.113.9");
        for i in 0..LOGIN_FAILURES_PER_ADDRESS {
            // Unknown users fail like known ones.
            let wrong = center
                .login(&format!("u{i}@eu"), "not the password", attacker)
                .await;
            unauthenticated(wrong);
        }
        let message = refused(center.login("ann@eu", PASSWORD, attacker).await);
        assert_eq!(
            message,
            "too many failed logins from 203.0.113.9; try again in 1 s"
        );
        center
            .login("ann@eu", PASSWORD, ip("192.0.2.1"))
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_past_the_throttle_is_bounded_by_the_hashing_queue() {
        let now = Arc::new(AtomicI64::new(START));
        let (_dir, center) = center_at(&now).await;
        // 120 users from 120 addresses: the throttle lets each one through.
        let flood: Vec<_> = (0..120)
            .map(|i| {
                let center = center.clone();
                tokio::spawn(async move {
                    let source = ip(&format!("10.0.{i}.1"));
                    center
                        .login(&format!("u{i}@eu"), "not the password", source)
                        .await
                })
            })
            .collect();
        let mut busy = 0;
        for task in flood {
            match task.await.unwrap() {
                Err(Error::Unauthenticated(_)) => {}
                Err(Error::ResourceExhausted(message)) => {
                    assert_eq!(
                        message,
                        "too many logins are being checked; try again in a moment"
                    );
                    busy += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(busy > 0, "the queue refused the excess at once");
        // A refusal for a busy pool is no failed login.
        center
            .login("u0@eu", "not the password", ip("10.0.0.1"))
            .await
            .unwrap_err();
        center
            .login("ann@eu", PASSWORD, ip("10.0.1.1"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn verifying_for_another_region_counts_failures_by_user() {
        let now = Arc::new(AtomicI64::new(START));
        let (_dir, center) = center_at(&now).await;
        let ann = Id::parse("user", "ann@eu").unwrap();
        for _ in 0..LOGIN_FAILURES_PER_USER {
            unauthenticated(center.verify_login(&ann, "not the password", "us").await);
        }
        refused(center.login("ann@eu", PASSWORD, None).await);
        now.fetch_add(LOGIN_BACKOFF_MS, Ordering::SeqCst);
        let verified = center.verify_login(&ann, PASSWORD, "us").await.unwrap();
        assert_eq!(verified.user, "ann@eu");
    }
}
