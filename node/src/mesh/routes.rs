//! Where traffic for a region goes next: this region, the direct link, or
//! the first hop of a detour through other regions.

use std::collections::BTreeMap;

use super::MeshConfig;
use super::topology::Path;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// The destination is this region.
    Local,
    /// Send it to `next_hop`'s roaming system at `endpoint`; when that is not
    /// the destination, the traffic takes a detour.
    Next { next_hop: String, endpoint: String },
    /// No usable path leads there now.
    Unreachable,
}

/// The next hop from this region towards `destination`, given the routes
/// computed from the link state.
pub fn next_hop(config: &MeshConfig, routes: &BTreeMap<String, Path>, destination: &str) -> Route {
    if destination == config.region {
        return Route::Local;
    }
    let Some(path) = routes.get(destination) else {
        return Route::Unreachable;
    };
    match config.peer(path.next_hop()) {
        Some(peer) => Route::Next {
            next_hop: peer.region.clone(),
            endpoint: peer.endpoint.clone(),
        },
        None => Route::Unreachable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_to_self_along_paths_and_nowhere_else() {
        let config = MeshConfig::from_yaml(
            "region: eu
serviceCenter: {pair: 'http://a'}
roaming: {pair: 'http://b'}
peers:
  - {region: us, endpoint: 'http://us'}
  - {region: ap, endpoint: 'http://ap'}",
        )
        .unwrap();
        let routes = BTreeMap::from([
            (
                "us".to_owned(),
                Path {
                    hops: vec!["ap".into(), "us".into()],
                    cost: 2,
                },
            ),
            (
                "ap".to_owned(),
                Path {
                    hops: vec!["ap".into()],
                    cost: 1,
                },
            ),
            (
                "sa".to_owned(),
                Path {
                    hops: vec!["gone".into(), "sa".into()],
                    cost: 2,
                },
            ),
        ]);
        assert_eq!(next_hop(&config, &routes, "eu"), Route::Local);
        let via_ap = Route::Next {
            next_hop: "ap".into(),
            endpoint: "http://ap".into(),
        };
        assert_eq!(next_hop(&config, &routes, "us"), via_ap);
        assert_eq!(next_hop(&config, &routes, "ap"), via_ap);
        assert_eq!(
            next_hop(&config, &routes, "sa"),
            Route::Unreachable,
            "the next hop is not a peer"
        );
        assert_eq!(next_hop(&config, &routes, "zz"), Route::Unreachable);
    }
}
