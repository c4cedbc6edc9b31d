//! Trust between the processes of the mesh (docs/ARCHITECTURE.md §8):
//! every region has an X.509 identity from the mesh CA ([`pki`]), every pair
//! and peer port speaks mutual TLS ([`tls`], accepted by [`accept`]), and what a region says through
//! other regions carries its origin signature ([`origin`], checked by
//! [`verify`]).

pub mod accept;
pub mod assertion;
pub mod credentials;
pub mod origin;
pub mod pki;
pub mod server_cert;
pub mod tls;
pub mod verify;

pub use credentials::{CredentialFiles, Credentials};
pub use pki::Identity;
pub use verify::Verifier;
