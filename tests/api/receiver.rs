//! A merchant's webhook receiver: a real HTTP server on a local port that
//! records every request it gets and answers as its script says (a status,
//! or no answer for a while). Plain HTTP/1.1 over tokio, one request per
//! connection, as the worker's fetch sends them.

use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request as the receiver got it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at_ms: u64,
    /// Lower-case names.
    pub headers: HashMap<String, String>,
    pub raw: String,
    pub body: Value,
}

impl Seen {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    pub fn source(&self) -> &str {
        self.body["source"].as_str().unwrap_or("")
    }
}

pub enum Answer {
    Status(u16),
    /// Keep the connection open this long, then close it unanswered.
    Hang(Duration),
}

/// What to answer a request, given it and how many requests from its
/// source came before it (0 for the first).
pub type Script = Arc<dyn Fn(&Seen, usize) -> Answer + Send + Sync>;

pub struct Receiver {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Answers 200 to everything.
    pub async fn accepting() -> Receiver {
        Receiver::start(0, Arc::new(|_, _| Answer::Status(200))).await
    }

    /// Listens on `port` (0: any free one).
    pub async fn start(port: u16, script: Script) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the receiver");
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    continue;
                };
                let (log, script) = (log.clone(), script.clone());
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut socket).await else {
                        return;
                    };
                    let answer = {
                        let mut log = log.lock().unwrap();
                        let before = log
                            .iter()
                            .filter(|s| s.source() == request.source())
                            .count();
                        log.push(request.clone());
                        script(&request, before)
                    };
                    match answer {
                        Answer::Status(status) => {
                            let head = format!(
                                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            );
                            let _ = socket.write_all(head.as_bytes()).await;
                            let _ = socket.shutdown().await;
                        }
                        Answer::Hang(time) => tokio::time::sleep(time).await,
                    }
                });
            }
        });
        Receiver { port, seen, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What came from `source` (`sku:<id>`, `order:<id>`), in arrival order.
    pub fn sent_by(&self, source: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.source() == source)
            .cloned()
            .collect()
    }

    /// Waits (up to `secs`) until `source` sent `n` requests; returns them.
    pub async fn wait_for(&self, source: &str, n: usize, secs: u64) -> Vec<Seen> {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.sent_by(source);
            if got.len() >= n {
                return got;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{source}: {} of {n} requests within {secs} s: {:?}",
                got.len(),
                got.iter().map(|s| &s.body["type"]).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<Seen> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let headers: HashMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let raw = String::from_utf8_lossy(&buffer[head_end..]).to_string();
    Some(Seen {
        at_ms: super::app::now_ms(),
        body: serde_json::from_str(&raw).unwrap_or(Value::Null),
        headers,
        raw,
    })
}
