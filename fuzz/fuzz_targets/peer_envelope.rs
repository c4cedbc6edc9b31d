//! The peer API's envelope and its signature checks: `DataRequest`,
//! `BusinessRequest` and `LinkState` decoded from arbitrary bytes and checked
//! with `trust::origin::{check, check_link_state}` against a verifier of a
//! mesh CA made once, with the user assertions they carry
//! (`trust::assertion::check`); certificates from arbitrary DER.
//!
//! The first byte picks what the rest is:
//! - 0: a `DataRequest`, 1: a `BusinessRequest`, 2: a `LinkState`, each
//!   after a second byte of flags: bit 0 puts the region's real certificate
//!   into the signature (so the signature bytes themselves are checked),
//!   bit 1 makes the signature's time (or the record's seq) current, bit 2
//!   signs the decoded message as region `eu` first (then the check must
//!   pass exactly when the message says it comes from `eu`), and bit 3
//!   takes the signature's time (or the record's seq) from the 8 bytes
//!   after the flags, big-endian, so that extreme values are easy to reach;
//! - 3: a DER certificate, for `verify::identity_of` and the verifier;
//! - 4: DNS names, one per line, for `Identity::from_dns_names`;
//! - 5: a heartbeat's `Ping`, whose link-state records are read, merged and
//!   routed over (routes must be loop-free).

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use meridian_node::Error;
use meridian_node::ids::Id;
use meridian_node::mesh::topology::LinkStateDb;
use meridian_node::proto::peer_api::data_request::Op;
use meridian_node::proto::peer_api::{
    BusinessRequest, DataRequest, Envelope, LinkState, Ping, UserAssertion, item,
};
use meridian_node::roaming::business::{adverts_from_wire, adverts_to_wire};
use meridian_node::trust::assertion;
use meridian_node::trust::credentials::Loaded;
use meridian_node::trust::origin::{self, Payload};
use meridian_node::trust::pki::{DEFAULT_LIFETIME, MeshCa};
use meridian_node::trust::verify::identity_of;
use meridian_node::trust::{Credentials, Identity, Verifier};
use prost::Message;
use rustls_pki_types::CertificateDer;

/// The region whose credentials sign here.
const REGION: &str = "eu";

struct Mesh {
    verifier: Verifier,
    credentials: Arc<Credentials>,
}

impl Mesh {
    fn loaded(&self) -> Arc<Loaded> {
        self.credentials.current()
    }
}

fn mesh() -> &'static Mesh {
    static MESH: OnceLock<Mesh> = OnceLock::new();
    MESH.get_or_init(|| {
        let ca = MeshCa::generate("fuzz").expect("mesh CA");
        let credentials = ca
            .issue_region(REGION, "fuzz", &[], DEFAULT_LIFETIME)
            .expect("region certificate")
            .credentials(&ca.cert_pem)
            .expect("region credentials");
        Mesh {
            verifier: Verifier::new(credentials.clone()),
            credentials,
        }
    })
}

fn now_micros() -> u64 {
    u64::try_from(meridian_node::now_ms()).unwrap_or_default() * 1000
}

/// A refused check is always an unauthenticated one.
fn refused(result: &Result<(), Error>) {
    if let Err(err) = result {
        assert!(matches!(err, Error::Unauthenticated(_)), "{err:?}");
        let _ = err.to_string();
    }
}

/// Applies the flags to a decoded envelope.
fn prepare(envelope: &mut Envelope, flags: u8, time: Option<i64>, mesh: &Mesh) {
    if time.is_some() {
        envelope.signature.get_or_insert_default();
    }
    if let Some(signature) = envelope.signature.as_mut() {
        if flags & 1 != 0 {
            signature.certificate = mesh.loaded().certificate().to_vec();
        }
        if flags & 2 != 0 {
            signature.signed_at_ms = meridian_node::now_ms();
        }
        if let Some(time) = time {
            signature.signed_at_ms = time;
        }
    }
}

