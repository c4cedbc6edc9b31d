//! The `meridian-node` command line of a region's two processes, the one
//! source for both the operator's pod specs (`controller::build`) and local
//! mode's processes (`local`). They differ only in the values: addresses,
//! paths, and whether there is a probe port or a parent to exit with.

/// Where a region's identity is (`--tls-ca`, `--tls-cert`, `--tls-key`):
/// the mesh CA bundle, the region's certificate and its key.
#[derive(Clone, Debug)]
pub struct Identity {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

/// How the service center serves its client API.
#[derive(Clone, Debug)]
pub enum ClientTls {
    /// Plaintext.
    Off,
    /// TLS with the region's own certificate (`--client-tls`).
    RegionCertificate,
    /// TLS with a certificate of its own (`--client-tls-cert`, `--client-tls-key`).
    Files { cert: String, key: String },
}

/// What both processes are given.
#[derive(Clone, Debug)]
pub struct Common {
    /// The mesh configuration file (`--config`).
    pub config: String,
    pub identity: Identity,
    /// The plaintext port answering only the gRPC health check, for
    /// kubelet's probes (`--listen-probe`).
    pub listen_probe: Option<String>,
    /// Stop when the parent goes away (`--exit-with-parent`).
    pub exit_with_parent: bool,
}

/// Where the service center's data center is (docs/ARCHITECTURE.md §12).
#[derive(Clone, Debug)]
pub enum DataCenter {
    /// The SQLite file in this directory (`--data-dir`).
    Sqlite { data_dir: String },
    /// PostgreSQL, its connection string the whole content of `url_file`
    /// (`--postgres-url-file`); with `ca_file` (`--postgres-ca-file`) the
    /// connection requires TLS and verifies the server against that CA.
    /// `--data-dir` is then unused, so it is not given.
    Postgres {
        url_file: String,
        ca_file: Option<String>,
    },
}

/// The service center's own arguments.
#[derive(Clone, Debug)]
pub struct ServiceCenter {
    pub data_center: DataCenter,
    pub listen_client: String,
    pub listen_pair: String,
    /// Its /metrics (`--listen-metrics`), if served.
    pub listen_metrics: Option<String>,
    pub client_tls: ClientTls,
    /// The most live subscriptions it holds (`--max-subscriptions`, from
    /// `spec.serviceCenter.maxSubscriptions`); the node's own default
    /// (or its `MERIDIAN_MAX_SUBSCRIPTIONS`) when `None`.
    pub max_subscriptions: Option<i32>,
}

/// The roaming system's own arguments.
#[derive(Clone, Debug)]
pub struct Roaming {
    pub listen_pair: String,
    pub listen_peer: String,
    pub listen_metrics: String,
}

impl ServiceCenter {
    pub fn args(&self, common: &Common) -> Vec<String> {
        let mut args = strings(["--role", "service-center", "--config", &common.config]);
        match &self.data_center {
            DataCenter::Sqlite { data_dir } => args.extend(strings(["--data-dir", data_dir])),
            DataCenter::Postgres { url_file, ca_file } => {
                args.extend(strings(["--postgres-url-file", url_file]));
                if let Some(ca) = ca_file {
                    args.extend(strings(["--postgres-ca-file", ca]));
                }
            }
        }
        args.extend(strings([
            "--listen-client",
            &self.listen_client,
            "--listen-pair",
            &self.listen_pair,
        ]));
        if let Some(metrics) = &self.listen_metrics {
            args.extend(strings(["--listen-metrics", metrics]));
        }
        if let Some(max) = self.max_subscriptions {
            args.extend(["--max-subscriptions".to_owned(), max.to_string()]);
        }
        common.push(&mut args);
        match &self.client_tls {
            ClientTls::Off => {}
            ClientTls::RegionCertificate => args.push("--client-tls".into()),
            ClientTls::Files { cert, key } => {
                args.extend(strings([
                    "--client-tls-cert",
                    cert,
                    "--client-tls-key",
                    key,
                ]));
            }
        }
        common.push_exit(&mut args);
        args
    }
}

impl Roaming {
    pub fn args(&self, common: &Common) -> Vec<String> {
        let mut args = strings([
            "--role",
            "roaming",
            "--config",
            &common.config,
            "--listen-roaming-pair",
            &self.listen_pair,
            "--listen-peer",
            &self.listen_peer,
            "--listen-metrics",
            &self.listen_metrics,
        ]);
        common.push(&mut args);
        common.push_exit(&mut args);
        args
    }
}

impl Common {
    /// The identity and the probe port.
    fn push(&self, args: &mut Vec<String>) {
        let Identity { ca, cert, key } = &self.identity;
        args.extend(strings([
            "--tls-ca",
            ca,
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ]));
        if let Some(probe) = &self.listen_probe {
            args.extend(strings(["--listen-probe", probe]));
        }
    }

