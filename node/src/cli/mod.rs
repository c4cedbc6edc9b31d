//! The `meridian` client CLI: chat from the command line.
//!
//! Every command connects to one service center (`--server URL`, or
//! `--region CODE --state-dir DIR` from local mode's `endpoints.json`), logs
//! in with `--user`/`--password` where it needs a session, and prints one
//! line per result (one JSON object per line with `--json`).

mod endpoints;
mod output;
mod servers;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio_stream::StreamExt;

use crate::client::Client;
use crate::ids::Id;
use crate::limits::{DEFAULT_HISTORY_PAGE, MAX_GROUP_MEMBERS, MAX_HISTORY_PAGE, MAX_SEQ};
use crate::proto::client_api::{Cursor, GroupSettings, UpdateGroupRequest, event};
use crate::proto::peer_api::MeshStatusRequest;
use crate::proto::peer_api::admin_client::AdminClient;
use output::Output;
use servers::Servers;

#[derive(Parser, Debug)]
#[command(
    name = "meridian",
    version,
    about = "Chat over Meridian, region by region"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug)]
pub struct Global {
    /// The service center's client URL, e.g. http://127.0.0.1:7400.
    #[arg(long, global = true, env = "MERIDIAN_SERVER")]
    pub server: Option<String>,
    /// The region to connect to, looked up in DIR/endpoints.json (default: the user's home).
    #[arg(long, global = true, env = "MERIDIAN_REGION")]
    pub region: Option<String>,
    /// Local mode's state directory, holding endpoints.json.
    #[arg(long, global = true, env = "MERIDIAN_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// The user, as name@home.
    #[arg(long, global = true, env = "MERIDIAN_USER")]
    pub user: Option<String>,
    #[arg(long, global = true, env = "MERIDIAN_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Print one JSON object per line.
    #[arg(long, global = true)]
    pub json: bool,
    /// The CA (PEM) that `https://` servers' certificates come from
    /// (default: local mode's, named in endpoints.json).
    #[arg(long, global = true, env = "MERIDIAN_CA")]
    pub ca: Option<PathBuf>,
    /// A tool certificate (PEM) for `mesh status`, with --tool-key and
    /// --ca (default: local mode's).
    #[arg(long, global = true, env = "MERIDIAN_TOOL_CERT")]
    pub tool_cert: Option<PathBuf>,
    #[arg(long, global = true, env = "MERIDIAN_TOOL_KEY")]
    pub tool_key: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create the user at its home region.
    Register,
    /// Log in and print the session and its refresh token. The session is
    /// valid at the region where you logged in, for 15 minutes.
    Login,
    /// Trade a refresh token for a new session and refresh token, at the
    /// region where you logged in.
    Refresh {
        /// The refresh token `login` printed.
        #[arg(long, env = "MERIDIAN_REFRESH_TOKEN", hide_env_values = true)]
        refresh_token: String,
    },
    /// Log a session out: it and its refresh token stop working. Run it
    /// against the region where you logged in (the same --region or
    /// --server); give the session, its refresh token, or both.
    Logout {
        /// The session `login` printed.
        #[arg(long, env = "MERIDIAN_SESSION", hide_env_values = true)]
        session: Option<String>,
        /// The refresh token `login` printed.
        #[arg(long, env = "MERIDIAN_REFRESH_TOKEN", hide_env_values = true)]
        refresh_token: Option<String>,
    },
    /// Create, inspect, change, join or leave groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Send a message to a group; print its id and the seq the group's
    /// home gave it, or `queued` when the home has not answered within 2 s
    /// (`listen` then prints its verdict). A refusal by the home (no such
    /// group, not a member) fails with the reason.
    Send {
        group: String,
        text: String,
        /// Idempotency key: a retry with the same key returns the same message.
        #[arg(long)]
        key: Option<String>,
    },
    /// Print deliveries as they arrive, and the verdicts on your queued
    /// sends.
    Listen {
        /// Exit after this many deliveries (at least 1).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// Exit after this many seconds (0 to 30 days, fractions allowed).
        #[arg(long, value_parser = parse_timeout)]
        timeout: Option<f64>,
        /// Replay a group from after a seq first, as GROUP=SEQ (repeatable).
        #[arg(long, value_parser = parse_cursor)]
        after: Vec<Cursor>,
    },
    /// Show the mesh as a region's roaming system sees it.
    #[command(subcommand)]
    Mesh(MeshCommand),
    /// Print a group's messages in order.
    History {
        group: String,
        /// Print the messages after this seq.
        #[arg(long, default_value_t = 0, value_parser = parse_seq)]
        after: u64,
        /// Print at most this many messages (1 to 1000), read in as many
        /// pages as their size takes.
        #[arg(long, default_value_t = DEFAULT_HISTORY_PAGE,
              value_parser = clap::value_parser!(u32).range(1..=MAX_HISTORY_PAGE as i64))]
        limit: u32,
    },
}

