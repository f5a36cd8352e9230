//! Idempotent creates over gRPC: the `idempotency-key` metadata, with the rules of
//! [`crate::app::idempotency`] that REST's `Idempotency-Key` follows. The request
//! message (encoded) is what must match; the stored answer is the encoded response
//! message, sealed, so a replay returns the same secret the first answer showed.

use std::future::Future;

use prost::Message;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Response, Status};

use crate::app::idempotency::{self, Claimed, IdempotencyKey};
use crate::identity::Caller;
use crate::state::AppState;

/// The response metadata of a replayed answer.
pub const REPLAYED: &str = "idempotent-replayed";

/// Runs `create` once per `idempotency-key` of `caller`'s owner on `method` (the full
/// method name); without the metadata it simply runs.
pub async fn once<Req, Resp, F, Fut>(
    state: &AppState,
    caller: &Caller,
    method: &str,
    metadata: &MetadataMap,
    request: &Req,
    create: F,
) -> Result<Response<Resp>, Status>
where
    Req: Message,
    Resp: Message + Default,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Resp, Status>>,
{
    let Some(raw) = metadata.get("idempotency-key") else {
        return create().await.map(Response::new);
    };
    let key = IdempotencyKey::parse(raw.as_bytes())?;
    let route = format!("grpc:{method}");
    match idempotency::claim(state, caller, &route, &key, &request.encode_to_vec()).await? {
        Claimed::Replay(answer) => {
            let message = Resp::decode(answer.body.as_slice())
                .map_err(|e| Status::internal(format!("a stored answer does not decode: {e}")))?;
            let mut response = Response::new(message);
            response
                .metadata_mut()
                .insert(REPLAYED, MetadataValue::from_static("true"));
            Ok(response)
        }
        Claimed::Fresh(pending) => {
            let message = match create().await {
                Ok(message) => message,
                Err(status) => {
                    // Only successes are stored: a corrected retry runs again.
                    pending.release().await;
                    return Err(status);
                }
            };
            pending.complete(0, None, &message.encode_to_vec()).await;
            Ok(Response::new(message))
        }
    }
}
