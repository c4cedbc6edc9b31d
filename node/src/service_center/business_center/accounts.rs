//! Register, login (also roaming login) and sessions.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;

use super::{BusinessCenter, check_len, unexpected};
use crate::Error;
use crate::ids::Id;
use crate::limits::{MAX_PASSWORD_BYTES, MIN_PASSWORD_BYTES, SESSION_TTL_MS};
use crate::proto::client_api::{LoginReply, RegisterReply};
use crate::proto::peer_api::{Register, Verified, VerifyLogin, data_reply, data_request};
use crate::service_center::data_center::accounts;

fn invalid_credentials() -> Error {
    Error::Unauthenticated("invalid user or password".into())
}

fn check_password(password: &str) -> Result<(), Error> {
    if password.len() < MIN_PASSWORD_BYTES {
        return Err(Error::InvalidArgument(format!(
            "password must be at least {MIN_PASSWORD_BYTES} bytes"
        )));
    }
    check_len("password", password, MAX_PASSWORD_BYTES)
}

/// Hashes a password with argon2id, off the async threads.
async fn hash_password(password: String) -> Result<String, Error> {
    tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Internal(e.to_string()))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::Internal(format!("password hashing: {e}")))
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
}

async fn verify_password(password: String, hash: String) -> Result<bool, Error> {
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&hash).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
}

impl BusinessCenter {
    /// Registers a user at its home; forwarded there when that is elsewhere.
    pub async fn register(&self, user: &str, password: &str) -> Result<RegisterReply, Error> {
        let id = Id::parse("user", user)?;
        check_password(password)?;
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
        let hash = hash_password(password.to_owned()).await?;
        let now = crate::now_ms();
        let user_id = id.to_string();
        self.dc
            .write(move |conn| accounts::insert_user(conn, &user_id, &hash, now))
            .await?;
        tracing::info!(user = %id, "registered");
        Ok(RegisterReply {
            user: id.to_string(),
        })
    }

    /// Logs in at this region. The user's home verifies the credentials and
    /// records that the user is attached here.
    pub async fn login(&self, user: &str, password: &str) -> Result<LoginReply, Error> {
        let id = Id::parse("user", user)?;
        check_len("password", password, MAX_PASSWORD_BYTES)?;
        if self.is_local(&id) {
            self.verify_login(&id, password, &self.region).await?;
        } else {
            let op = data_request::Op::VerifyLogin(VerifyLogin {
                user: user.to_owned(),
                password: password.to_owned(),
                attach_region: self.region.to_string(),
            });
            match self.ask_home(id.home(), op).await? {
                data_reply::Result::Verified(_) => {}
                _ => return Err(unexpected(id.home())),
            }
        }
        let mut token = [0u8; 32];
        rand::rng().fill_bytes(&mut token);
        let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
        let expires = crate::now_ms() + SESSION_TTL_MS;
        let (t, u) = (token.clone(), id.to_string());
        self.dc
            .write(move |conn| accounts::insert_session(conn, &t, &u, expires))
            .await?;
        self.sessions
            .lock()
            .expect("sessions")
            .insert(token.clone(), (id.clone(), expires));
        tracing::info!(user = %id, region = %self.region, "logged in");
        Ok(LoginReply {
            session: token,
            user: id.to_string(),
            region: self.region.to_string(),
            expires_at_ms: expires,
        })
    }

    /// At the home: checks the password and attaches the user at `region`.
    pub(super) async fn verify_login(
        &self,
        id: &Id,
        password: &str,
        region: &str,
    ) -> Result<Verified, Error> {
        let user = id.to_string();
        let hash = self
            .dc
            .read(move |conn| accounts::password_hash(conn, &user))
            .await?
            .ok_or_else(invalid_credentials)?;
        if !verify_password(password.to_owned(), hash).await? {
            return Err(invalid_credentials());
        }
        let (user, region) = (id.to_string(), region.to_owned());
        self.dc
            .write(move |conn| accounts::attach(conn, &user, &region))
            .await?;
        Ok(Verified {
            user: id.to_string(),
        })
    }

    /// The user a session token belongs to.
    pub async fn authenticate(&self, token: &str) -> Result<Id, Error> {
        let now = crate::now_ms();
        let cached = self.sessions.lock().expect("sessions").get(token).cloned();
        let (id, expires) = match cached {
            Some(found) => found,
            None => {
                let t = token.to_owned();
                let (user, expires) = self
                    .dc
                    .read(move |conn| accounts::session(conn, &t))
                    .await?
                    .ok_or_else(|| {
                        Error::Unauthenticated("unknown session; log in again".into())
                    })?;
                let id = Id::parse("user", &user)?;
                self.sessions
                    .lock()
                    .expect("sessions")
                    .insert(token.to_owned(), (id.clone(), expires));
                (id, expires)
            }
        };
        if expires <= now {
            return Err(Error::Unauthenticated(
                "session expired; log in again".into(),
            ));
        }
        Ok(id)
    }
}