fn data_request(bytes: &[u8], flags: u8, time: Option<i64>, mesh: &Mesh) {
    let Ok(mut request) = DataRequest::decode(bytes) else {
        return;
    };
    let Some(mut envelope) = request.envelope.take() else {
        return;
    };
    prepare(&mut envelope, flags, time, mesh);
    let actor = match &request.op {
        Some(Op::GetGroup(op)) => Some(&op.actor),
        Some(Op::UpdateGroup(op)) => Some(&op.actor),
        Some(Op::Join(op)) => Some(&op.actor),
        Some(Op::Leave(op)) => Some(&op.actor),
        Some(Op::History(op)) => Some(&op.actor),
        _ => None,
    };
    if let Some(actor) = actor {
        let shown = request.actor_assertion.as_ref();
        let now = meridian_node::now_ms();
        user_assertion(actor, &envelope.source, shown, now, flags, mesh);
    }
    let result = origin::check(&envelope, Payload::Data(&request.op), &mesh.verifier);
    refused(&result);
    if result.is_ok() {
        assert_eq!(envelope.source, REGION, "only {REGION}'s key signs here");
    }
    if flags & 4 != 0 {
        origin::seal(&mut envelope, Payload::Data(&request.op), &mesh.loaded()).expect("sealed");
        // Relays change the hop count and the path; the signature holds.
        envelope.hops_left = envelope.hops_left.wrapping_sub(1);
        envelope.path.push("relay".into());
        let result = origin::check(&envelope, Payload::Data(&request.op), &mesh.verifier);
        refused(&result);
        assert_eq!(result.is_ok(), envelope.source == REGION, "{result:?}");
    }
}

fn business_request(bytes: &[u8], flags: u8, time: Option<i64>, mesh: &Mesh) {
    let Ok(mut request) = BusinessRequest::decode(bytes) else {
        return;
    };
    let Some(mut envelope) = request.envelope.take() else {
        return;
    };
    prepare(&mut envelope, flags, time, mesh);
    // The receiving home checks each submission's sender.
    let now = meridian_node::now_ms();
    for item in &request.items {
        if let Some(item::Kind::Submission(s)) = &item.kind
            && s.sent_at_ms <= now + origin::MAX_SKEW_MS
        {
            let shown = s.sender_assertion.as_ref();
            user_assertion(
                &s.sender,
                &envelope.source,
                shown,
                s.sent_at_ms,
                flags,
                mesh,
            );
        }
    }
    let result = origin::check(&envelope, Payload::Carry(&request.items, request.order.as_ref()), &mesh.verifier);
    refused(&result);
    if result.is_ok() {
        assert_eq!(envelope.source, REGION, "only {REGION}'s key signs here");
    }
    if flags & 4 != 0 {
        origin::seal(
            &mut envelope,
            Payload::Carry(&request.items, request.order.as_ref()),
            &mesh.loaded(),
        )
        .expect("sealed");
        envelope.hops_left = envelope.hops_left.wrapping_sub(1);
        envelope.path.push("relay".into());
        let result = origin::check(&envelope, Payload::Carry(&request.items, request.order.as_ref()), &mesh.verifier);
        refused(&result);
        assert_eq!(result.is_ok(), envelope.source == REGION, "{result:?}");
    }
}

/// A user assertion that region `source` shows for `user`, checked at
/// `at_ms` as the user's home does. Flag bit 0 puts the real certificate
/// into its signature; bit 2 has `eu` issue one first.
fn user_assertion(
    user: &str,
    source: &str,
    shown: Option<&UserAssertion>,
    at_ms: i64,
    flags: u8,
    mesh: &Mesh,
) {
    let Ok(user) = Id::parse("user", user) else {
        return;
    };
    let mut shown = shown.cloned();
    if let Some(signature) = shown.as_mut().and_then(|a| a.signature.as_mut())
        && flags & 1 != 0
    {
        signature.certificate = mesh.loaded().certificate().to_vec();
    }
    // Only the user's home (here only `eu` signs) vouches for another region.
    let may = user.home() == source || user.home() == REGION;
    let result = assertion::check(&user, source, shown.as_ref(), at_ms, &mesh.verifier);
    match &result {
        Ok(()) => assert!(may, "{user} at {source}"),
        Err(err) => assert!(matches!(err, Error::PermissionDenied(_)), "{err:?}"),
    }
    if flags & 4 != 0 {
        let expires_at_ms = at_ms.saturating_add(60_000);
        let issued =
            assertion::issue(&user, source, expires_at_ms, &mesh.loaded()).expect("issued");
        let result = assertion::check(&user, source, Some(&issued), at_ms, &mesh.verifier);
        assert_eq!(result.is_ok(), may, "{user} at {source}: {result:?}");
    }
}

