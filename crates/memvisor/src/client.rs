//! The CLI's side of the API: HTTP/1.1 over the daemon's Unix socket.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::{Path, PathBuf};
use tokio::net::UnixStream;

pub const SOCKET_NAME: &str = "memvisor.sock";

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
    pub fn new(dir: &Path) -> Client {
        Client {
            socket: dir.join(SOCKET_NAME),
        }
    }

    /// Sends one request; returns the body of a 2xx answer, or the daemon's error message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Bytes, ClientError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|_| ClientError::NoDaemon(self.socket.clone()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(connection);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
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
        let message = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| format!("{status}: {}", String::from_utf8_lossy(&bytes)));
        Err(ClientError::Api(message))
    }

    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, ClientError> {
        let bytes = self.call(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::BadAnswer(e.to_string()))
    }
}

/// True when a daemon answers on `socket`.
pub async fn daemon_answers(socket: &Path) -> bool {
    let client = Client {
        socket: socket.to_path_buf(),
    };
    client.call(Method::GET, "/v1/host", None).await.is_ok()
}
