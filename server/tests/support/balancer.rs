//! An nginx load balancer in front of several `ferry-server` processes, as an operator runs
//! Ferry past one process: round robin over the upstreams, keep-alive connections to them,
//! request bodies held in memory. Shared by the API tests and the ingest bench (included by
//! path), so it uses nothing of either. nginx comes from Debian's `nginx-light`, installed by
//! `scripts/setup.sh`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NGINX: &str = "/usr/sbin/nginx";

/// A running nginx; stopped when dropped, its directory removed.
pub struct Balancer {
    child: Child,
    dir: PathBuf,
    /// `http://127.0.0.1:<port>`: where clients send their requests.
    pub url: String,
    upstreams: Vec<String>,
}

impl Balancer {
    /// Starts nginx on a free loopback port with `upstreams` (`http://host:port` each) behind
    /// it, and waits (at most 10 s) until it accepts connections.
    pub fn start(upstreams: &[String]) -> Result<Self, String> {
        if !std::path::Path::new(NGINX).exists() {
            return Err(format!(
                "{NGINX} is missing: run scripts/setup.sh (apt-get install nginx-light)"
            ));
        }
        let upstreams: Vec<String> = upstreams
            .iter()
            .map(|u| {
                u.trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_owned()
            })
            .collect();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("no free port for nginx: {e}"))?;
        let dir = std::env::temp_dir().join(format!("ferry-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let servers: String = upstreams
            .iter()
            .map(|u| format!("    server {u} max_fails=0;\n"))
            .collect();
        let d = dir.display();
        // Bodies up to 64 MiB stay in memory (no temporary files), as the server's own limit is
        // far below; a request is never retried on another upstream (POST is not idempotent).
        let config = format!(
            "daemon off;\n\
             worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n\
               log_format upstream '$upstream_addr $status';\n\
               access_log {d}/access.log upstream;\n\
               client_body_temp_path {d}/body;\n\
               proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n\
               uwsgi_temp_path {d}/uwsgi;\n\
               scgi_temp_path {d}/scgi;\n\
               upstream ferry {{\n{servers}    keepalive 256;\n  }}\n\
               server {{\n\
                 listen 127.0.0.1:{port};\n\
                 client_max_body_size 64m;\n\
                 client_body_buffer_size 64m;\n\
                 location / {{\n\
                   proxy_pass http://ferry;\n\
                   proxy_http_version 1.1;\n\
                   proxy_set_header Connection \"\";\n\
                   proxy_set_header X-Forwarded-For $remote_addr;\n\
                   proxy_next_upstream off;\n\
                   proxy_read_timeout 120s;\n\
                 }}\n\
               }}\n\
             }}\n"
        );
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config).map_err(|e| format!("write {}: {e}", conf.display()))?;
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {NGINX}: {e}"))?;
        let mut balancer = Self {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
            upstreams,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = balancer.child.try_wait() {
                return Err(format!("nginx exited ({status}):\n{}", balancer.log()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nginx did not listen within 10 s:\n{}",
                    balancer.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(balancer)
    }

    /// How many requests nginx has passed to each upstream so far, in the order given to
    /// [`Balancer::start`] (the access log is written as each request ends).
    pub fn requests_per_upstream(&self) -> Vec<usize> {
        let log = std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default();
        self.upstreams
            .iter()
            .map(|u| {
                log.lines()
                    .filter(|l| l.split_whitespace().next() == Some(u.as_str()))
                    .count()
            })
            .collect()
    }

    /// The error log's lines at level `error` or worse (an upstream refused or reset, a
    /// timeout): none when every request went through.
    pub fn errors(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| {
                ["[error]", "[crit]", "[alert]", "[emerg]"]
                    .iter()
                    .any(|e| l.contains(e))
            })
            .map(str::to_owned)
            .collect()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        // SIGTERM is nginx's fast shutdown; SIGKILL if it lingers.
        let _ignored = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ignored = self.child.kill();
        }
        let _ignored = self.child.wait();
        let _ignored = std::fs::remove_dir_all(&self.dir);
    }
}
