//! The typed client of the daemon's API: HTTP/1.1 over its Unix socket, one method per
//! endpoint, with the request and reply types the server uses (memvisor_core::api, ::status).

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use memvisor_core::api::{
    AttachRequest, BalloonRequest, Change, MonitorRequest, VerifyReply, WorkloadRequest,
    SOCKET_NAME,
};
use memvisor_core::history::HistorySample;
use memvisor_core::sharing::SharingMatrix;
use memvisor_core::status::{Event, HostStatus, VmStatus};
use memvisor_core::translation::{GuestAddress, Translation};
use memvisor_core::workload::Workload;
use memvisor_core::Size;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no memvisor daemon answers at {0}: start one with 'memvisor up -f CONFIG.toml' (or pass the --dir it uses)")]
    NoDaemon(PathBuf),
    #[error("talking to the daemon failed: {0}")]
    Http(String),
    #[error("{0}")]
    Api(String),
    #[error("the daemon sent an answer memvisor cannot read: {0}")]
    BadAnswer(String),
}

pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// The client of the daemon whose state directory is `dir`.
    pub fn new(dir: &Path) -> Client {
        Client {
            socket: dir.join(SOCKET_NAME),
        }
    }

    /// True when a daemon answers.
    pub async fn answers(&self) -> bool {
        self.host().await.is_ok()
    }

    pub async fn host(&self) -> Result<HostStatus, ClientError> {
        self.get("/v1/host").await
    }

    pub async fn vms(&self) -> Result<Vec<VmStatus>, ClientError> {
        self.get("/v1/vms").await
    }

    pub async fn vm(&self, name: &str) -> Result<VmStatus, ClientError> {
        self.get(&format!("/v1/vms/{name}")).await
    }

    pub async fn set(&self, name: &str, change: &Change) -> Result<VmStatus, ClientError> {
        self.send(Method::PATCH, &format!("/v1/vms/{name}"), Some(change))
            .await
    }

    /// Events numbered after `after`, oldest first.
    pub async fn events(&self, after: u64) -> Result<Vec<Event>, ClientError> {
        self.get(&format!("/v1/events?after={after}")).await
    }

    /// Every scheduling round the daemon keeps.
    pub async fn history(&self) -> Result<Vec<HistorySample>, ClientError> {
        self.get("/v1/history").await
    }

    pub async fn balloon(&self, name: &str, target: Size) -> Result<VmStatus, ClientError> {
        let body = BalloonRequest { target };
        self.send(
            Method::POST,
            &format!("/v1/vms/{name}/balloon"),
            Some(&body),
        )
        .await
    }

    pub async fn start(&self, name: &str) -> Result<VmStatus, ClientError> {
        self.send::<(), _>(Method::POST, &format!("/v1/vms/{name}/start"), None)
            .await
    }

    pub async fn stop(&self, name: &str) -> Result<VmStatus, ClientError> {
        self.send::<(), _>(Method::POST, &format!("/v1/vms/{name}/stop"), None)
            .await
    }

    /// The last `lines` lines of the VM's serial console.
    pub async fn logs(&self, name: &str, lines: usize) -> Result<String, ClientError> {
        self.text::<()>(
            Method::GET,
            &format!("/v1/vms/{name}/logs?lines={lines}"),
            None,
        )
        .await
    }

    pub async fn workload(&self, name: &str, workload: &Workload) -> Result<VmStatus, ClientError> {
        let body = WorkloadRequest {
            workload: workload.clone(),
        };
        self.send(
            Method::PUT,
            &format!("/v1/vms/{name}/workload"),
            Some(&body),
        )
        .await
    }

    pub async fn verify(&self, name: &str) -> Result<VerifyReply, ClientError> {
        self.send::<(), _>(Method::POST, &format!("/v1/vms/{name}/verify"), None)
            .await
    }

    pub async fn attach(&self, request: &AttachRequest) -> Result<VmStatus, ClientError> {
        self.send(Method::POST, "/v1/attach", Some(request)).await
    }

    /// What QEMU's human monitor printed for `command`.
    pub async fn monitor(&self, name: &str, command: &str) -> Result<String, ClientError> {
        let body = MonitorRequest {
            command: command.to_string(),
        };
        self.text(
            Method::POST,
            &format!("/v1/vms/{name}/monitor"),
            Some(&body),
        )
        .await
    }

    pub async fn translate(
        &self,
        name: &str,
        address: &GuestAddress,
    ) -> Result<Translation, ClientError> {
        self.get(&format!("/v1/vms/{name}/translate?address={address}"))
            .await
    }

    pub async fn sharing(&self) -> Result<SharingMatrix, ClientError> {
        self.get("/v1/sharing").await
    }

    /// The Prometheus exposition.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        self.text::<()>(Method::GET, "/metrics", None).await
    }

    pub async fn shutdown(&self) -> Result<(), ClientError> {
        self.call::<()>(Method::POST, "/v1/shutdown", None)
            .await
            .map(drop)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send::<(), _>(Method::GET, path, None).await
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let bytes = self.call(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::BadAnswer(e.to_string()))
    }

    async fn text<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<String, ClientError> {
        let bytes = self.call(method, path, body).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Sends one request; returns the body of a 2xx answer, or the daemon's error message.
    async fn call<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Bytes, ClientError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|_| ClientError::NoDaemon(self.socket.clone()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(connection);
        let body = body
            .map(|b| serde_json::to_vec(b).expect("request bodies serialize"))
            .unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "memvisor")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes();
        if status.is_success() {
            return Ok(bytes);
        }
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| format!("{status}: {}", String::from_utf8_lossy(&bytes)));
        Err(ClientError::Api(message))
    }
}