#[derive(Subcommand, Debug)]
pub enum MeshCommand {
    /// Every link of a region: peer, state (Up, Detoured, Down), path and RTT.
    Status,
}

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// Create a group homed in the region you are connected to.
    Create {
        name: String,
    },
    Get {
        group: String,
    },
    /// Change a group (owner and admins only).
    Update {
        group: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        announcement: Option<String>,
        /// Whether anyone may join.
        #[arg(long)]
        open: Option<bool>,
        /// The most members the group may have (1 to 10000).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_GROUP_MEMBERS as i64))]
        max_members: Option<u32>,
    },
    Join {
        group: String,
    },
    Leave {
        group: String,
    },
}

fn parse_cursor(text: &str) -> Result<Cursor, String> {
    let (group, seq) = text
        .rsplit_once('=')
        .ok_or_else(|| format!("{text:?} is not GROUP=SEQ"))?;
    Ok(Cursor {
        group: group.to_owned(),
        last_seq: parse_seq(seq)?,
    })
}

/// The longest `listen --timeout`, in seconds: 30 days. Without `--timeout`
/// `listen` runs until it is stopped.
pub const MAX_LISTEN_TIMEOUT_SECS: f64 = 30.0 * 24.0 * 60.0 * 60.0;

/// A number of seconds: finite, not negative, at most
/// [`MAX_LISTEN_TIMEOUT_SECS`]. (`inf` would overflow the deadline and `nan`
/// would end at once.)
fn parse_timeout(text: &str) -> Result<f64, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !secs.is_finite() || !(0.0..=MAX_LISTEN_TIMEOUT_SECS).contains(&secs) {
        return Err(format!(
            "{text:?} is not a number of seconds from 0 to {MAX_LISTEN_TIMEOUT_SECS} (30 days)"
        ));
    }
    Ok(secs)
}

/// A sequence number: 0 to 2^63-1, the range a group's `seq` can take.
fn parse_seq(text: &str) -> Result<u64, String> {
    let seq: u64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a sequence number"))?;
    if seq > MAX_SEQ {
        return Err(format!(
            "{text:?} is not a sequence number (0 to {MAX_SEQ})"
        ));
    }
    Ok(seq)
}

/// A failure the CLI reports on stderr before exiting non-zero.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CliError(pub String);

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        CliError(status.message().to_owned())
    }
}

type CliResult<T = ()> = Result<T, CliError>;

impl Global {
    fn user(&self) -> CliResult<Id> {
        let user = self.user.as_deref().ok_or_else(|| {
            CliError("no user: pass --user name@home or set MERIDIAN_USER".into())
        })?;
        Id::parse("user", user).map_err(|e| CliError(e.to_string()))
    }

    fn password(&self) -> CliResult<&str> {
        self.password
            .as_deref()
            .ok_or_else(|| CliError("no password: pass --password or set MERIDIAN_PASSWORD".into()))
    }

