//! Origin signatures: what a region says through other regions is signed
//! with its key, so relays can neither forge nor alter it.
//!
//! The signed bytes are a label naming the kind of message, then its fields
//! in their protobuf encoding (which prost writes deterministically: fields
//! in tag order, no maps). The parts that relays change (`hops_left`,
//! `path`) and the signature itself are left out.

use prost::Message;

use super::credentials::Loaded;
use super::verify::Verifier;
use crate::Error;
use crate::mesh::topology::{MAX_AGE_MICROS, MAX_AHEAD_MICROS};
use crate::proto::peer_api::{
    CarryOrder, DataRequest, Envelope, Item, LinkState, Signature, data_request,
};

/// A signature older or further in the future than this is refused, which
/// bounds how long a captured request can be replayed.
pub const MAX_SKEW_MS: i64 = 5 * 60 * 1000;

fn refused(what: impl std::fmt::Display) -> Error {
    Error::Unauthenticated(what.to_string())
}

/// The request fields an envelope's signature covers.
pub enum Payload<'a> {
    Data(&'a Option<data_request::Op>),
    /// A carried batch's items, and its place in its sender's run.
    Carry(&'a [Item], Option<&'a CarryOrder>),
}

fn signed_bytes(envelope: &Envelope, signed_at_ms: i64, payload: &Payload<'_>) -> Vec<u8> {
    let (label, len) = match payload {
        Payload::Data(_) => ("meridian.peer.v1.DataRequest", 0),
        Payload::Carry(items, _) => (
            "meridian.peer.v1.BusinessRequest",
            items
                .iter()
                .map(|item| prost::encoding::message::encoded_len(ITEMS_TAG, item))
                .sum::<usize>()
                + 24,
        ),
    };
    let mut bytes = Vec::with_capacity(len + 96);
    for part in [label, &envelope.source, &envelope.destination] {
        bytes.extend_from_slice(part.as_bytes());
        bytes.push(0);
    }
    bytes.extend_from_slice(&signed_at_ms.to_be_bytes());
    match payload {
        Payload::Data(r) => {
            let request = DataRequest {
                envelope: None,
                actor_assertion: None,
                op: (*r).clone(),
            };
            bytes.extend_from_slice(&request.encode_to_vec());
        }
        // What `BusinessRequest { envelope: None, items, order }` encodes
        // to, the items written in place rather than copied into a request
        // first: every carried batch is signed where it leaves its region,
        // and checked at each relay.
        Payload::Carry(items, order) => {
            for item in *items {
                prost::encoding::message::encode(ITEMS_TAG, item, &mut bytes);
            }
            if let Some(order) = order {
                prost::encoding::message::encode(ORDER_TAG, *order, &mut bytes);
            }
        }
    }
    bytes
}

/// The field number of `BusinessRequest.items` (peer.proto).
const ITEMS_TAG: u32 = 2;
/// The field number of `BusinessRequest.order` (peer.proto).
const ORDER_TAG: u32 = 3;

/// Signs a request at its source region.
pub fn seal(
    envelope: &mut Envelope,
    payload: Payload<'_>,
    credentials: &Loaded,
) -> Result<(), Error> {
    let signed_at_ms = crate::now_ms();
    let bytes = signed_bytes(envelope, signed_at_ms, &payload);
    envelope.signature = Some(Signature {
        certificate: credentials.certificate().to_vec(),
        signature: super::verify::sign(&credentials.signer, &bytes)?,
        signed_at_ms,
    });
    Ok(())
}

/// Checks that a request was signed by its envelope's source, recently.
pub fn check(envelope: &Envelope, payload: Payload<'_>, verifier: &Verifier) -> Result<(), Error> {
    let signature = envelope.signature.as_ref().ok_or_else(|| {
        refused(format!(
            "a request from region {} came through another region without its signature",
            envelope.source
        ))
    })?;
    // abs_diff: any i64 may come off the wire (i64::MIN once overflowed).
    if crate::now_ms().abs_diff(signature.signed_at_ms) > MAX_SKEW_MS as u64 {
        return Err(refused(
            "the request's signature is too old or from the future",
        ));
    }
    let bytes = signed_bytes(envelope, signature.signed_at_ms, &payload);
    verifier.signed_by(
        &envelope.source,
        &signature.certificate,
        &bytes,
        &signature.signature,
    )
}

fn link_state_bytes(state: &LinkState) -> Vec<u8> {
    let unsigned = LinkState {
        signature: None,
        ..state.clone()
    };
    let mut bytes = b"meridian.peer.v1.LinkState\0".to_vec();
    bytes.extend_from_slice(&unsigned.encode_to_vec());
    bytes
}

/// Signs this region's own link-state record.
pub fn sign_link_state(state: &mut LinkState, credentials: &Loaded) -> Result<(), Error> {
    let bytes = link_state_bytes(state);
    state.signature = Some(Signature {
        certificate: credentials.certificate().to_vec(),
        signature: super::verify::sign(&credentials.signer, &bytes)?,
        signed_at_ms: crate::now_ms(),
    });
    Ok(())
}

