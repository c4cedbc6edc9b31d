//! Every client request of `node/proto/meridian/client.proto`: decoded from
//! arbitrary bytes with prost, as the client port does, then put through the
//! checks the business center makes before it touches its data center (ids
//! with `Id::parse`, group names with `is_name`, and the size limits of
//! `meridian_node::limits`).
//!
//! The first byte picks the request; the rest is its protobuf encoding.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_node::Error;
use meridian_node::ids::{Id, is_name, is_region_code};
use meridian_node::limits::{
    MAX_ANNOUNCEMENT_BYTES, MAX_BODY_BYTES, MAX_CURSORS, MAX_GROUP_MEMBERS, MAX_HISTORY_PAGE,
    MAX_IDEMPOTENCY_KEY_BYTES, MAX_PASSWORD_BYTES, MAX_TITLE_BYTES, MIN_PASSWORD_BYTES,
};
use meridian_node::proto::client_api::{
    CreateGroupRequest, GetGroupRequest, HistoryRequest, LoginRequest, LogoutRequest,
    MembershipRequest, RefreshRequest, RegisterRequest, SendRequest, SubscribeRequest,
    UpdateGroupRequest,
};
use prost::Message;

/// The region the checks run at, as a business center's own.
const HERE: &str = "eu";

/// Decodes `bytes` as `T`; a decoded message must survive prost's round trip.
fn decode<T: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Option<T> {
    let message = T::decode(bytes).ok()?;
    let encoded = message.encode_to_vec();
    assert_eq!(encoded.len(), message.encoded_len());
    let again = T::decode(encoded.as_slice()).expect("a re-encoded message decodes");
    assert_eq!(again, message, "prost round trip");
    Some(message)
}

/// `Id::parse`, and what a parsed id promises.
fn id(what: &str, text: &str) -> Result<Id, Error> {
    let result = Id::parse(what, text);
    match &result {
        Ok(id) => {
            assert!(is_name(id.name()), "{text:?}: name {:?}", id.name());
            assert!(is_region_code(id.home()), "{text:?}: home {:?}", id.home());
            assert_eq!(format!("{}@{}", id.name(), id.home()), text);
            assert_eq!(id.to_string(), text);
            assert_eq!(id.as_str(), text);
            let rebuilt = Id::new(what, id.name(), id.home()).expect("an id rebuilds");
            assert_eq!(&rebuilt, id);
        }
        Err(err) => {
            assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
            assert!(err.to_string().contains(what), "{err}");
        }
    }
    result
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), Error> {
    if value.len() > max {
        return Err(Error::InvalidArgument(format!("{field} is too long")));
    }
    Ok(())
}

fn register(r: RegisterRequest) -> Result<(), Error> {
    id("user", &r.user)?;
    if r.password.len() < MIN_PASSWORD_BYTES {
        return Err(Error::InvalidArgument("password too short".into()));
    }
    check_len("password", &r.password, MAX_PASSWORD_BYTES)
}

fn login(r: LoginRequest) -> Result<(), Error> {
    id("user", &r.user)?;
    check_len("password", &r.password, MAX_PASSWORD_BYTES)
}

fn create_group(r: CreateGroupRequest) -> Result<(), Error> {
    if !is_name(&r.name) {
        return Err(Error::InvalidArgument("group name".into()));
    }
    // A name that passes `is_name` always makes a group id here.
    let group = Id::new("group", &r.name, HERE).expect("a valid name makes a group id");
    assert_eq!(group.name(), r.name);
    assert_eq!(group.home(), HERE);
    let title = if r.title.is_empty() {
        &r.name
    } else {
        &r.title
    };
    check_len("title", title, MAX_TITLE_BYTES)?;
    check_len("announcement", &r.announcement, MAX_ANNOUNCEMENT_BYTES)
}

fn update_group(r: UpdateGroupRequest) -> Result<(), Error> {
    id("group", &r.group)?;
    if let Some(title) = &r.title {
        if title.is_empty() {
            return Err(Error::InvalidArgument("title must not be empty".into()));
        }
        check_len("title", title, MAX_TITLE_BYTES)?;
    }
    if let Some(announcement) = &r.announcement {
        check_len("announcement", announcement, MAX_ANNOUNCEMENT_BYTES)?;
    }
    if let Some(settings) = &r.settings
        && (settings.max_members == 0 || settings.max_members > MAX_GROUP_MEMBERS)
    {
        return Err(Error::InvalidArgument("settings.max_members".into()));
    }
    Ok(())
}

fn send(r: SendRequest) -> Result<(), Error> {
    id("group", &r.group)?;
    if r.body.is_empty() {
        return Err(Error::InvalidArgument("message body is empty".into()));
    }
    check_len("message body", &r.body, MAX_BODY_BYTES)?;
    check_len(
        "idempotency key",
        &r.idempotency_key,
        MAX_IDEMPOTENCY_KEY_BYTES,
    )
}

fn history(r: HistoryRequest) -> Result<(), Error> {
    id("group", &r.group)?;
    if r.limit > MAX_HISTORY_PAGE {
        return Err(Error::InvalidArgument("limit".into()));
    }
    Ok(())
}

fn subscribe(r: SubscribeRequest) -> Result<(), Error> {
    if r.cursors.len() > MAX_CURSORS {
        return Err(Error::InvalidArgument("cursors".into()));
    }
    for cursor in &r.cursors {
        id("group", &cursor.group)?;
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let checked = match which % 11 {
        0 => decode::<RegisterRequest>(bytes).map(register),
        1 => decode::<LoginRequest>(bytes).map(login),
        // Refresh and logout tokens are opaque until looked up (by hash).
        2 => decode::<RefreshRequest>(bytes).map(|_| Ok(())),
        3 => decode::<LogoutRequest>(bytes).map(|_| Ok(())),
        4 => decode::<CreateGroupRequest>(bytes).map(create_group),
        5 => decode::<GetGroupRequest>(bytes).map(|r| id("group", &r.group).map(drop)),
        6 => decode::<UpdateGroupRequest>(bytes).map(update_group),
        7 => decode::<MembershipRequest>(bytes).map(|r| id("group", &r.group).map(drop)),
        8 => decode::<SendRequest>(bytes).map(send),
        9 => decode::<HistoryRequest>(bytes).map(history),
        _ => decode::<SubscribeRequest>(bytes).map(subscribe),
    };
    if let Some(Err(err)) = checked {
        // What the client reads: a gRPC status, its message in a header.
        let status = tonic::Status::from(err);
        let mut headers = http::HeaderMap::new();
        status
            .add_header(&mut headers)
            .expect("a status makes headers");
        let read = tonic::Status::from_header_map(&headers).expect("the client reads it");
        assert_eq!(read.code(), status.code());
        assert_eq!(read.message(), status.message());
    }
});
