//! Routes over the mesh: which roaming system a request for a region goes to
//! next.

use super::MeshConfig;

/// Where to send traffic for a destination region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// The destination is this region.
    Local,
    /// Send it over the direct link to the destination's roaming system.
    Direct { endpoint: String },
    /// No usable link leads there now.
    Unreachable,
}

/// The next hop from this region towards `destination`.
pub fn next_hop(config: &MeshConfig, destination: &str) -> Route {
    if destination == config.region {
        return Route::Local;
    }
    match config.peer(destination) {
        Some(peer) if peer.enabled => Route::Direct {
            endpoint: peer.endpoint.clone(),
        },
        _ => Route::Unreachable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_to_self_to_enabled_peers_and_nowhere_else() {
        let config = MeshConfig::from_yaml(
            "region: eu
serviceCenter: {pair: 'http://a'}
roaming: {pair: 'http://b'}
peers:
  - {region: us, endpoint: 'http://us'}
  - {region: ap, endpoint: 'http://ap', enabled: false}",
        )
        .unwrap();
        assert_eq!(next_hop(&config, "eu"), Route::Local);
        assert_eq!(
            next_hop(&config, "us"),
            Route::Direct {
                endpoint: "http://us".into()
            }
        );
        assert_eq!(next_hop(&config, "ap"), Route::Unreachable);
        assert_eq!(next_hop(&config, "sa"), Route::Unreachable);
    }
}
