//! The protocol edge: how the Azure Functions host (or a caller, when we run standalone) reaches the
//! functions. Both ways the host talks to a custom handler end in the same [`dispatch`]:
//!
//! - **HTTP forwarding** (`enableForwardingHttpRequest: true`): the original request on `/api/<Name>`,
//!   answered as is.
//! - **Invocation payload**: `POST /<Name>` with `{"Data": {"req": {...}}, "Metadata": {...}}`, answered
//!   with `{"Outputs": {"res": {...}}, "Logs": [...], "ReturnValue": null}`.
//!
//! `GET /` answers 200 at once: the host probes it to know we are ready.
//!
//! [`dispatch`]: crate::functions::dispatch

mod body;
mod forwarding;
mod invocation;
mod keys;
pub mod shutdown;

use crate::functions::{AppState, FunctionError, Reply};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use warp::http::StatusCode;
use warp::Filter;

/// All routes of the handler, as one warp filter (tests can drive it with `warp::test` without a socket).
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone + Send + Sync + 'static
{
    let readiness = warp::path::end().and(warp::get()).map(|| {
        json_response(&Reply::ok(
            serde_json::json!({"status": "ready", "service": "procfwk"}),
        ))
    });
    // One body budget for both protocols.
    let bodies = Arc::new(body::BodyReader::new(
        state.settings.body_buffer_bytes,
        state.settings.body_timeout,
    ));
    readiness
        .or(forwarding::route(state.clone(), bodies.clone()))
        .unify()
        .or(invocation::route(state, bodies))
        .unify()
        .recover(handle_rejection)
        .unify()
}

/// A reply as an HTTP response with a JSON body (`Content-Type: application/json`, as `warp::reply::json`
/// sets it), or its page with the page's content type. The header map is sized for its one header: hyper keeps a connection's last response map to
/// parse the next request into, and the default map would hold ~650 bytes on every idle connection.
pub(crate) fn json_response(reply: &Reply) -> warp::reply::Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (body, content_type) = match &reply.page {
        Some(page) => (page.text.clone().into_bytes(), page.content_type),
        // Serializing a `Value` into memory cannot fail.
        None => (
            serde_json::to_vec(&reply.body).unwrap_or_default(),
            "application/json",
        ),
    };
    let mut headers = warp::http::HeaderMap::with_capacity(1);
    headers.insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static(content_type),
    );
    let mut response = warp::reply::Response::new(body.into());
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

async fn handle_rejection(rejection: warp::Rejection) -> Result<warp::reply::Response, Infallible> {
    let error = if rejection.is_not_found() {
        FunctionError::NotFound("(no route)".into())
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        FunctionError::MethodNotAllowed {
            method: "this".into(),
            allowed: "GET or POST".into(),
        }
    } else if rejection.find::<warp::reject::InvalidQuery>().is_some() {
        FunctionError::BadRequest(crate::domain::RequestError::new(
            "query",
            "is not a valid query string",
        ))
    } else {
        FunctionError::BadRequest(crate::domain::RequestError::new(
            "request",
            format!("{rejection:?}"),
        ))
    };
    Ok(json_response(&error.into_reply()))
}

/// A service with its response future on the heap. hyper keeps the future of a connection's request in
/// a box allocated when the connection opens, sized for that future type: unboxed, every idle keep-alive
/// connection would hold ~10 KiB for a request it is not running.
#[derive(Clone)]
struct Boxed<S>(S);

impl<S, R> hyper::service::Service<R> for Boxed<S>
where
    S: hyper::service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, request: R) -> Self::Future {
        Box::pin(self.0.call(request))
    }
}

/// Tracks each request for the shutdown drain: refused with a 503 once shutdown has begun, otherwise
/// counted until its response body has been handed to the connection. A response finished after shutdown
/// began closes its connection.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    drain: shutdown::Drain,
}

impl<S, R, B> hyper::service::Service<warp::http::Request<R>> for Tracked<S>
where
    S: hyper::service::Service<
        warp::http::Request<R>,
        Response = warp::http::Response<B>,
        Error = Infallible,
    >,
    S::Future: Send + 'static,
    B: From<bytes::Bytes> + Send + 'static,
{
    type Response = warp::http::Response<shutdown::TicketBody<B>>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn call(&self, request: warp::http::Request<R>) -> Self::Future {
        // Method and path only: the query may carry a function key.
        let described = format!("{} {}", request.method(), request.uri().path());
        let Some(mut ticket) = self.drain.admit(described) else {
            let refusal =
                shutdown::refusal().map(|bytes| shutdown::TicketBody::new(B::from(bytes), None));
            return Box::pin(std::future::ready(Ok(refusal)));
        };
        let drain = self.drain.clone();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            ticket.answered(response.status().as_u16());
            if drain.has_begun() {
                response.headers_mut().insert(
                    warp::http::header::CONNECTION,
                    warp::http::HeaderValue::from_static("close"),
                );
            }
            Ok(response.map(|body| shutdown::TicketBody::new(body, Some(ticket))))
        })
    }
}

