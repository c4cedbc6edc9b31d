//! The client API's session header, `authorization: Bearer <token>`: an
//! arbitrary header value, as tonic hands it to `ClientApi` (an HTTP/2
//! header, then gRPC metadata), read with
//! `service_center::grpc::bearer_token`.

#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use meridian_node::Error;
use meridian_node::service_center::grpc::bearer_token;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};

fuzz_target!(|data: &[u8]| {
    // Any string, as the function takes it.
    if let Ok(text) = std::str::from_utf8(data) {
        match bearer_token(text) {
            Ok(token) => assert_eq!(format!("Bearer {token}"), text),
            Err(err) => {
                assert!(!text.starts_with("Bearer "));
                assert!(matches!(err, Error::Unauthenticated(_)), "{err:?}");
            }
        }
    }

    // What reaches it from the wire.
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert("authorization", value);
    let metadata = MetadataMap::from_headers(headers);
    let header = metadata.get("authorization").expect("the header is there");
    let via_metadata = header.to_str().ok();
    let direct = AsciiMetadataValue::try_from(data).ok();
    assert_eq!(
        direct.as_ref().and_then(|v| v.to_str().ok()),
        via_metadata,
        "metadata from bytes and from headers differ"
    );
    if let Ok(token) = bearer_token(via_metadata.unwrap_or_default()) {
        assert!(data.starts_with(b"Bearer "));
        assert_eq!(token.as_bytes(), &data[7..]);
    }
});
