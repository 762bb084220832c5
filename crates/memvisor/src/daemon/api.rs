//! The HTTP API, served on the daemon's Unix socket. Every answer is JSON (logs are text);
//! every error is `{"error": "..."}` with a status that says whose fault it was.

use super::{Daemon, DaemonError};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use memvisor_core::api::{
    AttachRequest, BalloonRequest, Change, MonitorRequest, VerifyReply, WorkloadRequest,
};
use memvisor_core::history::HistorySample;
use memvisor_core::sharing::SharingMatrix;
use memvisor_core::status::{ApiError, EventKind, HostStatus, VmStatus};
use memvisor_core::translation::{AddressError, GuestAddress, Translation};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type Shared = State<Arc<Daemon>>;

const VERIFY_TIMEOUT: Duration = Duration::from_secs(120);
/// Every request body the API takes is a small JSON object.
const MAX_BODY_BYTES: usize = 64 * 1024;

impl IntoResponse for DaemonError {
    fn into_response(self) -> Response {
        use memvisor_qemu::balloon::BalloonError;
        use memvisor_qemu::qmp::QmpError;
        let status = match &self {
            DaemonError::UnknownVm(_) => StatusCode::NOT_FOUND,
            DaemonError::BadRequest(_) => StatusCode::BAD_REQUEST,
            // Not admitted is a conflict with the host's state: it may start later.
            DaemonError::NotRunning(_) | DaemonError::Conflict(_) | DaemonError::Refused(_) => {
                StatusCode::CONFLICT
            }
            DaemonError::Qmp(QmpError::NotQmp { .. } | QmpError::Connect { .. })
            | DaemonError::Balloon(BalloonError::NoDevice)
            | DaemonError::Disk(_)
            | DaemonError::NoImage => StatusCode::BAD_REQUEST,
            DaemonError::Qmp(_) | DaemonError::Balloon(_) | DaemonError::AgentTimeout(..) => {
                StatusCode::BAD_GATEWAY
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (
            status,
            Json(ApiError {
                error: self.to_string(),
            }),
        )
            .into_response()
    }
}

/// Every route with its OpenAPI description: the router and the spec come from one list.
fn routes() -> OpenApiRouter<Arc<Daemon>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(dashboard))
        .routes(routes!(host))
        .routes(routes!(list))
        .routes(routes!(one, set))
        .routes(routes!(events))
        .routes(routes!(history))
        .routes(routes!(balloon))
        .routes(routes!(start))
        .routes(routes!(stop))
        .routes(routes!(logs))
        .routes(routes!(workload))
        .routes(routes!(verify))
        .routes(routes!(attach))
        .routes(routes!(monitor))
        .routes(routes!(translate))
        .routes(routes!(sharing))
        .routes(routes!(metrics))
        .routes(routes!(shutdown))
}

#[derive(utoipa::OpenApi)]
#[openapi(info(
    title = "memvisor",
    description = "The memory manager of a KVM/QEMU host: its VMs, the host's memory, the scheduler's events. Served on the daemon's Unix socket (DIR/memvisor.sock, mode 0600) and, when [api] listen is set, on TCP with 'Authorization: Bearer TOKEN' (the token is in DIR/api-token)."
))]
struct ApiDoc;

/// The OpenAPI 3 description of the API, as `memvisor openapi` prints it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

pub fn router(daemon: Arc<Daemon>) -> Router {
    let (router, spec) = routes().split_for_parts();
    router
        .route("/openapi.json", get(move || async move { Json(spec) }))
        .layer(axum::middleware::map_response(errors_as_json))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(daemon)
}

/// Axum's own refusals (a malformed body, a missing field, a body too large, an unknown path)
/// are plain text; every error leaves the API as `{"error": "..."}`, as the spec says.
async fn errors_as_json(response: Response) -> Response {
    use http_body_util::BodyExt;
    let json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    let status = response.status();
    if json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let text = match response.into_body().collect().await {
        Ok(body) => String::from_utf8_lossy(&body.to_bytes()).trim().to_string(),
        Err(e) => e.to_string(),
    };
    let error = if text.is_empty() {
        format!(
            "{}: see 'memvisor openapi' for the API's paths and bodies",
            status.canonical_reason().unwrap_or("refused")
        )
    } else {
        text
    };
    (status, Json(ApiError { error })).into_response()
}

/// The same API on TCP: every request carries the token, as `Authorization: Bearer TOKEN`
/// or, for a browser opening the dashboard, `?token=TOKEN`.
pub fn tcp_router(daemon: Arc<Daemon>, token: Arc<str>) -> Router {
    router(daemon).layer(axum::middleware::from_fn_with_state(token, require_token))
}

