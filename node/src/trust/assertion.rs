//! User assertions (docs/ARCHITECTURE.md §8): when a user logs in at a
//! region other than their home, the home checks the password and signs an
//! expiring statement that the user is logged in there. Whatever that
//! region then does for the user at a third region carries it, and the
//! receiving home checks it, so a region can act only for the users who
//! logged in through it (or whose home it is).

use super::credentials::Loaded;
use super::verify::Verifier;
use crate::Error;
use crate::ids::Id;
use crate::proto::peer_api::{Signature, UserAssertion};

fn signed_bytes(user: &str, region: &str, expires_at_ms: i64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(64);
    for part in ["meridian.peer.v1.UserAssertion", user, region] {
        bytes.extend_from_slice(part.as_bytes());
        bytes.push(0);
    }
    bytes.extend_from_slice(&expires_at_ms.to_be_bytes());
    bytes
}

/// At `user`'s home: vouches that `user` is logged in at `region` until
/// `expires_at_ms`.
pub fn issue(
    user: &Id,
    region: &str,
    expires_at_ms: i64,
    credentials: &Loaded,
) -> Result<UserAssertion, Error> {
    let bytes = signed_bytes(user.as_str(), region, expires_at_ms);
    Ok(UserAssertion {
        user: user.to_string(),
        region: region.to_owned(),
        expires_at_ms,
        signature: Some(Signature {
            certificate: credentials.certificate().to_vec(),
            signature: super::verify::sign(&credentials.signer, &bytes)?,
            signed_at_ms: crate::now_ms(),
        }),
    })
}

/// Whether region `source` may act for `user` at `at_ms`: it is the user's
/// home, or it carries the home's assertion that the user logged in at
/// `source`, valid at `at_ms`.
pub fn check(
    user: &Id,
    source: &str,
    assertion: Option<&UserAssertion>,
    at_ms: i64,
    verifier: &Verifier,
) -> Result<(), Error> {
    if user.home() == source {
        return Ok(());
    }
    let denied = |why: &str| {
        Error::PermissionDenied(format!(
            "region {source} may not act for {user}: {why}; log in again"
        ))
    };
    let assertion =
        assertion.ok_or_else(|| denied("it holds no assertion from the user's home"))?;
    if assertion.user != user.as_str() || assertion.region != source {
        return Err(denied("the assertion is for another user or region"));
    }
    if assertion.expires_at_ms <= at_ms {
        return Err(denied("the assertion has expired"));
    }
    let signature = assertion
        .signature
        .as_ref()
        .ok_or_else(|| denied("the assertion is not signed"))?;
    let bytes = signed_bytes(&assertion.user, &assertion.region, assertion.expires_at_ms);
    verifier
        .signed_by(
            user.home(),
            &signature.certificate,
            &bytes,
            &signature.signature,
        )
        .map_err(|e| denied(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::pki::{DEFAULT_LIFETIME, MeshCa};

    #[test]
    fn only_the_users_home_vouches_and_only_for_the_region_named() {
        let ca = MeshCa::generate("test").unwrap();
        let creds = |region: &str| {
            ca.issue_region(region, "test", &[], DEFAULT_LIFETIME)
                .and_then(|c| c.credentials(&ca.cert_pem))
                .unwrap()
        };
        let (eu, us) = (creds("eu"), creds("us"));
        let verifier = Verifier::new(creds("ap"));
        let cat = Id::parse("user", "cat@us").unwrap();
        let now = crate::now_ms();
        let good = issue(&cat, "eu", now + 60_000, &us.current()).unwrap();

        assert!(
            check(&cat, "us", None, now, &verifier).is_ok(),
            "the home itself"
        );
        assert!(check(&cat, "eu", Some(&good), now, &verifier).is_ok());
        assert!(
            check(&cat, "eu", None, now, &verifier).is_err(),
            "no assertion"
        );
        assert!(
            check(&cat, "ap", Some(&good), now, &verifier).is_err(),
            "another region's assertion"
        );
        assert!(
            check(&cat, "eu", Some(&good), now + 60_000, &verifier).is_err(),
            "expired"
        );
        let forged = issue(&cat, "eu", now + 60_000, &eu.current()).unwrap();
        assert!(
            check(&cat, "eu", Some(&forged), now, &verifier).is_err(),
            "signed by the region itself, not the home"
        );
        let mut stretched = good.clone();
        stretched.expires_at_ms += 1;
        assert!(check(&cat, "eu", Some(&stretched), now, &verifier).is_err());
    }
}