    fn push_exit(&self, args: &mut Vec<String>) {
        if self.exit_with_parent {
            args.push("--exit-with-parent".into());
        }
    }
}

fn strings<const N: usize>(words: [&str; N]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(probe: Option<&str>, exit_with_parent: bool) -> Common {
        Common {
            config: "/c/mesh.yaml".into(),
            identity: Identity {
                ca: "/t/ca.crt".into(),
                cert: "/t/tls.crt".into(),
                key: "/t/tls.key".into(),
            },
            listen_probe: probe.map(Into::into),
            exit_with_parent,
        }
    }

    #[test]
    fn a_pod_and_a_local_process_get_the_same_flags_with_their_own_values() {
        let sc = ServiceCenter {
            data_center: DataCenter::Sqlite {
                data_dir: "/d".into(),
            },
            listen_client: "0.0.0.0:7400".into(),
            listen_pair: "0.0.0.0:7401".into(),
            listen_metrics: Some("0.0.0.0:9090".into()),
            client_tls: ClientTls::Files {
                cert: "/ct/tls.crt".into(),
                key: "/ct/tls.key".into(),
            },
            max_subscriptions: Some(2500),
        };
        assert_eq!(
            sc.args(&common(Some("0.0.0.0:7404"), false)).join(" "),
            "--role service-center --config /c/mesh.yaml --data-dir /d \
             --listen-client 0.0.0.0:7400 --listen-pair 0.0.0.0:7401 \
             --listen-metrics 0.0.0.0:9090 --max-subscriptions 2500 \
             --tls-ca /t/ca.crt --tls-cert /t/tls.crt --tls-key /t/tls.key \
             --listen-probe 0.0.0.0:7404 \
             --client-tls-cert /ct/tls.crt --client-tls-key /ct/tls.key"
        );
        let local = ServiceCenter {
            listen_metrics: None,
            client_tls: ClientTls::RegionCertificate,
            max_subscriptions: None,
            ..sc.clone()
        };
        assert_eq!(
            local.args(&common(None, true)).join(" "),
            "--role service-center --config /c/mesh.yaml --data-dir /d \
             --listen-client 0.0.0.0:7400 --listen-pair 0.0.0.0:7401 \
             --tls-ca /t/ca.crt --tls-cert /t/tls.crt --tls-key /t/tls.key \
             --client-tls --exit-with-parent"
        );

        let postgres = ServiceCenter {
            data_center: DataCenter::Postgres {
                url_file: "/p/url".into(),
                ca_file: Some("/pc/ca.crt".into()),
            },
            client_tls: ClientTls::Off,
            max_subscriptions: None,
            ..sc
        };
        assert_eq!(
            postgres
                .args(&common(Some("0.0.0.0:7404"), false))
                .join(" "),
            "--role service-center --config /c/mesh.yaml \
             --postgres-url-file /p/url --postgres-ca-file /pc/ca.crt \
             --listen-client 0.0.0.0:7400 --listen-pair 0.0.0.0:7401 \
             --listen-metrics 0.0.0.0:9090 \
             --tls-ca /t/ca.crt --tls-cert /t/tls.crt --tls-key /t/tls.key \
             --listen-probe 0.0.0.0:7404",
            "PostgreSQL instead of --data-dir, which it does not use"
        );
        let without_ca = ServiceCenter {
            data_center: DataCenter::Postgres {
                url_file: "/p/url".into(),
                ca_file: None,
            },
            ..postgres
        };
        let args = without_ca.args(&common(None, false)).join(" ");
        assert!(
            args.contains("--postgres-url-file /p/url --listen-client"),
            "{args}"
        );
        assert!(
            !args.contains("--postgres-ca-file") && !args.contains("--data-dir"),
            "{args}"
        );

        let roaming = Roaming {
            listen_pair: "0.0.0.0:7402".into(),
            listen_peer: "0.0.0.0:7443".into(),
            listen_metrics: "0.0.0.0:9090".into(),
        };
        assert_eq!(
            roaming.args(&common(Some("0.0.0.0:7404"), false)).join(" "),
            "--role roaming --config /c/mesh.yaml --listen-roaming-pair 0.0.0.0:7402 \
             --listen-peer 0.0.0.0:7443 --listen-metrics 0.0.0.0:9090 \
             --tls-ca /t/ca.crt --tls-cert /t/tls.crt --tls-key /t/tls.key \
             --listen-probe 0.0.0.0:7404"
        );
    }
}