async fn require_token(
    State(token): State<Arc<str>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let header = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let query = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("token=")));
    match header.or(query) {
        Some(given) if same_secret(given.as_bytes(), token.as_bytes()) => next.run(request).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            Json(ApiError {
                error: "missing or wrong token: send 'Authorization: Bearer TOKEN' with the token in the daemon's DIR/api-token ('memvisor dashboard' prints a URL with it)".into(),
            }),
        )
            .into_response(),
    }
}

/// Compares without stopping at the first difference, so timing does not reveal the token.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[utoipa::path(get, path = "/", tag = "dashboard", responses((status = OK, description = "The web dashboard", content_type = "text/html", body = String)))]
async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("dashboard.html"))
}

#[utoipa::path(get, path = "/v1/host", tag = "host", responses((status = OK, description = "The host's figures", body = HostStatus)))]
async fn host(State(d): Shared) -> Json<HostStatus> {
    Json(d.host_status().await)
}

#[utoipa::path(get, path = "/v1/vms", tag = "vms", responses((status = OK, description = "Every VM", body = Vec<VmStatus>)))]
async fn list(State(d): Shared) -> Json<Vec<VmStatus>> {
    Json(d.statuses())
}

#[utoipa::path(get, path = "/v1/vms/{name}", tag = "vms", params(("name" = String, Path, description = "The VM's name")), responses((status = OK, body = VmStatus), (status = NOT_FOUND, description = "No such VM", body = ApiError)))]
async fn one(State(d): Shared, Path(name): Path<String>) -> Result<Json<VmStatus>, DaemonError> {
    Ok(Json(d.status(&name)?))
}

