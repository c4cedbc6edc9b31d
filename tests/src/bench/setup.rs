//! The users, sessions and groups of one run. Every name starts with the run's
//! prefix, so reruns against the same state never collide.

use std::time::Duration;

use anyhow::Context;
use meridian_node::client::Client;

use super::local::Endpoints;

/// The password of every benchmark user.
pub const PASSWORD: &str = "meridian-bench";

/// A fresh name prefix: `b<unix millis>r<run>`.
pub fn prefix(run: usize) -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("b{millis}r{run}")
}

/// What every scenario of a run shares.
pub struct Ctx {
    pub endpoints: Endpoints,
    pub prefix: String,
}

/// A logged-in user: one client, and the token to open more connections with.
pub struct Session {
    pub user: String,
    pub client: Client,
    url: String,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    token: String,
}

impl Ctx {
    /// A new connection to `region`'s service center (retried for a few
    /// seconds: a region may have just started listening).
    pub async fn connect(&self, region: &str) -> anyhow::Result<Client> {
        connect_url(self.endpoints.client(region)?, self.endpoints.tls()?).await
    }

    /// `<prefix>-<role>`, a user or group name.
    pub fn name(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// Registers `<prefix>-<role>@<home>` at its home and logs it in at `at`.
    pub async fn user(&self, role: &str, home: &str, at: &str) -> anyhow::Result<Session> {
        let user = format!("{}@{home}", self.name(role));
        self.connect(home)
            .await?
            .register(&user, PASSWORD)
            .await
            .with_context(|| format!("register {user} at {home}"))?;
        let mut client = self.connect(at).await?;
        let reply = client
            .login(&user, PASSWORD)
            .await
            .with_context(|| format!("log {user} in at {at}"))?;
        Ok(Session {
            user,
            client,
            url: self.endpoints.client(at)?.to_owned(),
            tls: self.endpoints.tls()?,
            token: reply.session,
        })
    }
}

impl Session {
    /// `n` more connections that use this session.
    pub async fn pool(&self, n: usize) -> anyhow::Result<Vec<Client>> {
        self.pool_over(std::slice::from_ref(&self.url), n).await
    }

    /// `n` more connections that use this session, dealt in turn over
    /// `urls`: replicas of the region it was opened at, which all know the
    /// session (docs/ARCHITECTURE.md §12, "Reaching the replicas").
    pub async fn pool_over(&self, urls: &[String], n: usize) -> anyhow::Result<Vec<Client>> {
        anyhow::ensure!(!urls.is_empty(), "no client URL to connect to");
        let mut clients = Vec::with_capacity(n);
        for i in 0..n.max(1) {
            let mut client = connect_url(&urls[i % urls.len()], self.tls.clone()).await?;
            client.set_session(&self.token)?;
            clients.push(client);
        }
        Ok(clients)
    }

    /// Creates group `<prefix>-<role>` where this session is connected;
    /// returns its id.
    pub async fn create_group(&mut self, ctx: &Ctx, role: &str) -> anyhow::Result<String> {
        let name = ctx.name(role);
        let info = self
            .client
            .create_group(&name)
            .await
            .with_context(|| format!("{} creates group {name}", self.user))?;
        Ok(info.id)
    }

    pub async fn join(&mut self, group: &str) -> anyhow::Result<()> {
        self.client
            .join(group)
            .await
            .with_context(|| format!("{} joins {group}", self.user))?;
        Ok(())
    }
}

async fn connect_url(
    url: &str,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> anyhow::Result<Client> {
    let mut attempt = 0;
    loop {
        match Client::connect(url, tls.clone()).await {
            Ok(client) => return Ok(client),
            Err(e) if attempt >= 50 => {
                return Err(e).with_context(|| format!("cannot connect to {url}"));
            }
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A message body of at least `bytes` bytes: `head`, a space, then padding.
pub fn body(head: &str, bytes: usize) -> String {
    let mut body = String::with_capacity(bytes.max(head.len() + 1));
    body.push_str(head);
    body.push(' ');
    while body.len() < bytes {
        body.push('x');
    }
    body
}