    /// The service-center replicas to talk to, in the order to try them.
    fn servers(&self) -> CliResult<Servers> {
        let home = self.user.as_deref().and_then(|u| Id::parse("user", u).ok());
        let urls = endpoints::resolve(self, home.as_ref().map(|id| id.home()))?;
        if let Some(url) = urls.iter().find(|u| u.starts_with("https://"))
            && self.ca.is_none()
            && self.state_dir.is_none()
        {
            return Err(CliError(format!(
                "{url} speaks TLS: pass --ca with the CA file its certificate comes from"
            )));
        }
        Ok(Servers::new(urls, endpoints::tls(self)?))
    }

    /// A client of the first replica that accepts a connection.
    async fn connect(&self) -> CliResult<Client> {
        self.servers()?.connect().await
    }

    async fn session(&self) -> CliResult<Client> {
        self.session_on(&mut self.servers()?).await
    }

    /// Logs in at the first replica that accepts a connection; a replica
    /// whose connection breaks during the login passes it to the next (a
    /// second login only issues a second session).
    async fn session_on(&self, servers: &mut Servers) -> CliResult<Client> {
        let user = self.user()?;
        let password = self.password()?;
        let mut client = servers.connect().await?;
        let mut tries = servers.count();
        loop {
            match client.login(user.as_str(), password).await {
                Ok(_) => return Ok(client),
                Err(status) if servers::is_broken(&status) && tries > 1 => {
                    tries -= 1;
                    client = servers.reconnect(&client).await?;
                }
                Err(status) => return Err(status.into()),
            }
        }
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> CliResult {
    let global = &cli.global;
    let out = Output { json: global.json };
    match cli.command {
        Command::Register => {
            let user = global.user()?;
            let reply = global
                .connect()
                .await?
                .register(user.as_str(), global.password()?)
                .await?;
            out.registered(&reply.user);
        }
        Command::Login => {
            let user = global.user()?;
            let reply = global
                .connect()
                .await?
                .login(user.as_str(), global.password()?)
                .await?;
            out.session(&reply);
        }
        Command::Refresh { refresh_token } => {
            let mut client = global.connect().await?;
            client.set_refresh_token(&refresh_token);
            out.session(&client.refresh().await?);
        }
        Command::Logout {
            session,
            refresh_token,
        } => {
            if session.is_none() && refresh_token.is_none() {
                return Err(CliError(
                    "no session: pass --session TOKEN (or set MERIDIAN_SESSION), \
                     or --refresh-token TOKEN"
                        .into(),
                ));
            }
            let mut client = global.connect().await?;
            if let Some(session) = &session {
                client.set_session(session)?;
            }
            if let Some(refresh_token) = &refresh_token {
                client.set_refresh_token(refresh_token);
            }
            out.logged_out(client.logout().await?.revoked);
        }
        Command::Group(command) => group(global, &out, command).await?,
        Command::Mesh(MeshCommand::Status) => {
            let url = endpoints::resolve_peer(global)?;
            let region = global.region.clone().ok_or_else(|| {
                CliError("mesh status needs --region CODE: the region it asks".into())
            })?;
            let dial = crate::transport::Dial::Region {
                credentials: endpoints::tool_credentials(global)?,
                region,
            };
            let channel =
                crate::transport::channel(&url, dial).map_err(|e| CliError(e.to_string()))?;
            let mut admin = AdminClient::new(channel);
            let status = admin.mesh_status(MeshStatusRequest {}).await?.into_inner();
            for link in &status.links {
                out.link(&status.region, link);
            }
        }
        Command::Send { group, text, key } => {
            let reply = global
                .session()
                .await?
                .send(&group, &text, key.as_deref().unwrap_or(""))
                .await?;
            out.sent(&reply);
        }
        Command::History {
            group,
            after,
            limit,
        } => {
            // Page by page as the server sends them (each under its 4 MiB
            // receive limit), until `limit` messages or the end.
            global
                .session()
                .await?
                .history_each(&group, after, limit, |delivery| out.delivery(&delivery))
                .await?;
        }
        Command::Listen {
            count,
            timeout,
            after,
        } => listen(global, &out, count, timeout, after).await?,
    }
    Ok(())
}

async fn group(global: &Global, out: &Output, command: GroupCommand) -> CliResult {
    let mut client = global.session().await?;
    match command {
        GroupCommand::Create { name } => out.group_id(&client.create_group(&name).await?.id),
        GroupCommand::Get { group } => out.group(&client.get_group(&group).await?),
        GroupCommand::Update {
            group,
            name,
            announcement,
            open,
            max_members,
        } => {
            let settings = if open.is_some() || max_members.is_some() {
                let current = client.get_group(&group).await?.settings.unwrap_or_default();
                Some(GroupSettings {
                    open: open.unwrap_or(current.open),
                    max_members: max_members.unwrap_or(current.max_members),
                })
            } else {
                None
            };
            let update = UpdateGroupRequest {
                group,
                title: name,
                announcement,
                settings,
            };
            out.group(&client.update_group(update).await?);
        }
        GroupCommand::Join { group } => out.group(&client.join(&group).await?),
        GroupCommand::Leave { group } => out.left(&client.leave(&group).await?.group),
    }
    Ok(())
}

/// How long `listen` waits before subscribing again after its stream broke.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(200);

/// How long `listen` goes on trying to reach a replica before it gives up.
const RECONNECT_WINDOW: Duration = Duration::from_secs(30);

/// Prints deliveries until `count` have arrived or `timeout` passes. A
/// broken stream (the replica it came from went away, or fell behind) is
/// resumed at the next replica that answers, from the last seq seen of
/// each group, so nothing is skipped or printed twice. The cursors are the
/// groups given with `--after` and those a delivery came from; a group
/// with neither has no cursor, so what it gets while the stream is down is
/// not replayed (nor are verdicts on queued sends: `history` has the
/// messages).
async fn listen(
    global: &Global,
    out: &Output,
    count: Option<u64>,
    timeout: Option<f64>,
    after: Vec<Cursor>,
) -> CliResult {
    // `parse_timeout` keeps `s` finite and in range; `try_from_secs_f64`
    // still refuses rather than panics should another caller pass more.
    let deadline = match timeout {
        None => None,
        Some(s) => {
            let after = Duration::try_from_secs_f64(s)
                .map_err(|_| CliError(format!("--timeout {s} is not a number of seconds")))?;
            Some(
                tokio::time::Instant::now()
                    .checked_add(after)
                    .ok_or_else(|| CliError(format!("--timeout {s} is too long")))?,
            )
        }
    };
    let mut cursors = after;
    let mut seen = 0u64;
    let mut servers = global.servers()?;
    let mut client = global.session_on(&mut servers).await?;
    let mut renewed = false;
    // Since when no stream has been open, while moving between replicas.
    let mut down_since = None;
    let work = async {
        loop {
            let mut stream = match client.subscribe(cursors.clone()).await {
                Ok(stream) => stream,
                // The session expired while listening: renew it, once.
                Err(status) if status.code() == tonic::Code::Unauthenticated && !renewed => {
                    client.refresh().await?;
                    renewed = true;
                    continue;
                }
                Err(status) if servers::is_broken(&status) => {
                    move_on(&mut servers, &mut client, &mut down_since).await?;
                    continue;
                }
                Err(status) => return Err(CliError::from(status)),
            };
            renewed = false;
            down_since = None;
            while let Some(item) = stream.next().await {
                let delivery = match item.map(|event| event.kind) {
                    Ok(Some(event::Kind::Delivery(delivery))) => delivery,
                    // The verdict on a send of ours that was queued.
                    Ok(Some(event::Kind::Verdict(verdict))) => {
                        out.verdict(&verdict);
                        continue;
                    }
                    Ok(None) => continue,
                    Err(status) if servers::is_broken(&status) => break,
                    Err(status) => return Err(CliError::from(status)),
                };
                out.delivery(&delivery);
                match cursors.iter_mut().find(|c| c.group == delivery.group) {
                    Some(cursor) => cursor.last_seq = delivery.seq,
                    None => cursors.push(Cursor {
                        group: delivery.group.clone(),
                        last_seq: delivery.seq,
                    }),
                }
                seen += 1;
                if count.is_some_and(|n| seen >= n) {
                    return Ok(());
                }
            }
            // The stream broke or ended: resume from the cursors, at the
            // next replica that answers.
            move_on(&mut servers, &mut client, &mut down_since).await?;
        }
    };
    match deadline {
        None => work.await,
        Some(deadline) => match tokio::time::timeout_at(deadline, work).await {
            Ok(result) => result,
            Err(_) => match count {
                Some(n) => Err(CliError(format!(
                    "timed out after {seen} of {n} deliveries"
                ))),
                None => Ok(()),
            },
        },
    }
}

/// Moves `client` to the next replica that accepts a connection, after a
/// pause; gives up once none has for [`RECONNECT_WINDOW`] since the
/// stream was last open (`down_since`).
async fn move_on(
    servers: &mut Servers,
    client: &mut Client,
    down_since: &mut Option<tokio::time::Instant>,
) -> CliResult {
    let since = *down_since.get_or_insert_with(tokio::time::Instant::now);
    loop {
        tokio::time::sleep(RESUBSCRIBE_DELAY).await;
        match servers.reconnect(client).await {
            Ok(next) => {
                *client = next;
                return Ok(());
            }
            Err(err) if since.elapsed() >= RECONNECT_WINDOW => return Err(err),
            Err(_) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("meridian").chain(args.iter().copied()))
    }

    #[test]
    fn listen_timeout_must_be_finite_non_negative_and_bounded() {
        for bad in [
            "inf", "-inf", "nan", "NaN", "-1", "1e300", "2592001", "soon",
        ] {
            let err = parse(&["listen", &format!("--timeout={bad}")]).expect_err(bad);
            assert!(
                err.to_string().contains("number of seconds"),
                "{bad}: {err}"
            );
        }
        for good in ["0", "0.5", "30", "2592000"] {
            parse(&["listen", "--timeout", good]).expect(good);
        }
    }

    #[test]
    fn counts_limits_and_sizes_are_bounded() {
        parse(&["listen", "--count", "0"]).expect_err("count 0");
        parse(&["listen", "--count", "1"]).expect("count 1");
        parse(&["history", "g@eu", "--limit", "0"]).expect_err("limit 0");
        parse(&["history", "g@eu", "--limit", "1001"]).expect_err("limit 1001");
        parse(&["history", "g@eu", "--limit", "1000"]).expect("limit 1000");
        parse(&["group", "update", "g@eu", "--max-members", "0"]).expect_err("max 0");
        parse(&["group", "update", "g@eu", "--max-members", "10001"]).expect_err("max 10001");
        parse(&["group", "update", "g@eu", "--max-members", "10000"]).expect("max 10000");
    }

    #[test]
    fn sequence_numbers_stop_at_i64_max() {
        let max = u64::MAX.to_string();
        parse(&["history", "g@eu", "--after", &max]).expect_err("history after u64::MAX");
        parse(&["listen", "--after", &format!("g@eu={max}")]).expect_err("cursor u64::MAX");
        let top = MAX_SEQ.to_string();
        parse(&["history", "g@eu", "--after", &top]).expect("history after i64::MAX");
        parse(&["listen", "--after", &format!("g@eu={top}")]).expect("cursor i64::MAX");
    }
}