#[utoipa::path(patch, path = "/v1/vms/{name}", tag = "vms", params(("name" = String, Path, description = "The VM's name")), request_body = Change, responses((status = OK, description = "Changed live", body = VmStatus), (status = BAD_REQUEST, description = "The request is wrong; the error says how", body = ApiError), (status = NOT_FOUND, description = "No such VM", body = ApiError), (status = BAD_GATEWAY, description = "QEMU or the guest agent failed or did not answer", body = ApiError)))]
async fn set(
    State(d): Shared,
    Path(name): Path<String>,
    Json(change): Json<Change>,
) -> Result<Json<VmStatus>, DaemonError> {
    d.reconfigure(&name, change).await?;
    Ok(Json(d.status(&name)?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct EventQuery {
    /// Only events numbered after this one (`seq`); to follow, pass the last seen.
    after: Option<u64>,
}

#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventQuery), responses((status = OK, description = "Events, oldest first", body = Vec<memvisor_core::status::Event>)))]
async fn events(
    State(d): Shared,
    Query(q): Query<EventQuery>,
) -> Json<Vec<memvisor_core::status::Event>> {
    Json(d.events(q.after.unwrap_or(0)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// Only rounds after this many seconds since the daemon started.
    after: Option<f64>,
}

#[utoipa::path(get, path = "/v1/history", tag = "history", params(HistoryQuery), responses((status = OK, description = "One sample per scheduling round, oldest first", body = Vec<HistorySample>)))]
async fn history(State(d): Shared, Query(q): Query<HistoryQuery>) -> Json<Vec<HistorySample>> {
    Json(d.history(q.after.unwrap_or(-1.0)))
}

#[utoipa::path(post, path = "/v1/vms/{name}/balloon", tag = "vms", params(("name" = String, Path, description = "The VM's name")), request_body = BalloonRequest, responses((status = OK, body = VmStatus), (status = BAD_REQUEST, description = "The request is wrong; the error says how", body = ApiError), (status = UNPROCESSABLE_ENTITY, description = "The target is not a size", body = ApiError), (status = NOT_FOUND, description = "No such VM", body = ApiError), (status = CONFLICT, description = "Not possible in the VM's state", body = ApiError), (status = BAD_GATEWAY, description = "QEMU or the guest agent failed or did not answer", body = ApiError)))]
async fn balloon(
    State(d): Shared,
    Path(name): Path<String>,
    Json(req): Json<BalloonRequest>,
) -> Result<Json<VmStatus>, DaemonError> {
    let target = req.target;
    let vm = d.vm(&name)?;
    let before = vm.set_balloon(target).await?;
    let status = vm.view().status();
    d.note(
        EventKind::Operator,
        Some(&name),
        format!(
            "{name} balloon {} -> {} MiB on request",
            before.as_mib(),
            target.as_mib()
        ),
    );
    d.save_state().await;
    Ok(Json(status))
}

#[utoipa::path(post, path = "/v1/vms/{name}/start", tag = "vms", params(("name" = String, Path, description = "The VM's name")), responses((status = OK, body = VmStatus), (status = NOT_FOUND, description = "No such VM", body = ApiError), (status = CONFLICT, description = "Not possible in the VM's state, or not admitted: the host has no room for it now", body = ApiError), (status = INTERNAL_SERVER_ERROR, description = "QEMU did not start", body = ApiError)))]
async fn start(State(d): Shared, Path(name): Path<String>) -> Result<Json<VmStatus>, DaemonError> {
    d.start(&name).await?;
    Ok(Json(d.status(&name)?))
}

#[utoipa::path(post, path = "/v1/vms/{name}/stop", tag = "vms", params(("name" = String, Path, description = "The VM's name")), responses((status = OK, body = VmStatus), (status = NOT_FOUND, description = "No such VM", body = ApiError), (status = CONFLICT, description = "Not possible in the VM's state", body = ApiError)))]
async fn stop(State(d): Shared, Path(name): Path<String>) -> Result<Json<VmStatus>, DaemonError> {
    d.stop(&name).await?;
    Ok(Json(d.status(&name)?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LogQuery {
    /// How many of the last lines (default 200).
    lines: Option<usize>,
}

#[utoipa::path(get, path = "/v1/vms/{name}/logs", tag = "vms", params(("name" = String, Path, description = "The VM's name"), LogQuery), responses((status = OK, description = "The last lines of the serial console", content_type = "text/plain", body = String), (status = NOT_FOUND, description = "No such VM", body = ApiError), (status = CONFLICT, description = "Not possible in the VM's state", body = ApiError)))]
async fn logs(
    State(d): Shared,
    Path(name): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<String, DaemonError> {
    let path = d.vm(&name)?.view().serial_log.ok_or_else(|| {
        DaemonError::Conflict(format!(
            "{name} is attached; its console is wherever its QEMU sends it"
        ))
    })?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| DaemonError::Io(format!("cannot read {}: {e}", path.display())))?;
    let lines: Vec<&str> = text.lines().collect();
    let keep = q.lines.unwrap_or(200).min(lines.len());
    Ok(lines[lines.len() - keep..].join("\n") + "\n")
}

#[utoipa::path(put, path = "/v1/vms/{name}/workload", tag = "vms", params(("name" = String, Path, description = "The VM's name")), request_body = WorkloadRequest, responses((status = OK, body = VmStatus), (status = BAD_REQUEST, description = "The request is wrong; the error says how", body = ApiError), (status = UNPROCESSABLE_ENTITY, description = "Not a workload", body = ApiError), (status = NOT_FOUND, description = "No such VM", body = ApiError), (status = CONFLICT, description = "Not possible in the VM's state", body = ApiError)))]
async fn workload(
    State(d): Shared,
    Path(name): Path<String>,
    Json(req): Json<WorkloadRequest>,
) -> Result<Json<VmStatus>, DaemonError> {
    let workload = req.workload;
    let vm = d.vm(&name)?;
    vm.set_workload(workload.clone()).await?;
    let status = vm.view().status();
    d.note(
        EventKind::Operator,
        Some(&name),
        format!("{name} workload {workload} on request"),
    );
    d.save_state().await;
    Ok(Json(status))
}

#[utoipa::path(post, path = "/v1/vms/{name}/verify", tag = "vms", params(("name" = String, Path, description = "The VM's name")), responses((status = OK, body = VerifyReply), (status = NOT_FOUND, description = "No such VM", body = ApiError), (status = CONFLICT, description = "Not possible in the VM's state", body = ApiError), (status = BAD_GATEWAY, description = "QEMU or the guest agent failed or did not answer", body = ApiError)))]
async fn verify(
    State(d): Shared,
    Path(name): Path<String>,
) -> Result<Json<VerifyReply>, DaemonError> {
    let reply = d.vm(&name)?.verify().await?;
    match tokio::time::timeout(VERIFY_TIMEOUT, reply).await {
        Ok(Ok((pages, corrupt))) => Ok(Json(VerifyReply { pages, corrupt })),
        _ => Err(DaemonError::AgentTimeout(name, VERIFY_TIMEOUT)),
    }
}

#[utoipa::path(post, path = "/v1/attach", tag = "vms", request_body = AttachRequest, responses((status = OK, body = VmStatus), (status = BAD_REQUEST, description = "The request is wrong; the error says how", body = ApiError), (status = CONFLICT, description = "Not possible in the VM's state", body = ApiError), (status = BAD_GATEWAY, description = "QEMU or the guest agent failed or did not answer", body = ApiError)))]
async fn attach(
    State(d): Shared,
    Json(req): Json<AttachRequest>,
) -> Result<Json<VmStatus>, DaemonError> {
    let name = d
        .attach(super::attached::Attaching::plain(Some(req.name), req.qmp))
        .await?;
    Ok(Json(d.status(&name)?))
}

/// The longest monitor command accepted.
const MONITOR_COMMAND_MAX: usize = 1024;

#[utoipa::path(post, path = "/v1/vms/{name}/monitor", tag = "vms", params(("name" = String, Path, description = "The VM's name")), request_body = MonitorRequest, responses((status = OK, description = "What the monitor printed", content_type = "text/plain", body = String), (status = BAD_REQUEST, description = "Empty or too long", body = ApiError), (status = NOT_FOUND, description = "No such VM", body = ApiError), (status = CONFLICT, description = "Not running", body = ApiError), (status = BAD_GATEWAY, description = "QEMU failed or did not answer", body = ApiError)))]
async fn monitor(
    State(d): Shared,
    Path(name): Path<String>,
    Json(req): Json<MonitorRequest>,
) -> Result<String, DaemonError> {
    let command = req.command.trim();
    if command.is_empty() || command.len() > MONITOR_COMMAND_MAX || command.contains('\n') {
        return Err(DaemonError::BadRequest(format!(
            "give one monitor command line of 1 to {MONITOR_COMMAND_MAX} characters, e.g. 'info balloon'"
        )));
    }
    let reply = d.vm(&name)?.monitor(command.to_string()).await?;
    d.note(
        EventKind::Operator,
        Some(&name),
        format!("{name} monitor command on request: {command}"),
    );
    Ok(reply)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct TranslateQuery {
    /// held:N, a guest virtual address (0x...), or gpa:ADDRESS.
    address: String,
}

#[utoipa::path(get, path = "/v1/vms/{name}/translate", tag = "inspect", params(("name" = String, Path, description = "The VM's name"), TranslateQuery), responses((status = OK, body = Translation), (status = BAD_REQUEST, description = "The request is wrong; the error says how", body = ApiError), (status = NOT_FOUND, description = "No such VM", body = ApiError), (status = CONFLICT, description = "Not possible in the VM's state", body = ApiError), (status = BAD_GATEWAY, description = "QEMU or the guest agent failed or did not answer", body = ApiError)))]
async fn translate(
    State(d): Shared,
    Path(name): Path<String>,
    Query(q): Query<TranslateQuery>,
) -> Result<Json<Translation>, DaemonError> {
    let address: GuestAddress = q
        .address
        .parse()
        .map_err(|e: AddressError| DaemonError::BadRequest(e.to_string()))?;
    Ok(Json(d.translate(&name, address).await?))
}

#[utoipa::path(get, path = "/v1/sharing", tag = "inspect", responses((status = OK, body = SharingMatrix), (status = INTERNAL_SERVER_ERROR, description = "A page map could not be read", body = ApiError)))]
async fn sharing(State(d): Shared) -> Result<Json<SharingMatrix>, DaemonError> {
    Ok(Json(d.sharing().await?))
}

#[utoipa::path(get, path = "/metrics", tag = "host", responses((status = OK, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain", body = String)))]
async fn metrics(State(d): Shared) -> impl IntoResponse {
    let host = d.host_status().await;
    let vms = d.statuses();
    let counters = d.counters().await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        super::metrics::render(&host, &vms, &counters),
    )
}

#[utoipa::path(post, path = "/v1/shutdown", tag = "host", responses((status = ACCEPTED, description = "The daemon stops its VMs and exits")))]
async fn shutdown(State(d): Shared) -> StatusCode {
    d.shutdown.notify_one();
    StatusCode::ACCEPTED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_in_the_repository_is_the_one_the_code_serves() {
        let served: serde_json::Value = serde_json::to_value(openapi()).unwrap();
        let kept: serde_json::Value =
            serde_json::from_str(include_str!("../../../../docs/openapi.json")).unwrap();
        assert!(
            served == kept,
            "docs/openapi.json is out of date: run 'memvisor openapi > docs/openapi.json'"
        );
    }

    #[test]
    fn secrets_match_only_when_equal() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
    }
}
