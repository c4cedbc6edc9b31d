//! The mesh configuration of one region, built from the Regions and
//! RegionLinks of its namespace: the region itself, its pair's endpoints, and
//! every other Region as a peer with the properties of the link to it.
//! Pure: local mode and the controller differ only in the endpoints.

use meridian_crds::{Region, RegionLink};
use meridian_node::mesh::MeshConfig;
use meridian_node::mesh::config::{PairEndpoint, Peer};

/// Where a region's two halves reach each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairEndpoints {
    pub service_center: String,
    pub roaming: String,
}

/// The configuration for `own`, whose pair is reached at `pair`; `peer_endpoint`
/// gives the peer API address of another region, or `None` to leave it out.
pub fn mesh_config(
    own: &str,
    pair: PairEndpoints,
    regions: &[Region],
    links: &[RegionLink],
    peer_endpoint: impl Fn(&Region) -> Option<String>,
) -> MeshConfig {
    let mut peers: Vec<Peer> = regions
        .iter()
        .filter_map(|region| {
            let code = region.metadata.name.as_deref()?;
            if code == own {
                return None;
            }
            let endpoint = peer_endpoint(region)?;
            let link = link_between(links, own, code);
            Some(Peer {
                region: code.to_owned(),
                endpoint,
                enabled: link.is_none_or(|l| l.spec.enabled),
                cost: link.and_then(|l| l.spec.cost),
            })
        })
        .collect();
    peers.sort_by(|a, b| a.region.cmp(&b.region));
    MeshConfig {
        region: own.to_owned(),
        service_center: PairEndpoint::single(pair.service_center),
        roaming: PairEndpoint::single(pair.roaming),
        peers,
    }
}

/// The RegionLink that sets the properties of the link between `a` and `b`.
pub fn link_between<'a>(links: &'a [RegionLink], a: &str, b: &str) -> Option<&'a RegionLink> {
    let want = if a <= b { (a, b) } else { (b, a) };
    links.iter().find(|l| l.spec.pair() == Some(want))
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_crds::manifest;
    use std::path::PathBuf;

    const MANIFESTS: &str = "
apiVersion: meridian.dev/v1alpha1
kind: Region
metadata: {name: eu, namespace: chat}
spec: {cluster: a}
---
apiVersion: meridian.dev/v1alpha1
kind: Region
metadata: {name: us, namespace: chat}
spec: {cluster: a}
---
apiVersion: meridian.dev/v1alpha1
kind: Region
metadata: {name: ap, namespace: chat}
spec: {cluster: b, peerEndpoint: 'roaming.ap.example.net:7443'}
---
apiVersion: meridian.dev/v1alpha1
kind: RegionLink
metadata: {name: us-eu, namespace: chat}
spec: {regions: [us, eu], enabled: false, cost: 7}
";

    #[test]
    fn every_other_region_is_a_peer_with_its_link_properties() {
        let m = manifest::parse(&[(PathBuf::from("m.yaml"), MANIFESTS.to_owned())]).unwrap();
        let pair = PairEndpoints {
            service_center: "http://sc".into(),
            roaming: "http://r".into(),
        };
        let config = mesh_config("eu", pair, &m.regions, &m.links, |r| {
            Some(format!("http://{}", r.metadata.name.as_deref().unwrap()))
        });
        assert_eq!(config.region, "eu");
        assert_eq!(config.service_center.pair, "http://sc");
        let peers: Vec<(&str, bool, Option<u32>)> = config
            .peers
            .iter()
            .map(|p| (p.region.as_str(), p.enabled, p.cost))
            .collect();
        assert_eq!(peers, vec![("ap", true, None), ("us", false, Some(7))]);
        assert!(config.validate().is_ok());
    }
}
