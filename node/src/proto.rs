//! The generated gRPC code, committed under `src/gen/` and checked against
//! `proto/` by `tests/bootstrap.rs`.
#![allow(clippy::all, missing_docs)]

pub mod client {
    pub mod v1 {
        include!("gen/meridian.client.v1.rs");
    }
}

pub mod pair {
    pub mod v1 {
        include!("gen/meridian.pair.v1.rs");
    }
}

pub mod peer {
    pub mod v1 {
        include!("gen/meridian.peer.v1.rs");
    }
}

pub use client::v1 as client_api;
pub use pair::v1 as pair_api;
pub use peer::v1 as peer_api;
