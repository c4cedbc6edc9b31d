//! Finds the service center to talk to: `--server`, or a region's entry in
//! local mode's `endpoints.json`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{CliError, Global};

/// The shape of `endpoints.json` that local mode writes.
#[derive(Deserialize)]
struct Endpoints {
    regions: BTreeMap<String, RegionEndpoints>,
}

#[derive(Deserialize)]
struct RegionEndpoints {
    client: String,
    peer: String,
}

/// The client URL to use; `home` is the user's home region, the default.
pub fn resolve(global: &Global, home: Option<&str>) -> Result<String, CliError> {
    if let Some(server) = &global.server {
        return Ok(server.clone());
    }
    region_endpoints(global, home).map(|r| r.client)
}

/// The roaming system's peer URL of `--region` (`--server` names it directly).
pub fn resolve_peer(global: &Global) -> Result<String, CliError> {
    if let Some(server) = &global.server {
        return Ok(server.clone());
    }
    region_endpoints(global, None).map(|r| r.peer)
}

fn region_endpoints(global: &Global, home: Option<&str>) -> Result<RegionEndpoints, CliError> {
    let Some(dir) = &global.state_dir else {
        return Err(CliError(
            "no server: pass --server URL, or --state-dir DIR (and --region CODE) of a local mode run".into(),
        ));
    };
    let region = global.region.as_deref().or(home).ok_or_else(|| {
        CliError("no region: pass --region CODE (or --user, whose home region is used)".into())
    })?;
    let path = dir.join("endpoints.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        CliError(format!(
            "cannot read {}: {e} (is local mode running?)",
            path.display()
        ))
    })?;
    let endpoints: Endpoints = serde_json::from_str(&text)
        .map_err(|e| CliError(format!("{} is malformed: {e}", path.display())))?;
    let mut endpoints = endpoints;
    endpoints.regions.remove(region).ok_or_else(|| {
        let known: Vec<&str> = endpoints.regions.keys().map(String::as_str).collect();
        CliError(format!(
            "region {region} is not in {} (regions: {})",
            path.display(),
            known.join(", ")
        ))
    })
}
