//! One hop of a peer request. The data service module's requests and the
//! business module's carried outbox items take the same steps at every
//! roaming system they pass: admit the request (sign it or check its
//! origin), stamp this hop on its envelope and pick the next hop, hand it to
//! this region's service center or to the next roaming system, and turn a
//! failure into a reply that goes back along the path. The steps are here
//! once; each request type says only how it is called.

use std::future::Future;

use tonic::transport::Channel;

use super::replicas::{self, Repeat};
use super::{Hop, Roaming, Sender};
use crate::Error;
use crate::proto::pair_api::pair_client::PairClient;
use crate::proto::peer_api::Envelope;
use crate::telemetry::traces;
use crate::transport::{CALL_TIMEOUT, call_error};
use crate::trust::origin::Payload;

/// What a gRPC call of the request answers.
pub type Answer<T> = Result<tonic::Response<T>, tonic::Status>;

/// A peer request that a roaming system carries one hop towards the
/// destination its envelope names.
pub(super) trait Forward: Sized + Clone {
    type Reply;

    /// Whether the hop continues a trace: the envelope's `traceparent` is
    /// rewritten to the current span (the caller's `roaming.carry`), so that
    /// the next hop is its child (docs/ARCHITECTURE.md §9, Traces). Data
    /// requests pass theirs on unchanged.
    const TRACED: bool;

    /// The envelope, and the payload its origin signature covers.
    fn parts(&mut self) -> (Option<&mut Envelope>, Payload<'_>);

    /// Whether the request may be handed to another service-center replica
    /// after one that may have applied it failed (see [`Repeat`]).
    fn repeat(&self) -> Repeat;

    /// Hands the request to this region's service center, over the pair API.
    fn local(
        self,
        service_center: PairClient<Channel>,
    ) -> impl Future<Output = Answer<Self::Reply>> + Send;

    /// Sends the request to the next roaming system, over `channel`, with
    /// the peer API's message size limits.
    fn peer(self, channel: Channel) -> impl Future<Output = Answer<Self::Reply>> + Send;

    /// The reply that carries `err` back along the path.
    fn failed(err: Error) -> Self::Reply;
}

impl Roaming {
    /// Carries `request` one hop towards its destination and returns the
    /// answer that comes back along the same path; nothing is kept here.
    pub(super) async fn forward<R: Forward>(&self, mut request: R, sender: Sender) -> R::Reply {
        let (envelope, payload) = request.parts();
        let admitted = self.admit(envelope, payload, &sender);
        let hop = admitted.and_then(|()| self.hop(request.parts().0));
        if R::TRACED
            && let Some(envelope) = request.parts().0
        {
            envelope.traceparent = traces::current();
        }
        let answer = match hop {
            Err(err) => Err(err),
            Ok(Hop::Local(service_center)) => {
                // The replicas in turn; one that did not take the request
                // passes it to the next, as far as `repeat` allows.
                let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
                let repeat = request.repeat();
                replicas::call(service_center, repeat, deadline, |replica| {
                    let answer = request.clone().local(replica);
                    async {
                        let answer = answer.await;
                        // A replica found by name that cannot be connected
                        // to may have gone: look the name up again soon.
                        if let Err(status) = &answer
                            && replicas::never_sent(status)
                        {
                            self.found.stale();
                        }
                        answer
                    }
                })
                .await
                .map(tonic::Response::into_inner)
                .map_err(|status| call_error(&self.region(), status))
            }
            Ok(Hop::Peer {
                next_hop,
                destination,
                channel,
            }) => {
                self.relay(&next_hop, &destination, request.peer(channel))
                    .await
            }
        };
        answer.unwrap_or_else(R::failed)
    }
}
