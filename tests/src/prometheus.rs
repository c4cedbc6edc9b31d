//! Reads a node's `/metrics` over HTTP and parses the text format, so tests
//! can check counts by name and labels.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One sample: its name, labels and value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample of one scrape.
#[derive(Clone, Debug)]
pub struct Samples(pub Vec<Sample>);

impl Samples {
    /// The sum of the samples named `name` that carry every label of
    /// `labels` (0 when none does).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// Whether any sample named `name` carries every label of `labels`.
    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.matching(name, labels).next().is_some()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> {
        self.0.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }
}

/// `GET /metrics` at `addr`; the body must be the OpenMetrics text format.
pub async fn scrape(addr: SocketAddr) -> Samples {
    let (content_type, body) = get(addr, "/metrics").await;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "/metrics answered with Content-Type {content_type:?}"
    );
    parse(&body)
}

/// A plain HTTP/1.1 GET on loopback: the Content-Type and the body.
pub async fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the metrics port");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read the response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("an HTTP response with a body");
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        })
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    (content_type, body.to_owned())
}

/// The sample names the metric families of a scrape declare (its `# TYPE`
/// lines), whether or not they have samples yet: a counter `x` names
/// `x_total`, a histogram `x_bucket`, `x_sum` and `x_count`, anything else
/// `x` itself.
pub fn declared(text: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (family, kind) = rest.split_once(' ').expect("`# TYPE name type`");
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        for suffix in suffixes {
            names.insert(format!("{family}{suffix}"), kind.to_owned());
        }
    }
    names
}

/// Parses the samples of the Prometheus/OpenMetrics text format.
pub fn parse(text: &str) -> Samples {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, labels(rest.strip_suffix('}').expect("closing brace"))),
            None => (series, BTreeMap::new()),
        };
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Samples(samples)
}

/// `k="v",k2="v2"`, with `\"` and `\\` escapes in the values.
fn labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.extend(chars.next().map(|(_, c)| if c == 'n' { '\n' } else { c })),
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_owned(), value);
        rest = &after[end..];
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_found_by_name_and_labels() {
        let samples = parse(
            "# TYPE meridian_sends counter\n\
             meridian_sends_total{result=\"accepted\",region=\"eu\"} 3\n\
             meridian_link_path_info{peer=\"us\",path=\"eu→ap→us\",region=\"eu\"} 1\n\
             meridian_odd{v=\"a \\\"q\\\", b\"} 2.5\n\
             meridian_plain 7\n# EOF\n",
        );
        assert_eq!(
            samples.value("meridian_sends_total", &[("result", "accepted")]),
            3.0
        );
        assert_eq!(
            samples.value("meridian_sends_total", &[("result", "duplicate")]),
            0.0
        );
        assert!(samples.has("meridian_link_path_info", &[("path", "eu→ap→us")]));
        assert_eq!(samples.value("meridian_odd", &[("v", "a \"q\", b")]), 2.5);
        assert_eq!(samples.value("meridian_plain", &[]), 7.0);
    }
}
