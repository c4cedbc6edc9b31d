//! The service-center replicas a command may talk to, and moving from one
//! that fails to the next. A region may run several replicas on one shared
//! data center (docs/ARCHITECTURE.md §12); local mode lists them all in
//! `endpoints.json`. A session is good at every replica of its region, so a
//! client moves with its session and refresh token.

use std::sync::Arc;

use tonic::{Code, Status};

use super::CliError;
use crate::client::Client;

/// The client URLs of one region's replicas (or the one `--server`), and
/// which of them the command is on.
pub struct Servers {
    urls: Vec<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
    current: usize,
}

impl Servers {
    pub fn new(urls: Vec<String>, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        Self {
            urls,
            tls,
            current: 0,
        }
    }

    /// How many replicas there are.
    pub fn count(&self) -> usize {
        self.urls.len()
    }

    /// A client of the first replica that accepts a connection, trying
    /// each once in order.
    pub async fn connect(&mut self) -> Result<Client, CliError> {
        self.connect_from(0, None).await
    }

    /// A client of the next replica that accepts a connection, after the
    /// current one (which is tried last: it may have been restarted), with
    /// the session and refresh token of `client`.
    pub async fn reconnect(&mut self, client: &Client) -> Result<Client, CliError> {
        self.connect_from(self.current + 1, Some(client)).await
    }

    async fn connect_from(
        &mut self,
        start: usize,
        like: Option<&Client>,
    ) -> Result<Client, CliError> {
        let count = self.urls.len();
        let mut failures = Vec::new();
        for i in (0..count).map(|i| (start + i) % count) {
            let url = &self.urls[i];
            let connected = match like {
                Some(client) => client.connect_as(url, self.tls.clone()).await,
                None => Client::connect(url, self.tls.clone()).await,
            };
            match connected {
                Ok(client) => {
                    self.current = i;
                    return Ok(client);
                }
                Err(err) => failures.push(format!("{url}: {}", describe(&err))),
            }
        }
        Err(CliError(format!(
            "cannot reach the service center at {}",
            failures.join("; ")
        )))
    }
}

/// A transport error with its causes, as "refused" alone says little.
fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = cause.source();
    }
    text
}

/// Whether a failed call or stream says the connection to the replica is
/// gone rather than that the request was refused: the server said it is
/// unavailable, or the status did not come from the server at all (the
/// transport made it: a reset connection, a killed process). A command
/// moves to another replica then; anything else is the answer.
pub fn is_broken(status: &Status) -> bool {
    status.code() == Code::Unavailable || std::error::Error::source(status).is_some()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_stream::StreamExt;
    use tonic_health::ServingStatus;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    use super::*;

    /// A port that refuses connections.
    fn dead_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        format!("http://127.0.0.1:{port}")
    }

    /// A live server (the health service) on a runtime of its own, until
    /// the sender is dropped: then the runtime goes, and with it every
    /// connection, as when a process is killed.
    fn live() -> (String, std::sync::mpsc::Sender<()>) {
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            runtime.spawn(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let url = format!("http://{}", listener.local_addr().unwrap());
                let (reporter, health) = tonic_health::server::health_reporter();
                reporter
                    .set_service_status("probe", ServingStatus::Serving)
                    .await;
                url_tx.send(url).unwrap();
                let _keep = reporter;
                let _ = tonic::transport::Server::builder()
                    .add_service(health)
                    .serve_with_incoming(crate::transport::plain_incoming(listener))
                    .await;
            });
            let _ = stopped.recv();
            runtime.shutdown_background();
        });
        (url_rx.recv().unwrap(), stop)
    }

    #[tokio::test]
    async fn a_refused_replica_is_passed_over_and_a_move_starts_after_the_current() {
        let (live_url, _server) = live();
        let dead = dead_url();
        let mut servers = Servers::new(vec![dead.clone(), live_url.clone()], None);
        let client = servers.connect().await.expect("the live one");
        assert_eq!(servers.current, 1);
        servers
            .reconnect(&client)
            .await
            .expect("the live one again");
        assert_eq!(servers.current, 1, "the dead one is passed over");

        let mut none = Servers::new(vec![dead.clone(), dead_url()], None);
        let err = none.connect().await.err().expect("nothing answers").0;
        assert!(err.contains(&dead), "{err}");
    }

    #[tokio::test]
    async fn a_stream_whose_server_goes_away_is_broken_and_a_refusal_is_not() {
        let (url, server) = live();
        let channel = tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = HealthClient::new(channel);
        let refused = health
            .check(HealthCheckRequest {
                service: "unknown".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::NotFound);
        assert!(!is_broken(&refused), "the server's answer: {refused:?}");

        let mut stream = health
            .watch(HealthCheckRequest {
                service: "probe".into(),
            })
            .await
            .unwrap()
            .into_inner();
        stream.next().await.unwrap().expect("the first status");
        // As a killed process: its connections close with nothing said.
        drop(server);
        let ended = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the stream ends once its server is gone");
        // tonic makes it `Unknown` ("error reading a body from
        // connection"), with the transport's error as its source.
        match ended {
            Some(Err(status)) => assert!(is_broken(&status), "{status:?}"),
            other => panic!("the stream fails: {other:?}"),
        }
    }
}
