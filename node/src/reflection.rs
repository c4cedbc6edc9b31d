//! gRPC server reflection on the client port, so that `grpcurl` and other
//! tools can list and call the client API without the .proto files. It
//! describes the client API alone: its descriptor set is generated from
//! `proto/meridian/client.proto` with the code (`src/gen/`, checked for
//! drift by `tests/bootstrap.rs`), so the pair and peer APIs, which are not
//! served on this port, stay out of it.

use tonic_reflection::server::v1::{ServerReflection, ServerReflectionServer};
use tonic_reflection::server::v1alpha;

use crate::Error;

/// The encoded `FileDescriptorSet` of `meridian/client.proto`.
pub const CLIENT_DESCRIPTOR_SET: &[u8] = include_bytes!("gen/meridian.client.v1.descriptor.bin");

/// The client API's service.
pub const CLIENT_SERVICE: &str = "meridian.client.v1.BusinessCenter";

/// Reflection as `grpc.reflection.v1`, which current tools ask first.
pub fn v1() -> Result<ServerReflectionServer<impl ServerReflection>, Error> {
    builder()
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .build_v1()
        .map_err(|e| Error::Internal(format!("client API reflection: {e}")))
}

/// Reflection as `grpc.reflection.v1alpha`, for tools that know only it.
pub fn v1alpha() -> Result<v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>, Error> {
    builder()
        .with_service_name("grpc.reflection.v1alpha.ServerReflection")
        .build_v1alpha()
        .map_err(|e| Error::Internal(format!("client API reflection: {e}")))
}

fn builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(CLIENT_DESCRIPTOR_SET)
        .with_service_name(CLIENT_SERVICE)
}
