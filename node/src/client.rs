//! A client of the business center's API, used by the CLI, the tests and the
//! benchmark. It keeps the session token and sends it with every call, and
//! the refresh token that renews it.

use std::sync::Arc;

use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};

use crate::limits::{DEFAULT_HISTORY_PAGE, MAX_CLIENT_MESSAGE_BYTES, MAX_HISTORY_PAGE};
use crate::proto::client_api::business_center_client::BusinessCenterClient;
use crate::proto::client_api::*;
use crate::transport::Dial;

#[derive(Clone)]
pub struct Client {
    api: BusinessCenterClient<Channel>,
    session: Option<MetadataValue<tonic::metadata::Ascii>>,
    refresh_token: Option<String>,
}

impl Client {
    /// Connects to a service center's client API at `url`: `http://host:port`
    /// in plaintext, or `https://host:port` over TLS, where the server must
    /// hold a certificate for `host` from a CA that `tls` trusts.
    pub async fn connect(
        url: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self, tonic::transport::Error> {
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())?
            .connect_timeout(std::time::Duration::from_secs(3))
            .tcp_nodelay(true);
        let channel = match tls {
            Some(config) if url.starts_with("https://") => {
                endpoint
                    .connect_with_connector(crate::transport::connector(Dial::Host(config)))
                    .await?
            }
            _ => endpoint.connect().await?,
        };
        Ok(Self {
            // The service center sends nothing larger (one constant for both).
            api: BusinessCenterClient::new(channel)
                .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES),
            session: None,
            refresh_token: None,
        })
    }

    /// Connects to `url` as this client: with its session and refresh
    /// token. For another replica of the same service center, which shares
    /// its data center and so knows the session (docs/ARCHITECTURE.md §12).
    pub async fn connect_as(
        &self,
        url: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self, tonic::transport::Error> {
        let mut client = Self::connect(url, tls).await?;
        client.session = self.session.clone();
        client.refresh_token = self.refresh_token.clone();
        Ok(client)
    }

    /// Uses an existing session token.
    pub fn set_session(&mut self, token: &str) -> Result<(), Status> {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::invalid_argument("a session token is printable ASCII"))?;
        self.session = Some(value);
        Ok(())
    }

    /// Uses an existing refresh token, for [`Client::refresh`] and
    /// [`Client::logout`].
    pub fn set_refresh_token(&mut self, token: &str) {
        self.refresh_token = Some(token.to_owned());
    }

    fn keep(&mut self, reply: &LoginReply) -> Result<(), Status> {
        self.set_session(&reply.session)?;
        self.refresh_token = Some(reply.refresh_token.clone());
        Ok(())
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(session) = &self.session {
            request
                .metadata_mut()
                .insert("authorization", session.clone());
        }
        request
    }

    pub async fn register(&mut self, user: &str, password: &str) -> Result<RegisterReply, Status> {
        let message = RegisterRequest {
            user: user.into(),
            password: password.into(),
        };
        Ok(self.api.register(message).await?.into_inner())
    }

    /// Logs in and keeps the session for the calls that follow.
    pub async fn login(&mut self, user: &str, password: &str) -> Result<LoginReply, Status> {
        let message = LoginRequest {
            user: user.into(),
            password: password.into(),
        };
        let reply = self.api.login(message).await?.into_inner();
        self.keep(&reply)?;
        Ok(reply)
    }

    /// Trades the refresh token for a new session and refresh token, and
    /// keeps them. Only the region that issued the session does this.
    pub async fn refresh(&mut self) -> Result<LoginReply, Status> {
        let refresh_token = self
            .refresh_token
            .clone()
            .ok_or_else(|| Status::failed_precondition("no refresh token: log in first"))?;
        let reply = self
            .api
            .refresh(RefreshRequest { refresh_token })
            .await?
            .into_inner();
        self.keep(&reply)?;
        Ok(reply)
    }

    /// Logs out: the session and its refresh token stop working, and this
    /// client forgets them.
    pub async fn logout(&mut self) -> Result<LogoutReply, Status> {
        let request = self.request(LogoutRequest {
            refresh_token: self.refresh_token.clone().unwrap_or_default(),
        });
        let reply = self.api.logout(request).await?.into_inner();
        self.session = None;
        self.refresh_token = None;
        Ok(reply)
    }

    pub async fn create_group(&mut self, name: &str) -> Result<GroupInfo, Status> {
        let request = self.request(CreateGroupRequest {
            name: name.into(),
            ..Default::default()
        });
        Ok(self.api.create_group(request).await?.into_inner())
    }

    pub async fn get_group(&mut self, group: &str) -> Result<GroupInfo, Status> {
        let request = self.request(GetGroupRequest {
            group: group.into(),
        });
        Ok(self.api.get_group(request).await?.into_inner())
    }

    pub async fn update_group(&mut self, update: UpdateGroupRequest) -> Result<GroupInfo, Status> {
        let request = self.request(update);
        Ok(self.api.update_group(request).await?.into_inner())
    }

    pub async fn join(&mut self, group: &str) -> Result<GroupInfo, Status> {
        let request = self.request(MembershipRequest {
            group: group.into(),
        });
        Ok(self.api.join_group(request).await?.into_inner())
    }

    pub async fn leave(&mut self, group: &str) -> Result<LeaveGroupReply, Status> {
        let request = self.request(MembershipRequest {
            group: group.into(),
        });
        Ok(self.api.leave_group(request).await?.into_inner())
    }

    pub async fn send(&mut self, group: &str, body: &str, key: &str) -> Result<SendReply, Status> {
        let request = self.request(SendRequest {
            group: group.into(),
            body: body.into(),
            idempotency_key: key.into(),
        });
        Ok(self.api.send(request).await?.into_inner())
    }

    /// Up to `count` messages of `group` after `after_seq`, in order (0:
    /// the server's default page). Reads as many pages as it takes: a page
    /// stops at the server's byte budget, often before `count`.
    pub async fn history(
        &mut self,
        group: &str,
        after_seq: u64,
        count: u32,
    ) -> Result<Vec<Delivery>, Status> {
        let mut messages = Vec::new();
        self.history_each(group, after_seq, count, |d| messages.push(d))
            .await?;
        Ok(messages)
    }

    /// As [`Client::history`], but hands each message to `each` as its page
    /// arrives instead of gathering them, so that a reader of a long history
    /// holds one page at a time. Returns how many there were.
    pub async fn history_each(
        &mut self,
        group: &str,
        after_seq: u64,
        count: u32,
        mut each: impl FnMut(Delivery),
    ) -> Result<u32, Status> {
        let count = match count {
            0 => DEFAULT_HISTORY_PAGE,
            n => n,
        };
        let (mut after_seq, mut got) = (after_seq, 0);
        while got < count {
            let page = self
                .history_page(group, after_seq, (count - got).min(MAX_HISTORY_PAGE))
                .await?;
            // A page that says there is more always moves the cursor; an
            // empty one would be a server's error, not a reason to spin.
            let more = page.more && !page.messages.is_empty();
            for delivery in page.messages {
                after_seq = delivery.seq;
                got += 1;
                each(delivery);
            }
            if !more {
                break;
            }
        }
        Ok(got)
    }

    /// One page of history as the server sends it: at most `limit`
    /// messages, fewer when they reach its byte budget; `more` says whether
    /// messages follow the page's last one.
    pub async fn history_page(
        &mut self,
        group: &str,
        after_seq: u64,
        limit: u32,
    ) -> Result<HistoryReply, Status> {
        let request = self.request(HistoryRequest {
            group: group.into(),
            after_seq,
            limit,
        });
        Ok(self.api.history(request).await?.into_inner())
    }

    /// Replays what came after each cursor, then streams live events:
    /// deliveries, and the verdicts on this user's queued sends.
    pub async fn subscribe(&mut self, cursors: Vec<Cursor>) -> Result<Streaming<Event>, Status> {
        let request = self.request(SubscribeRequest { cursors });
        Ok(self.api.subscribe(request).await?.into_inner())
    }
}
