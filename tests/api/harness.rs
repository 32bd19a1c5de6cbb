//! Starts and stops the real runtime: `wrangler dev` (workerd) on a free
//! loopback port, with its own persisted state directory and admin token.
//! The worker is built once up front; the server runs it prebuilt.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The socket cap per feed the test server runs with.
pub const FEED_SOCKETS_MAX: usize = 8;

pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub state_dir: PathBuf,
    pub env_file: PathBuf,
    pub log: PathBuf,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Waits until `base` answers its health check; fails if the process
/// exits first or `seconds` pass.
async fn wait_healthy(
    what: &str,
    base: &str,
    child: &mut Option<Child>,
    log: &std::path::Path,
    seconds: u64,
) {
    let health = format!("{base}/api/health");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Ok(r) = client.get(&health).send().await {
            if r.status() == 200 {
                return;
            }
        }
        if let Some(Ok(Some(status))) = child.as_mut().map(|c| c.try_wait()) {
            panic!("{what} exited ({status}); see {}", log.display());
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not answer in time; see {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Builds the worker once (scripts/build.sh, as wrangler would).
pub fn build() {
    let status = Command::new("bash")
        .arg("scripts/build.sh")
        .current_dir(root())
        .status()
        .expect("run scripts/build.sh");
    assert!(status.success(), "the worker build failed");
}

/// The secrets the server under test runs with.
pub struct Secrets {
    pub admin: String,
    pub session: String,
    pub payment: String,
    /// LEDGER_SIGNING_KEY: an Ed25519 seed, 64 hex digits.
    pub ledger: String,
}

/// The port the example shop (another origin, tests/browser/kit.mjs)
/// serves on: chosen with the server, which allows it in ALLOWED_ORIGINS.
pub static SHOP_PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();

impl Server {
    /// Prepares a fresh state directory and secrets file under target/.
    pub fn new(secrets: &Secrets) -> Server {
        let dir = root().join("target").join("api-tests");
        let state_dir = dir.join("state");
        let _ = std::fs::remove_dir_all(&state_dir);
        std::fs::create_dir_all(&state_dir).expect("state dir");
        let _ = std::fs::remove_file(dir.join("wrangler.log"));
        let env_file = dir.join("test.env");
        // The storefront origin the live tests use for cross-origin checks.
        // Dev mode on: the browser test buys through the dev session and
        // payment routes, as a developer's pages do. A small socket cap per
        // feed, so a test can meet it. A short webhook timeout, so a test
        // of a receiver that never answers takes seconds.
        let shop = *SHOP_PORT.get_or_init(free_port);
        let vars = format!(
            "ADMIN_TOKEN={}\nBUYER_SESSION_SECRET={}\nPAYMENT_WEBHOOK_SECRET={}\nDEV_SESSIONS=1\nALLOWED_ORIGINS=http://shop.example,http://127.0.0.1:{shop}\nFEED_SOCKETS_MAX={}\nWEBHOOK_TIMEOUT_MS=2500\nLEDGER_SIGNING_KEY={}\nCARRIER_WEBHOOK_SECRET={}-carriers\n",
            secrets.admin, secrets.session, secrets.payment, FEED_SOCKETS_MAX, secrets.ledger, secrets.admin
        );
        std::fs::write(&env_file, vars).expect("env file");
        Server {
            child: None,
            port: free_port(),
            state_dir,
            env_file,
            log: dir.join("wrangler.log"),
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts wrangler dev on the same port and state, and waits until the
    /// worker answers.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut command = Command::new(root().join("node_modules/.bin/wrangler"));
        command
            .args(["dev", "--ip", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--inspector-port", &free_port().to_string()])
            .arg("--persist-to")
            .arg(&self.state_dir)
            .arg("--env-file")
            .arg(&self.env_file)
            .args([
                "--show-interactive-dev-session=false",
                "--log-level",
                "warn",
            ])
            .current_dir(root())
            .env("EDGESTOCK_PREBUILT", "1")
            .env("WRANGLER_SEND_METRICS", "false")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        // Its own process group, so stopping it stops workerd too.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        self.child = Some(command.spawn().expect("start wrangler dev"));
        let base = self.base();
        wait_healthy("wrangler dev", &base, &mut self.child, &self.log, 180).await;
    }

    /// Stops the server: SIGTERM to its process group, then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = format!("-{}", child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = child.wait();
        // The port must be free again before a restart binds it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpListener::bind(("127.0.0.1", self.port)).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Bare workerd serving the same build, with no wrangler in front: the one
/// process the kill test SIGKILLs and starts again on the same state. Its
/// config is bench/workerd.capnp.in, filled in as bench/run.sh does, with
/// this run's secrets.
pub struct Workerd {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    config: PathBuf,
    pub log: PathBuf,
}

impl Workerd {
    pub fn new(secrets: &Secrets, hold_cap: u32) -> Workerd {
        let root = root();
        let dir = root.join("target").join("api-tests").join("kill");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("state")).expect("state dir");
        std::fs::create_dir_all(dir.join("build")).expect("build dir");
        for file in ["index.js", "index_bg.wasm"] {
            std::fs::copy(root.join("build").join(file), dir.join("build").join(file))
                .expect("the built worker (scripts/build.sh)");
        }
        std::fs::copy(
            root.join("node_modules/miniflare/dist/src/workers/ratelimit/ratelimit.worker.js"),
            dir.join("ratelimit.worker.js"),
        )
        .expect("miniflare's rate limiter (npm ci)");
        let port = free_port();
        let template =
            std::fs::read_to_string(root.join("bench/workerd.capnp.in")).expect("config template");
        let config = template
            .replace("@STATE@", &dir.join("state").display().to_string())
            .replace("@PORT@", &port.to_string())
            .replace("@BUILD@", "build")
            .replace("@RATELIMIT@", "ratelimit.worker.js")
            .replace(
                "@RISK_BINDING@",
                r#"(name = "RISK", durableObjectNamespace = "RiskObject"), (name = "HOOK", durableObjectNamespace = "HookObject"),"#,
            )
            .replace(
                "@RISK_NAMESPACE@",
                r#"(className = "RiskObject", uniqueKey = "edgestock-risk", enableSql = true), (className = "HookObject", uniqueKey = "edgestock-hook", enableSql = true),"#,
            )
            .replace("@HOLD_CAP@", &hold_cap.to_string())
            .replace("@MERGE@", "1")
            .replace("bench-admin-token", &secrets.admin)
            .replace("bench-session-secret", &secrets.session)
            .replace("bench-payment-secret", &secrets.payment)
            .replace(&"be".repeat(32), &secrets.ledger);
        let config_path = dir.join("config.capnp");
        std::fs::write(&config_path, config).expect("config");
        Workerd {
            child: None,
            port,
            log: dir.join("workerd.log"),
            dir,
            config: config_path,
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let workerd = root().join("node_modules/@cloudflare/workerd-linux-64/bin/workerd");
        let child = Command::new(workerd)
            .args(["serve", "--experimental"])
            .arg(&self.config)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start workerd");
        self.child = Some(child);
        let base = self.base();
        wait_healthy("workerd", &base, &mut self.child, &self.log, 60).await;
    }

    /// SIGKILL: no shutdown, no flush, mid-request.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Workerd {
    fn drop(&mut self) {
        self.kill();
    }
}
