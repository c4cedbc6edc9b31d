//! Finds the service center to talk to: `--server`, or a region's entry in
//! local mode's `endpoints.json`; and the TLS material to talk with: `--ca`
//! (and `--cert`/`--key` for `mesh status`), or the files `endpoints.json`
//! names.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use super::{CliError, Global};
use crate::trust::{CredentialFiles, Credentials};

/// The shape of `endpoints.json` that local mode writes.
#[derive(Deserialize)]
struct Endpoints {
    regions: BTreeMap<String, RegionEndpoints>,
    /// The mesh CA, which every server's certificate comes from.
    #[serde(default)]
    ca: Option<PathBuf>,
    /// A tool certificate that may read `mesh status`.
    #[serde(default)]
    admin: Option<AdminFiles>,
}

#[derive(Deserialize)]
struct AdminFiles {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Deserialize)]
struct RegionEndpoints {
    /// The first service-center replica's client URL.
    client: String,
    /// Every replica's client URL, `client` first; absent in files from
    /// before regions had several replicas.
    #[serde(default)]
    clients: Vec<String>,
    peer: String,
}

/// The client URLs to use, in the order to try them: `--server`, or every
/// service-center replica of the region (`home` is the user's home region,
/// the default).
pub fn resolve(global: &Global, home: Option<&str>) -> Result<Vec<String>, CliError> {
    if let Some(server) = &global.server {
        return Ok(vec![server.clone()]);
    }
    let region = region_endpoints(global, home)?;
    if region.clients.is_empty() {
        Ok(vec![region.client])
    } else {
        Ok(region.clients)
    }
}

/// The roaming system's peer URL of `--region` (`--server` names it directly).
pub fn resolve_peer(global: &Global) -> Result<String, CliError> {
    if let Some(server) = &global.server {
        return Ok(server.clone());
    }
    region_endpoints(global, None).map(|r| r.peer)
}

/// The CA to verify `https://` servers with: `--ca`, else local mode's.
pub fn tls(global: &Global) -> Result<Option<Arc<rustls::ClientConfig>>, CliError> {
    let ca = match &global.ca {
        Some(ca) => Some(ca.clone()),
        None if global.state_dir.is_some() => read(global)?.ca,
        None => None,
    };
    let Some(ca) = ca else {
        return Ok(None);
    };
    let pem = std::fs::read_to_string(&ca)
        .map_err(|e| CliError(format!("cannot read the CA file {}: {e}", ca.display())))?;
    crate::trust::tls::ca_only_client(&pem)
        .map(Some)
        .map_err(|e| CliError(format!("{}: {e}", ca.display())))
}

/// The tool credentials for the mesh ports: `--tool-cert`, `--tool-key` and
/// `--ca`, else local mode's.
pub fn tool_credentials(global: &Global) -> Result<Arc<Credentials>, CliError> {
    let files = match (&global.tool_cert, &global.tool_key, &global.ca) {
        (Some(cert), Some(key), Some(ca)) => CredentialFiles {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => {
            let endpoints = read(global)?;
            match (endpoints.ca, endpoints.admin) {
                (Some(ca), Some(admin)) => CredentialFiles {
                    ca,
                    cert: admin.cert,
                    key: admin.key,
                },
                _ => {
                    return Err(CliError(
                        "no tool certificate: pass --tool-cert, --tool-key and --ca".into(),
                    ));
                }
            }
        }
    };
    Credentials::load(files).map_err(|e| CliError(e.to_string()))
}

fn read(global: &Global) -> Result<Endpoints, CliError> {
    let Some(dir) = &global.state_dir else {
        return Err(CliError(
            "no server: pass --server URL, or --state-dir DIR (and --region CODE) of a local mode run".into(),
        ));
    };
    let path = dir.join("endpoints.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        CliError(format!(
            "cannot read {}: {e} (is local mode running?)",
            path.display()
        ))
    })?;
    serde_json::from_str(&text)
        .map_err(|e| CliError(format!("{} is malformed: {e}", path.display())))
}

fn region_endpoints(global: &Global, home: Option<&str>) -> Result<RegionEndpoints, CliError> {
    let mut endpoints = read(global)?;
    let region = global.region.as_deref().or(home).ok_or_else(|| {
        CliError("no region: pass --region CODE (or --user, whose home region is used)".into())
    })?;
    let path = global
        .state_dir
        .as_ref()
        .map(|d| d.join("endpoints.json"))
        .unwrap_or_default();
    endpoints.regions.remove(region).ok_or_else(|| {
        let known: Vec<&str> = endpoints.regions.keys().map(String::as_str).collect();
        CliError(format!(
            "region {region} is not in {} (regions: {})",
            path.display(),
            known.join(", ")
        ))
    })
}
