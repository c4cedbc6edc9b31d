//! Size limits on every field a client or peer can send.

/// A message body, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// A group's display title, in bytes.
pub const MAX_TITLE_BYTES: usize = 128;
/// A group's announcement, in bytes.
pub const MAX_ANNOUNCEMENT_BYTES: usize = 4 * 1024;
/// A client idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;
/// Passwords, in bytes.
pub const MIN_PASSWORD_BYTES: usize = 8;
pub const MAX_PASSWORD_BYTES: usize = 256;
/// Members of one group, and the default when a group sets none.
pub const MAX_GROUP_MEMBERS: u32 = 10_000;
pub const DEFAULT_GROUP_MEMBERS: u32 = 1_000;
/// History page size.
pub const DEFAULT_HISTORY_PAGE: u32 = 100;
pub const MAX_HISTORY_PAGE: u32 = 1_000;
/// Resume cursors in one subscription.
pub const MAX_CURSORS: usize = 1_000;
/// Items in one cross-region batch.
pub const MAX_BATCH_ITEMS: usize = 256;
/// Relay hops a cross-region request may take.
pub const MAX_HOPS: u32 = 8;
/// Largest gRPC message either side accepts (a full batch of maximal bodies fits).
pub const MAX_GRPC_MESSAGE_BYTES: usize = 32 * 1024 * 1024;
/// Live deliveries buffered per subscriber before it is told to resume.
pub const SUBSCRIBER_BUFFER: usize = 4_096;
/// How long a session lasts.
pub const SESSION_TTL_MS: i64 = 24 * 60 * 60 * 1000;
