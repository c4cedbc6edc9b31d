//! Size limits on every field a client or peer can send, and the bounds on
//! sessions and logins.

/// A message body, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// A group's display title, in bytes.
pub const MAX_TITLE_BYTES: usize = 128;
/// A group's announcement, in bytes.
pub const MAX_ANNOUNCEMENT_BYTES: usize = 4 * 1024;
/// A client idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;
/// A message id another region names in its answer (ids are UUIDs, 36 bytes).
pub const MAX_MESSAGE_ID_BYTES: usize = 64;
/// The reason another region gives for a failure or a refusal, as kept and
/// shown to clients; a longer one is cut.
pub const MAX_FAILURE_MESSAGE_BYTES: usize = 1024;
/// Passwords, in bytes.
pub const MIN_PASSWORD_BYTES: usize = 8;
pub const MAX_PASSWORD_BYTES: usize = 256;
/// Members of one group, and the default when a group sets none.
pub const MAX_GROUP_MEMBERS: u32 = 10_000;
pub const DEFAULT_GROUP_MEMBERS: u32 = 1_000;
/// Messages in one history request: the default, and the most a client may
/// ask for. A reply may hold fewer (see [`HISTORY_PAGE_BYTES`]); the client
/// library and the CLI page on until they have the count asked for.
pub const DEFAULT_HISTORY_PAGE: u32 = 100;
pub const MAX_HISTORY_PAGE: u32 = 1_000;
/// The largest gRPC message on the client API, either way: gRPC's usual
/// receive limit (tonic's default, and other languages' clients'), 4 MiB.
/// The service center will not send more, and the client library (so the
/// CLI) sets the same receive limit, so a reply that a client would refuse
/// fails at the server with a clear status instead.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// The encoded messages in one page of history, in bytes. Every reply that
/// lists messages is one page: a `HistoryReply` to a client, the peer
/// `DataReply` that carries one between regions, and each step of a
/// subscription's catch-up. A page ends at whichever comes first, this or
/// the count asked for, and says whether more follow; it always holds at
/// least one message when one follows the cursor, so paging makes progress.
/// Three quarters of [`MAX_CLIENT_MESSAGE_BYTES`]: the other megabyte is
/// margin for what wraps a page (the reply, the peer reply's oneof, gRPC
/// framing), far more than those take.
pub const HISTORY_PAGE_BYTES: usize = MAX_CLIENT_MESSAGE_BYTES / 4 * 3;
// A page's first message always fits: a maximal body with its ids and
// framing is far below the budget.
const _: () = assert!(MAX_BODY_BYTES + 64 * 1024 < HISTORY_PAGE_BYTES);
/// The largest sequence number (and so history or subscription cursor) a
/// group can have: the data center stores it as a signed 64-bit integer.
pub const MAX_SEQ: u64 = i64::MAX as u64;
/// Resume cursors in one subscription.
pub const MAX_CURSORS: usize = 1_000;
/// How long `Send` to a group homed in another region waits for the home's
/// verdict before it answers `queued` (the verdict then comes as an event on
/// the sender's subscriptions). Long enough for a loaded cross-region round
/// trip, short enough for a person waiting at a prompt.
pub const SEND_VERDICT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Items in one cross-region batch.
pub const MAX_BATCH_ITEMS: usize = 256;
/// Relay hops a cross-region request may take.
pub const MAX_HOPS: u32 = 8;
/// Largest gRPC message either side accepts (a full batch of maximal bodies fits).
pub const MAX_GRPC_MESSAGE_BYTES: usize = 32 * 1024 * 1024;
/// Live deliveries buffered per subscriber before it is told to resume.
pub const SUBSCRIBER_BUFFER: usize = 4_096;
/// Encoded bytes of events buffered per subscriber before it is told to
/// resume: with 64 KiB bodies the count alone would allow 256 MiB.
pub const SUBSCRIBER_BUFFER_BYTES: usize = 16 * 1024 * 1024;
/// Live subscriptions one user may hold at one service center.
pub const MAX_SUBSCRIPTIONS_PER_USER: usize = 16;
/// Live subscriptions one service center holds at most, unless its operator
/// sets another bound (`meridian-node --max-subscriptions`, sized to the
/// process's memory: BENCHMARKS.md measures what an idle one costs).
pub const MAX_SUBSCRIPTIONS: usize = 10_000;
/// A session or refresh token as a client sends it back (issued ones are
/// 64 hex digits), in bytes.
pub const MAX_TOKEN_BYTES: usize = 128;
/// How long a session's access token (the bearer `session`) lasts.
pub const ACCESS_TOKEN_TTL_MS: i64 = 15 * 60 * 1000;
/// How long a refresh token lasts; each refresh issues a new one.
pub const REFRESH_TOKEN_TTL_MS: i64 = 24 * 60 * 60 * 1000;
/// Sessions kept in the service center's memory; the rest are read from the
/// data center when used.
pub const MAX_CACHED_SESSIONS: usize = 10_000;
/// Expired sessions deleted from the data center per login or refresh.
pub const SESSION_SWEEP_BATCH: usize = 256;
/// Failed logins for one user, and from one source address, before each
/// further attempt waits (doubling from [`LOGIN_BACKOFF_MS`]). They are
/// also the most attempts in progress at once for each.
pub const LOGIN_FAILURES_PER_USER: u32 = 5;
pub const LOGIN_FAILURES_PER_ADDRESS: u32 = 16;
/// The first wait after too many failed logins, and the longest.
pub const LOGIN_BACKOFF_MS: i64 = 1_000;
pub const MAX_LOGIN_BACKOFF_MS: i64 = 15 * 60 * 1000;
/// Failed logins are forgotten after this long without another.
pub const LOGIN_FAILURE_MEMORY_MS: i64 = 60 * 60 * 1000;
/// Users and source addresses whose failed logins are remembered at once.
pub const MAX_THROTTLED_KEYS: usize = 65_536;
/// Logins and registrations waiting for a password-hashing worker; one more
/// is refused at once.
pub const MAX_PASSWORD_QUEUE: usize = 64;
/// How long the sending region keeps the record of an accepted send
/// (`accepted`): a retry with the same idempotency key within this window
/// returns the first message; a later one is a new message. A day covers
/// a client's retries across restarts, network changes and a long
/// partition's queueing, as other messaging APIs' idempotency windows do.
pub const ACCEPTED_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;
/// How often the service center prunes what is past its retention
/// (expired sessions, `accepted` records past [`ACCEPTED_RETENTION_MS`]).
pub const PRUNE_INTERVAL_MS: u64 = 60 * 1000;
/// Rows one pruning write deletes at most, per table: a large prune is
/// many short writes, so it never holds the data center's writer for long.
pub const PRUNE_BATCH: usize = 512;