fn link_state(bytes: &[u8], flags: u8, time: Option<i64>, mesh: &Mesh) {
    let Ok(mut state) = LinkState::decode(bytes) else {
        return;
    };
    let now = now_micros();
    if let Some(signature) = state.signature.as_mut()
        && flags & 1 != 0
    {
        signature.certificate = mesh.loaded().certificate().to_vec();
    }
    if flags & 2 != 0 {
        state.seq = now;
    }
    if let Some(time) = time {
        state.seq = time as u64;
    }
    let result = origin::check_link_state(&state, &mesh.verifier, now);
    refused(&result);
    if result.is_ok() {
        assert_eq!(state.origin, REGION, "only {REGION}'s key signs here");
    }
    if flags & 4 != 0 {
        state.seq = now;
        origin::sign_link_state(&mut state, &mesh.loaded()).expect("signed");
        let result = origin::check_link_state(&state, &mesh.verifier, now);
        refused(&result);
        assert_eq!(result.is_ok(), state.origin == REGION, "{result:?}");
    }

    routes(vec![state]);
}

/// What a heartbeat does with the records it carries: reads them, merges
/// them and computes the routes from each origin.
fn routes(states: Vec<LinkState>) {
    let adverts = adverts_from_wire(states);
    let again = adverts_from_wire(adverts_to_wire(adverts.clone()));
    assert_eq!(again, adverts, "link state round trip");
    let mut db = LinkStateDb::default();
    for advert in adverts {
        db.merge(advert);
    }
    let origins: Vec<String> = db.adverts().map(|a| a.origin.clone()).collect();
    for from in &origins {
        for (to, path) in db.routes(from) {
            // Loop-free: never back through `from`, no region twice.
            assert_eq!(path.hops.last(), Some(&to), "{from} to {to}: {path:?}");
            assert!(!path.hops.contains(from), "{from} to {to}: {path:?}");
            let mut seen = std::collections::BTreeSet::new();
            assert!(path.hops.iter().all(|h| seen.insert(h)), "{path:?}");
        }
    }
}

fn certificate(der: &[u8], mesh: &Mesh) {
    let _ = identity_of(&CertificateDer::from(der));
    match mesh.verifier.certificate(der) {
        Ok(identity) => assert_eq!(identity, Identity::Region(REGION.into())),
        Err(err) => assert!(matches!(err, Error::Unauthenticated(_)), "{err:?}"),
    }
}

fn dns_names(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Some(identity) = Identity::from_dns_names(text.lines()) {
        let _ = identity.to_string();
        let _ = identity.region();
    }
}

fuzz_target!(|data: &[u8]| {
    let mesh = mesh();
    match data {
        [which, rest @ ..] if which % 6 == 3 => certificate(rest, mesh),
        [which, rest @ ..] if which % 6 == 4 => dns_names(rest),
        [which, rest @ ..] if which % 6 == 5 => {
            if let Ok(ping) = Ping::decode(rest) {
                routes(ping.link_states);
            }
        }
        [which, flags, rest @ ..] => {
            let (time, rest) = match rest.split_first_chunk::<8>() {
                Some((time, rest)) if flags & 8 != 0 => (Some(i64::from_be_bytes(*time)), rest),
                _ => (None, rest),
            };
            match which % 6 {
                0 => data_request(rest, *flags, time, mesh),
                1 => business_request(rest, *flags, time, mesh),
                _ => link_state(rest, *flags, time, mesh),
            }
        }
        _ => {}
    }
});