/// Checks a link-state record: signed by its origin, and a seq that is
/// neither from the future nor expired (so one record cannot poison the
/// origin's later ones, as in OSPF's MaxAge and sequence rules).
pub fn check_link_state(
    state: &LinkState,
    verifier: &Verifier,
    now_micros: u64,
) -> Result<(), Error> {
    if state.seq > now_micros.saturating_add(MAX_AHEAD_MICROS) {
        return Err(refused(format!(
            "link state of {} has a seq from the future",
            state.origin
        )));
    }
    if state.seq.saturating_add(MAX_AGE_MICROS) < now_micros {
        return Err(refused(format!(
            "link state of {} has expired",
            state.origin
        )));
    }
    let signature = state
        .signature
        .as_ref()
        .ok_or_else(|| refused(format!("link state of {} is not signed", state.origin)))?;
    verifier.signed_by(
        &state.origin,
        &signature.certificate,
        &link_state_bytes(state),
        &signature.signature,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::peer_api::{BusinessRequest, Submission, item};
    use crate::trust::pki::{DEFAULT_LIFETIME, MeshCa};

    /// The bytes signed for carried items are those of the request they
    /// travel in, as every earlier build signed and checks them.
    #[test]
    fn carried_items_are_signed_as_their_request_encodes_them() {
        use crate::proto::client_api::Delivery;
        use crate::proto::peer_api::Distribution;

        let items = [
            Item {
                kind: Some(item::Kind::Submission(Submission {
                    message_id: "m1".into(),
                    body: "hi".repeat(100),
                    ..Default::default()
                })),
            },
            Item::default(),
            Item {
                kind: Some(item::Kind::Distribution(Distribution {
                    message: Some(Delivery {
                        seq: 7,
                        ..Default::default()
                    }),
                    recipients: vec!["bob@us".into(), "cat@us".into()],
                    roaming: true,
                })),
            },
        ];
        let envelope = Envelope {
            source: "ap".into(),
            destination: "us".into(),
            hops_left: 3,
            path: vec!["eu".into()],
            ..Default::default()
        };
        let order = CarryOrder {
            chain: -7,
            batch: 3,
        };
        for batch in [&items[..0], &items[..1], &items[..]] {
            for order in [None, Some(&order)] {
                let mut expected = b"meridian.peer.v1.BusinessRequest\0ap\0us\0".to_vec();
                expected.extend_from_slice(&42i64.to_be_bytes());
                let request = BusinessRequest {
                    envelope: None,
                    items: batch.to_vec(),
                    order: order.copied(),
                };
                expected.extend_from_slice(&request.encode_to_vec());
                assert_eq!(
                    signed_bytes(&envelope, 42, &Payload::Carry(batch, order)),
                    expected
                );
            }
        }
    }

    #[test]
    fn a_sealed_request_checks_and_any_change_or_time_is_refused() {
        let ca = MeshCa::generate("test").unwrap();
        let creds = |region: &str| {
            ca.issue_region(region, "test", &[], DEFAULT_LIFETIME)
                .and_then(|c| c.credentials(&ca.cert_pem))
                .unwrap()
        };
        let (ap, verifier) = (creds("ap"), Verifier::new(creds("us")));
        let items = vec![Item {
            kind: Some(item::Kind::Submission(Submission {
                body: "hi".into(),
                ..Default::default()
            })),
        }];
        let mut envelope = Envelope {
            source: "ap".into(),
            destination: "us".into(),
            ..Default::default()
        };
        let order = CarryOrder { chain: 1, batch: 2 };
        let carry = |items| Payload::Carry(items, Some(&order));
        seal(&mut envelope, carry(&items), &ap.current()).unwrap();
        check(&envelope, carry(&items), &verifier).unwrap();
        // The batch's place in its run is signed too: a relay cannot move it.
        let moved = CarryOrder { chain: 1, batch: 3 };
        assert!(check(&envelope, Payload::Carry(&items, Some(&moved)), &verifier).is_err());
        assert!(check(&envelope, Payload::Carry(&items, None), &verifier).is_err());

        let mut changed = items.clone();
        if let Some(item::Kind::Submission(s)) = &mut changed[0].kind {
            s.body = "ho".into();
        }
        assert!(check(&envelope, carry(&changed), &verifier).is_err());
        let mut elsewhere = envelope.clone();
        elsewhere.destination = "eu".into();
        assert!(check(&elsewhere, carry(&items), &verifier).is_err());
        // Times from the wire at the edges of i64 are refused, not a panic
        // (the fuzzer found i64::MIN overflowing the skew check).
        for at in [i64::MIN, i64::MAX, 0] {
            let mut odd = envelope.clone();
            odd.signature.as_mut().unwrap().signed_at_ms = at;
            assert!(check(&odd, carry(&items), &verifier).is_err());
        }
    }
}
