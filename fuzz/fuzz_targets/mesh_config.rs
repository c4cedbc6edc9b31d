//! The node's mesh configuration: `MeshConfig::from_yaml` on arbitrary text.
//! What it accepts must be valid and must survive its own round trip
//! through `to_yaml`, as the operator and local mode write it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_node::Error;
use meridian_node::mesh::MeshConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match MeshConfig::from_yaml(text) {
        Ok(config) => {
            config.validate().expect("a parsed configuration is valid");
            let written = config.to_yaml();
            let again = MeshConfig::from_yaml(&written)
                .unwrap_or_else(|e| panic!("its own YAML does not parse: {e}\n{written}"));
            assert_eq!(again, config, "round trip through\n{written}");
            for peer in &config.peers {
                assert_eq!(config.peer(&peer.region), Some(peer));
            }
        }
        Err(err) => assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}"),
    }
});
