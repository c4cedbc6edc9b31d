//! Whether the regions local mode runs reach each other. A region serves
//! (`readiness`) before its roaming system has its links up: a link is Up
//! after three answered heartbeats (README, "When links break"), so a
//! cross-region call made at once could find the peer unreachable. Local
//! mode's readiness therefore also waits, with a deadline, until every
//! region's roaming system reports each enabled link to every other
//! running region `Up`, as `meridian mesh status` shows it.
//!
//! A link that is still not Up at the deadline is reported, and local mode
//! carries on: each region serves its own users whatever its links do
//! (docs/ARCHITECTURE.md §4, local first), and a link that comes up later
//! is used at once, so stopping every region for one link would only take
//! away what works.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use meridian_node::proto::peer_api::{LinkCondition, MeshStatusReply};

/// How long local mode waits for the links after every region serves. A
/// link needs about 1.5 s (three heartbeats 500 ms apart) once both ends
/// run; this leaves room for a loaded machine.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// How often the roaming systems are asked while waiting.
const POLL: Duration = Duration::from_millis(100);

/// A link that is not Up yet, as its first region sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotUp {
    /// The region whose roaming system was asked.
    pub from: String,
    /// The peer region.
    pub to: String,
    /// What `from` reported instead of Up.
    pub seen: String,
}

impl fmt::Display for NotUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}→{}: {}", self.from, self.to, self.seen)
    }
}

/// The links of region `from` to each of `peers` that are not Up in its
/// roaming system's `status` (or all of them, with why, if it did not
/// answer). A link the configuration disables (a RegionLink with
/// `enabled: false`) is down on purpose and is not waited for.
pub fn not_up(
    from: &str,
    status: Result<&MeshStatusReply, String>,
    peers: &[String],
) -> Vec<NotUp> {
    let not_up = |to: &str, seen: String| NotUp {
        from: from.to_owned(),
        to: to.to_owned(),
        seen,
    };
    let status = match status {
        Ok(status) => status,
        Err(err) => {
            return peers
                .iter()
                .map(|to| not_up(to, format!("its roaming system did not answer: {err}")))
                .collect();
        }
    };
    let mut out = Vec::new();
    for to in peers.iter().filter(|p| *p != from) {
        let Some(link) = status.links.iter().find(|l| l.peer == *to) else {
            out.push(not_up(to, "not in its mesh configuration yet".to_owned()));
            continue;
        };
        if !link.enabled {
            continue;
        }
        let seen = match LinkCondition::try_from(link.condition) {
            Ok(LinkCondition::Up) => continue,
            Ok(LinkCondition::Detoured) => format!("Detoured ({})", link.path.join("→")),
            Ok(LinkCondition::Down) => "Down".to_owned(),
            Ok(LinkCondition::Unspecified) | Err(_) => "unknown".to_owned(),
        };
        out.push(not_up(to, seen));
    }
    out
}

/// Asks `probe` (every region's links that are not Up) until it finds none
/// or `deadline` has passed; returns what the last answer found.
pub async fn wait<F, Fut>(deadline: Duration, mut probe: F) -> Vec<NotUp>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Vec<NotUp>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let left = probe().await;
        if left.is_empty() || tokio::time::Instant::now() >= until {
            return left;
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use meridian_node::proto::peer_api::LinkStatus;

    use super::*;

    fn link(peer: &str, condition: LinkCondition, enabled: bool, path: &[&str]) -> LinkStatus {
        LinkStatus {
            peer: peer.into(),
            condition: condition.into(),
            path: path.iter().map(|p| (*p).to_owned()).collect(),
            enabled,
            ..Default::default()
        }
    }

    fn peers(codes: &[&str]) -> Vec<String> {
        codes.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn every_enabled_link_to_a_running_peer_must_be_up() {
        let status = MeshStatusReply {
            region: "eu".into(),
            links: vec![
                link("us", LinkCondition::Up, true, &["eu", "us"]),
                link("ap", LinkCondition::Detoured, true, &["eu", "us", "ap"]),
                link("sa", LinkCondition::Down, true, &[]),
                link("af", LinkCondition::Unspecified, true, &[]),
                // Disabled by the manifest: down on purpose.
                link("in", LinkCondition::Down, false, &[]),
                // Not running (yet): not asked about.
                link("jp", LinkCondition::Down, true, &[]),
            ],
        };
        let running = peers(&["eu", "us", "ap", "sa", "af", "in", "oc"]);
        let seen: Vec<String> = not_up("eu", Ok(&status), &running)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            seen,
            [
                "eu→ap: Detoured (eu→us→ap)",
                "eu→sa: Down",
                "eu→af: unknown",
                "eu→oc: not in its mesh configuration yet",
            ]
        );

        let all_up = MeshStatusReply {
            region: "eu".into(),
            links: vec![link("us", LinkCondition::Up, true, &["eu", "us"])],
        };
        assert_eq!(not_up("eu", Ok(&all_up), &peers(&["eu", "us"])), vec![]);
        assert_eq!(not_up("eu", Ok(&all_up), &peers(&["eu"])), vec![]);

        let silent = not_up("eu", Err("refused".into()), &peers(&["us"]));
        assert_eq!(
            silent[0].to_string(),
            "eu→us: its roaming system did not answer: refused"
        );
    }

    fn pending() -> Vec<NotUp> {
        vec![NotUp {
            from: "eu".into(),
            to: "us".into(),
            seen: "Down".into(),
        }]
    }

    #[tokio::test]
    async fn waiting_ends_once_every_link_is_up() {
        let mut asked = 0;
        let left = wait(Duration::from_secs(30), || {
            asked += 1;
            let left = if asked < 4 { pending() } else { vec![] };
            async move { left }
        })
        .await;
        assert_eq!((left, asked), (vec![], 4));
    }

    #[tokio::test]
    async fn a_link_that_stays_down_is_reported_at_the_deadline() {
        let started = Instant::now();
        let deadline = Duration::from_millis(400);
        let mut asked = 0;
        let left = wait(deadline, || {
            asked += 1;
            async { pending() }
        })
        .await;
        assert_eq!(left, pending());
        assert!(started.elapsed() >= deadline, "{:?}", started.elapsed());
        assert!(asked >= 2, "asked again while waiting: {asked}");
    }
}