/// How long connections stay open after the listener closed, for requests already on their way.
const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_millis(100);

/// A running handler bound to a local port.
pub struct Application {
    local_addr: SocketAddr,
    drain: shutdown::Drain,
    stop_accepting: Option<oneshot::Sender<()>>,
    close_connections: watch::Sender<bool>,
    connections: TaskTracker,
    task: JoinHandle<()>,
}

impl Application {
    /// Bind `addr` (port 0 picks a free port) and start serving.
    ///
    /// The accept loop is ours rather than `warp::serve`'s: HTTP/1.1 only (the Functions host and ADF
    /// speak nothing else), `TCP_NODELAY` on every connection, and no protocol sniffing buffer, which keeps
    /// a thousand idle keep-alive connections cheap.
    pub async fn start(state: Arc<AppState>, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (tx, mut rx) = oneshot::channel::<()>();
        let (close_connections, closing) = watch::channel(false);
        let drain = shutdown::Drain::new();
        let connections = TaskTracker::new();
        let service = warp::service(routes(state));
        let admitting = drain.clone();
        let tracker = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = &mut rx => break,
                };
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = Tracked {
                    inner: Boxed(hyper_util::service::TowerToHyperService::new(
                        service.clone(),
                    )),
                    drain: admitting.clone(),
                };
                let mut closing = closing.clone();
                tracker.spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let connection = hyper::server::conn::http1::Builder::new()
                        // A connection's read buffer grows while a client streams its body faster
                        // than we copy it out; 64 KiB still holds any request head the Functions host
                        // sends, and bounds 256 uploading connections to 16 MiB of it.
                        .max_buf_size(64 * 1024)
                        // hyper otherwise keeps reading a busy connection to notice the caller hanging
                        // up, and that read needs a second 8 KiB buffer while the request still borrows
                        // the first. Our calls end within their budget anyway, hang-up or not.
                        .half_close(true)
                        .serve_connection(io, service);
                    tokio::pin!(connection);
                    let ended = tokio::select! {
                        ended = connection.as_mut() => ended,
                        _ = async { closing.wait_for(|close| *close).await.map(drop) } => {
                            // Finish the response being written, if any, then close.
                            connection.as_mut().graceful_shutdown();
                            connection.await
                        }
                    };
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
        });
        Ok(Self {
            local_addr,
            drain,
            stop_accepting: Some(tx),
            close_connections,
            connections,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Shut down gracefully (see [`shutdown`]): refuse new requests with a 503, wait up to `bound` for
    /// the in-flight ones to be answered, then close the listener and every connection. Says whether
    /// every in-flight request was answered, or which were cut.
    pub async fn shut_down(mut self, bound: std::time::Duration) -> shutdown::Drained {
        let started = tokio::time::Instant::now();
        let in_flight = self.drain.begin();
        if !in_flight.is_empty() {
            tracing::info!(
                in_flight = in_flight.len(),
                bound_secs = bound.as_secs_f64(),
                "shutdown: waiting for in-flight requests"
            );
        }
        let drained = self.drain.drained(bound).await;
        if let Some(tx) = self.stop_accepting.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
        // A request already on its way on a connection accepted last (or on a kept-alive one) is read
        // and refused rather than cut: a moment for it to arrive before connections close.
        let linger = CLOSE_LINGER.min(bound.saturating_sub(started.elapsed()));
        tokio::time::sleep(linger).await;
        let _ = self.close_connections.send(true);
        self.connections.close();
        // Connections finish the response they are writing; idle ones close at once.
        let left = bound.saturating_sub(started.elapsed());
        let _ = tokio::time::timeout(left, self.connections.wait()).await;
        drained
    }

    /// Stop accepting, finish in-flight requests, return.
    pub async fn shutdown(self) {
        let _ = self.shut_down(std::time::Duration::from_secs(30)).await;
    }

    /// Serve until the server task ends (it does not, unless shut down).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}
