//! A private PostgreSQL cluster run from the PostgreSQL binaries already on this machine.
//!
//! Without `DATABASE_URL` the server starts one of these (in `<repo>/.ferry/pgdata`), and the
//! test harness starts one per test binary, so nobody needs a database server set up by hand.
//! The cluster is created with `initdb` only when its data directory is empty, started with
//! `pg_ctl` listening on a Unix socket in a private directory (or on a loopback port), kept
//! between runs, and stopped with `pg_ctl stop -m fast` when [`EmbeddedPg`] is dropped (which
//! returns once the postmaster process itself is gone, not merely its `postmaster.pid`).
//!
//! Things this module copes with, because they happen:
//! - **Running as root.** `initdb` and `postgres` refuse to run as root, so every PostgreSQL
//!   command runs as the `postgres` system user (`runuser -u postgres --`), the data and socket
//!   directories are handed to that user, and every parent folder must let it through.
//! - **Ctrl-C.** PostgreSQL runs in its own process group, so the terminal's SIGINT reaches the
//!   server only; the server finishes its requests, then stops the cluster itself.
//! - **Two processes, one data directory.** `<data_dir>.lock` (an `flock`) lets only one
//!   process drive a cluster; the second gets an error naming the first.
//! - **A killed server.** A cluster left running by an earlier run on the same data directory is
//!   stopped and started again with this run's settings; a stale `postmaster.pid` left by a
//!   killed postmaster is handled by `pg_ctl start` (retried once). [`EmbeddedPg::stop_on_exit`]
//!   adds a watchdog process that stops the cluster when this process exits in any way, even
//!   by SIGKILL.
//! - **No binaries.** The error says how to install them.
//!
//! Everything here is blocking (it runs external commands); call it from `spawn_blocking` or
//! before the async runtime matters.

use std::ffi::{OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Name of the superuser role `initdb` creates; the server connects as this role.
pub const SUPERUSER: &str = "postgres";

/// The system user that runs PostgreSQL when this process is root.
const POSTGRES_SYSTEM_USER: &str = "postgres";

/// Longest Unix socket path the kernel accepts (`sun_path` is 108 bytes with the final NUL).
const MAX_SOCKET_PATH: usize = 107;

/// How the install hint reads in every "no binaries" error.
const INSTALL_HINT: &str = "install them (Debian/Ubuntu: `apt-get install postgresql`), point \
                            FERRY_PG_BIN at the folder holding initdb, pg_ctl and postgres, or \
                            set DATABASE_URL to use an existing PostgreSQL server";

/// Why the embedded cluster could not be found, created, started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedPgError {
    /// No folder with `initdb`, `pg_ctl` and `postgres` was found.
    #[error(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found; looked in: {searched}. To fix it, {INSTALL_HINT}"
    )]
    NoBinaries {
        /// Where we looked, for the message.
        searched: String,
    },
    /// This process is root and there is no `postgres` system user to run PostgreSQL as.
    #[error(
        "running as root, and PostgreSQL refuses to run as root, but there is no `{POSTGRES_SYSTEM_USER}` system user to run it as: `apt-get install postgresql` creates one (or run the server as an ordinary user)"
    )]
    NoPostgresUser,
    /// `runuser` (util-linux), needed to run PostgreSQL as another user, is missing.
    #[error(
        "running as root needs `runuser` (util-linux) to start PostgreSQL as the `{POSTGRES_SYSTEM_USER}` user, and it is not installed"
    )]
    NoRunuser,
    /// A file-system operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A PostgreSQL command failed.
    #[error("`{command}` failed ({status}): {output}")]
    Command {
        /// The command line, for the message.
        command: String,
        /// How it ended.
        status: String,
        /// What it (or the server log) said.
        output: String,
    },
    /// The data directory has files but is not a PostgreSQL cluster.
    #[error("{} is not empty and holds no PostgreSQL cluster (no PG_VERSION file); empty it or choose another FERRY_PG_DATA", .0.display())]
    NotACluster(PathBuf),
    /// The data directory was made by another major version of PostgreSQL.
    #[error("the cluster in {} was made by PostgreSQL {data_version}, but the binaries found ({}) are PostgreSQL {binary_version}; point FERRY_PG_BIN at version {data_version}'s binaries or choose another FERRY_PG_DATA", data_dir.display(), bin_dir.display())]
    VersionMismatch {
        /// The data directory.
        data_dir: PathBuf,
        /// Its `PG_VERSION`.
        data_version: String,
        /// Where the binaries are.
        bin_dir: PathBuf,
        /// Their major version.
        binary_version: u32,
    },
    /// The `postgres` user cannot reach the data or socket directory.
    #[error("the `{user}` system user cannot enter {} (it needs execute permission on every parent folder of the data and socket directories); run `chmod o+x {}` or choose another FERRY_PG_DATA / FERRY_PG_SOCKET_DIR", path.display(), path.display())]
    NotTraversable {
        /// The folder it cannot enter.
        path: PathBuf,
        /// The user.
        user: String,
    },
    /// The socket path would exceed what the kernel accepts.
    #[error(
        "the PostgreSQL socket path {path} is {len} bytes, longer than the {MAX_SOCKET_PATH} a Unix socket may have; set FERRY_PG_SOCKET_DIR to a shorter folder or use FERRY_PG_LISTEN=tcp"
    )]
    SocketPathTooLong {
        /// The would-be socket path.
        path: String,
        /// Its length.
        len: usize,
    },
    /// A path holds a character PostgreSQL's option parsing or `pg_ctl`'s shell would mangle.
    #[error("the path {} contains a quote, backslash, comma, `$`, backtick or whitespace, which PostgreSQL's command line cannot carry; choose another path", .0.display())]
    UnsafePath(PathBuf),
    /// Every way of picking a free loopback port failed.
    #[error("cannot find a free TCP port on 127.0.0.1: {0}")]
    NoFreePort(#[source] io::Error),
    /// Another live process holds the data directory.
    #[error("the embedded cluster in {} is in use by another process ({holder}); stop it first, or give this one its own FERRY_PG_DATA", data_dir.display())]
    InUse {
        /// The data directory.
        data_dir: PathBuf,
        /// Who holds it, as far as the lock file says.
        holder: String,
    },
    /// `pg_ctl stop` returned, but the postmaster process did not go away.
    #[error("the postmaster (pid {pid}) of the cluster in {} was still running {waited_secs} s after `pg_ctl stop` returned", data_dir.display())]
    StillRunning {
        /// The data directory.
        data_dir: PathBuf,
        /// The postmaster's process id.
        pid: u32,
        /// How long we waited.
        waited_secs: u64,
    },
    /// The watchdog may only delete the data directory or its parent.
    #[error("refusing to let the watchdog delete {}: it is neither the data directory nor its parent", .0.display())]
    RefusedRemoval(PathBuf),
}

type Result<T> = std::result::Result<T, EmbeddedPgError>;

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> EmbeddedPgError {
    let path = path.to_path_buf();
    move |source| EmbeddedPgError::Io {
        action,
        path,
        source,
    }
}

/// The folder holding `initdb`, `pg_ctl` and `postgres`, and their major version.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    bin_dir: PathBuf,
    major_version: u32,
}

impl PgBinaries {
    /// Finds the binaries: in `explicit` when given (nowhere else), otherwise on `PATH`, then
    /// through `pg_config --bindir`, then in the highest `/usr/lib/postgresql/<version>/bin`.
    pub fn locate(explicit: Option<&Path>) -> Result<Self> {
        if let Some(dir) = explicit {
            return Self::in_dir(dir).ok_or_else(|| EmbeddedPgError::NoBinaries {
                searched: format!("{} (FERRY_PG_BIN)", dir.display()),
            });
        }
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                // Follow the symlink so that `postgres` is looked up beside the real initdb.
                let Ok(initdb) = fs::canonicalize(dir.join("initdb")) else {
                    continue;
                };
                if let Some(found) = initdb.parent().and_then(Self::in_dir) {
                    return Ok(found);
                }
            }
        }
        if let Ok(out) = Command::new("pg_config")
            .arg("--bindir")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            && out.status.success()
        {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if let Some(found) = Self::in_dir(&dir) {
                return Ok(found);
            }
        }
        let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
                Some((version, entry.path().join("bin")))
            })
            .collect();
        versions.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
        for (_, dir) in versions {
            if let Some(found) = Self::in_dir(&dir) {
                return Ok(found);
            }
        }
        Err(EmbeddedPgError::NoBinaries {
            searched: "PATH, `pg_config --bindir`, /usr/lib/postgresql/*/bin".to_owned(),
        })
    }

    /// The binaries in `dir`, if all three are there and `postgres --version` answers.
    fn in_dir(dir: &Path) -> Option<Self> {
        let all_there = ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|tool| dir.join(tool).is_file());
        if !all_there {
            return None;
        }
        let out = Command::new(dir.join("postgres"))
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .ok()?;
        let major_version = parse_major_version(&String::from_utf8_lossy(&out.stdout))?;
        Some(Self {
            bin_dir: dir.to_path_buf(),
            major_version,
        })
    }

    /// The folder holding the binaries.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The major version, e.g. 15.
    pub fn major_version(&self) -> u32 {
        self.major_version
    }

    fn tool(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
}

/// The major version in `postgres --version` output: `postgres (PostgreSQL) 15.8 (Debian …)`.
fn parse_major_version(output: &str) -> Option<u32> {
    let after = output.split(')').nth(1)?.trim_start();
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Who runs the PostgreSQL commands: this process's user, or `postgres` when we are root.
#[derive(Debug, Clone)]
struct Runner {
    run_as: Option<SystemUser>,
}

#[derive(Debug, Clone)]
struct SystemUser {
    name: String,
    uid: u32,
    gid: u32,
    runuser: PathBuf,
}

impl Runner {
    fn for_this_process() -> Result<Self> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(Self { run_as: None });
        }
        let user = nix::unistd::User::from_name(POSTGRES_SYSTEM_USER)
            .ok()
            .flatten()
            .ok_or(EmbeddedPgError::NoPostgresUser)?;
        let runuser = find_program("runuser", &["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
            .ok_or(EmbeddedPgError::NoRunuser)?;
        Ok(Self {
            run_as: Some(SystemUser {
                name: user.name,
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
                runuser,
            }),
        })
    }

    /// A command for `program`, run as the right user, in its own process group (so the
    /// terminal's Ctrl-C does not reach PostgreSQL), from `/` (the postgres user may not be
    /// allowed into our working directory).
    fn command(&self, program: &Path) -> Command {
        let mut command = match &self.run_as {
            Some(user) => {
                let mut command = Command::new(&user.runuser);
                command.arg("-u").arg(&user.name).arg("--").arg(program);
                command
            }
            None => Command::new(program),
        };
        command
            .current_dir("/")
            .stdin(Stdio::null())
            .process_group(0);
        command
    }

    /// Creates `dir` (and parents) and hands it to the PostgreSQL user with mode `0700`.
    fn prepare_private_dir(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir).map_err(io_error("create", dir))?;
        if let Some(user) = &self.run_as {
            std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid))
                .map_err(io_error("change the owner of", dir))?;
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io_error("set the permissions of", dir))?;
        self.check_traversable(dir)
    }

    /// Creates (or keeps) `file` and hands it to the PostgreSQL user.
    fn prepare_file(&self, file: &Path) -> Result<()> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .map_err(io_error("create", file))?;
        if let Some(user) = &self.run_as {
            std::os::unix::fs::chown(file, Some(user.uid), Some(user.gid))
                .map_err(io_error("change the owner of", file))?;
        }
        Ok(())
    }

    /// Every parent folder of `dir` must let the PostgreSQL user through.
    fn check_traversable(&self, dir: &Path) -> Result<()> {
        let Some(user) = &self.run_as else {
            return Ok(());
        };
        for ancestor in dir.ancestors().skip(1) {
            let meta = fs::metadata(ancestor).map_err(io_error("inspect", ancestor))?;
            let mode = meta.mode();
            let enterable = if meta.uid() == user.uid {
                mode & 0o100 != 0
            } else if meta.gid() == user.gid {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            };
            if !enterable {
                return Err(EmbeddedPgError::NotTraversable {
                    path: ancestor.to_path_buf(),
                    user: user.name.clone(),
                });
            }
        }
        Ok(())
    }
}

fn find_program(name: &str, extra_dirs: &[&str]) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(extra_dirs.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Where the cluster listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A Unix socket `.s.PGSQL.<port>` in `dir`, nothing on the network.
    UnixSocket {
        /// The socket directory (private to the PostgreSQL user).
        dir: PathBuf,
        /// The port number, which only names the socket file.
        port: u16,
    },
    /// TCP on 127.0.0.1.
    Loopback {
        /// The port; `None` picks a free one.
        port: Option<u16>,
    },
}

/// What [`EmbeddedPg::start`] needs to know.
#[derive(Debug, Clone)]
pub struct EmbeddedPgOptions {
    /// The data directory; created with `initdb` when empty or missing.
    pub data_dir: PathBuf,
    /// Where the cluster listens.
    pub listen: Listen,
    /// The folder holding the binaries; `None` searches for them.
    pub bin_dir: Option<PathBuf>,
    /// Throwaway data (tests): no fsync, `initdb --no-sync`, `pg_ctl stop -m immediate`.
    pub ephemeral: bool,
    /// More server settings, as `(name, value)`, passed as `-c name=value` at start (e.g.
    /// `shared_preload_libraries`).
    pub settings: Vec<(String, String)>,
}

impl EmbeddedPgOptions {
    /// Options for a cluster in `data_dir` listening on a socket in `socket_dir`.
    pub fn unix_socket(data_dir: impl Into<PathBuf>, socket_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: Listen::UnixSocket {
                dir: socket_dir.into(),
                port: 5432,
            },
            bin_dir: None,
            ephemeral: false,
            settings: Vec::new(),
        }
    }
}

/// A running private PostgreSQL cluster; dropping it stops the cluster.
#[derive(Debug)]
pub struct EmbeddedPg {
    binaries: PgBinaries,
    runner: Runner,
    data_dir: PathBuf,
    socket_dir: Option<PathBuf>,
    port: u16,
    log_file: PathBuf,
    ephemeral: bool,
    settings: Vec<(String, String)>,
    running: bool,
    watchdog: Option<Watchdog>,
    // Held for the cluster's lifetime: one process per data directory.
    _lock: Flock<fs::File>,
}

#[derive(Debug)]
struct Watchdog {
    // Held only to be closed: the watchdog stops the cluster when its stdin reaches EOF.
    _stdin: ChildStdin,
    child: Child,
}

impl EmbeddedPg {
    /// Finds the binaries, creates the cluster if its data directory is empty, and starts it.
    pub fn start(options: EmbeddedPgOptions) -> Result<Self> {
        let binaries = PgBinaries::locate(options.bin_dir.as_deref())?;
        let runner = Runner::for_this_process()?;

        let data_dir = absolute(&options.data_dir)?;
        check_path_is_safe(&data_dir)?;
        let lock = lock_data_dir(&data_dir)?;
        let log_file = log_file_for(&data_dir);
        check_path_is_safe(&log_file)?;
        runner.prepare_private_dir(&data_dir)?;
        runner.prepare_file(&log_file)?;

        let (socket_dir, port) = match &options.listen {
            Listen::UnixSocket { dir, port } => {
                let dir = absolute(dir)?;
                check_path_is_safe(&dir)?;
                let socket = dir.join(format!(".s.PGSQL.{port}"));
                let len = socket.as_os_str().len();
                if len > MAX_SOCKET_PATH {
                    return Err(EmbeddedPgError::SocketPathTooLong {
                        path: socket.display().to_string(),
                        len,
                    });
                }
                runner.prepare_private_dir(&dir)?;
                (Some(dir), *port)
            }
            Listen::Loopback { port: Some(port) } => (None, *port),
            Listen::Loopback { port: None } => (None, free_loopback_port()?),
        };

        let mut cluster = Self {
            binaries,
            runner,
            data_dir,
            socket_dir,
            port,
            log_file,
            ephemeral: options.ephemeral,
            settings: options.settings,
            running: false,
            watchdog: None,
            _lock: lock,
        };
        cluster.initdb_if_empty()?;
        cluster.clear_stale_pid_file()?;
        // We hold the lock, so a postmaster running here was left by a process that is gone.
        if cluster.is_running()? {
            tracing::warn!(
                data_dir = %cluster.data_dir.display(),
                "a PostgreSQL cluster from an earlier run is still running on this data directory; restarting it with this run's settings"
            );
            cluster.pg_ctl_stop("fast")?;
        }
        cluster.pg_ctl_start()?;
        cluster.running = true;
        tracing::info!(
            version = cluster.binaries.major_version,
            data_dir = %cluster.data_dir.display(),
            listen = %cluster.describe_listen(),
            "embedded PostgreSQL started"
        );
        Ok(cluster)
    }

    /// The data directory (absolute).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server log file (beside the data directory).
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The socket directory, when listening on a Unix socket.
    pub fn socket_dir(&self) -> Option<&Path> {
        self.socket_dir.as_deref()
    }

    /// The port (TCP port, or the number in the socket file name).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The binaries in use.
    pub fn binaries(&self) -> &PgBinaries {
        &self.binaries
    }

    /// Where the cluster listens, for humans.
    pub fn describe_listen(&self) -> String {
        match &self.socket_dir {
            Some(dir) => format!("unix socket {}/.s.PGSQL.{}", dir.display(), self.port),
            None => format!("127.0.0.1:{}", self.port),
        }
    }

    /// Connection settings for database `dbname`, as the superuser.
    pub fn config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        match &self.socket_dir {
            Some(dir) => config.host_path(dir),
            None => config.host("127.0.0.1"),
        };
        config.port(self.port).user(SUPERUSER).dbname(dbname);
        config
    }

    /// The same as [`config`](Self::config), as a `key=value` connection string (no password:
    /// the cluster trusts local connections).
    pub fn connection_string(&self, dbname: &str) -> String {
        let host = match &self.socket_dir {
            Some(dir) => dir.display().to_string(),
            None => "127.0.0.1".to_owned(),
        };
        format!(
            "host={} port={} user={} dbname={}",
            quote_conninfo(&host),
            self.port,
            quote_conninfo(SUPERUSER),
            quote_conninfo(dbname)
        )
    }

    /// The postmaster's process id, from `postmaster.pid`.
    pub fn postmaster_pid(&self) -> Option<u32> {
        read_postmaster_pid(&self.data_dir)
    }

    /// Whether a postmaster runs on this data directory (`pg_ctl status`).
    pub fn is_running(&self) -> Result<bool> {
        let mut command = self.runner.command(&self.binaries.tool("pg_ctl"));
        command.arg("status").arg("-D").arg(&self.data_dir);
        let output = run(&mut command)?;
        // pg_ctl status: 0 running, 3 not running, 4 no accessible data directory.
        match output.status.code() {
            Some(0) => Ok(true),
            Some(3) => Ok(false),
            _ => Err(command_error(&command, &output, None)),
        }
    }

    /// Stops the cluster (`pg_ctl stop -m fast`, or `immediate` when ephemeral) and waits until
    /// the postmaster process has exited.
    /// Stopping a stopped cluster does nothing.
    pub fn stop(&mut self) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        let mode = if self.ephemeral { "immediate" } else { "fast" };
        if self.is_running()? {
            self.pg_ctl_stop(mode)?;
        }
        self.running = false;
        tracing::info!(data_dir = %self.data_dir.display(), "embedded PostgreSQL stopped");
        Ok(())
    }

    /// Starts a watchdog process that stops this cluster when the current process exits, however
    /// it exits (even SIGKILL, which runs no destructor), and then deletes `remove_after` if given
    /// (which must be the data directory or its parent).
    ///
    /// The watchdog is a shell reading a pipe from this process: when the pipe closes, it runs
    /// `pg_ctl stop`. It ignores SIGINT/SIGTERM/SIGHUP and runs in its own process group, so
    /// only the end of this process sets it off.
    pub fn stop_on_exit(&mut self, remove_after: Option<&Path>) -> Result<()> {
        if let Some(dir) = remove_after
            && dir != self.data_dir
            && Some(dir) != self.data_dir.parent()
        {
            return Err(EmbeddedPgError::RefusedRemoval(dir.to_path_buf()));
        }
        // Throwaway clusters may crash-stop; a real one gets a clean shutdown.
        let stop = self.pg_ctl_stop_command(if self.ephemeral { "immediate" } else { "fast" });
        const SCRIPT: &str = r#"trap '' INT TERM HUP
while read -r _ignored; do :; done
remove="$1"; shift
"$@" >/dev/null 2>&1
if [ -n "$remove" ]; then rm -rf -- "$remove"; fi"#;
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(SCRIPT)
            .arg("ferry-pg-watchdog")
            .arg(remove_after.map(Path::as_os_str).unwrap_or(OsStr::new("")))
            .arg(stop.get_program())
            .args(stop.get_args())
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let mut child = command
            .spawn()
            .map_err(io_error("start the watchdog", Path::new("/bin/sh")))?;
        let stdin = child.stdin.take().ok_or_else(|| EmbeddedPgError::Io {
            action: "open a pipe to",
            path: PathBuf::from("/bin/sh"),
            source: io::Error::other("no stdin"),
        })?;
        self.watchdog = Some(Watchdog {
            _stdin: stdin,
            child,
        });
        Ok(())
    }

    /// Gives the cluster up *without* stopping it, as if this process had been killed: the
    /// watchdog is disarmed and the data directory lock released. The cluster keeps running
    /// until the next [`start`](Self::start) on its data directory restarts it.
    pub fn detach(mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ignored = watchdog.child.kill();
            let _ignored = watchdog.child.wait();
        }
        self.running = false;
    }

    /// Stops whatever cluster runs on `data_dir` (`pg_ctl stop -m immediate`), if any: for
    /// cleaning up after a run that was killed.
    pub fn stop_abandoned(data_dir: &Path, bin_dir: Option<&Path>) -> Result<()> {
        let binaries = PgBinaries::locate(bin_dir)?;
        let runner = Runner::for_this_process()?;
        let postmaster = read_postmaster_pid(data_dir).map(|pid| (pid, process_start_time(pid)));
        let mut command = runner.command(&binaries.tool("pg_ctl"));
        command
            .arg("stop")
            .arg("-D")
            .arg(data_dir)
            .arg("-m")
            .arg("immediate")
            .arg("-w");
        // Exit status 1 means "no server running": nothing to do.
        run(&mut command)?;
        match postmaster {
            Some((pid, started)) => wait_until_gone(data_dir, pid, started),
            None => Ok(()),
        }
    }

    /// Removes `postmaster.pid` when the process it names is certainly not a live postmaster
    /// (gone, a zombie, or another program that got the pid).
    ///
    /// PostgreSQL and `pg_ctl` test the pid with `kill(pid, 0)`, which succeeds on a zombie: on
    /// a machine whose init does not reap orphans, a killed postmaster stays a zombie and would
    /// block every later start ("is another postmaster running?") and fool `pg_ctl status`.
    fn clear_stale_pid_file(&self) -> Result<()> {
        let Some(pid) = self.postmaster_pid() else {
            return Ok(());
        };
        if process_may_be_live_postgres(pid) {
            return Ok(());
        }
        let pid_file = self.data_dir.join("postmaster.pid");
        tracing::warn!(
            pid,
            "removing a stale postmaster.pid: its process is no longer running"
        );
        match fs::remove_file(&pid_file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("remove", &pid_file)(e)),
        }
    }

    fn initdb_if_empty(&self) -> Result<()> {
        let version_file = self.data_dir.join("PG_VERSION");
        if version_file.exists() {
            let data_version = fs::read_to_string(&version_file)
                .map_err(io_error("read", &version_file))?
                .trim()
                .to_owned();
            if data_version != self.binaries.major_version.to_string() {
                return Err(EmbeddedPgError::VersionMismatch {
                    data_dir: self.data_dir.clone(),
                    data_version,
                    bin_dir: self.binaries.bin_dir.clone(),
                    binary_version: self.binaries.major_version,
                });
            }
            return Ok(());
        }
        let mut entries = fs::read_dir(&self.data_dir).map_err(io_error("list", &self.data_dir))?;
        if entries.next().is_some() {
            return Err(EmbeddedPgError::NotACluster(self.data_dir.clone()));
        }
        let mut command = self.runner.command(&self.binaries.tool("initdb"));
        command
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-U")
            .arg(SUPERUSER)
            .arg("--auth=trust")
            .arg("-E")
            .arg("UTF8")
            .arg("--locale=C.UTF-8");
        if self.ephemeral {
            command.arg("--no-sync");
        }
        let output = run(&mut command)?;
        if !output.status.success() {
            return Err(command_error(&command, &output, None));
        }
        tracing::info!(data_dir = %self.data_dir.display(), "created a PostgreSQL cluster (initdb)");
        Ok(())
    }

    fn server_options(&self) -> String {
        let mut options = match &self.socket_dir {
            Some(dir) => format!(
                "-c listen_addresses='' -c unix_socket_directories='{}' -c port={}",
                dir.display(),
                self.port
            ),
            None => format!(
                "-c listen_addresses='127.0.0.1' -c unix_socket_directories='' -c port={}",
                self.port
            ),
        };
        if self.ephemeral {
            options.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        for (name, value) in &self.settings {
            options.push_str(&format!(" -c {name}='{}'", value.replace('\'', "")));
        }
        options
    }

    fn pg_ctl_start(&self) -> Result<()> {
        let mut last_error = None;
        // A postmaster killed with SIGKILL leaves postmaster.pid and possibly its shared memory
        // for a moment; pg_ctl copes with the file, and a second try copes with the memory.
        for attempt in 0..3 {
            if attempt > 0 {
                thread::sleep(Duration::from_millis(500 * attempt));
            }
            let log_offset = fs::metadata(&self.log_file).map(|m| m.len()).unwrap_or(0);
            let mut command = self.runner.command(&self.binaries.tool("pg_ctl"));
            command
                .arg("start")
                .arg("-D")
                .arg(&self.data_dir)
                .arg("-l")
                .arg(&self.log_file)
                .arg("-w")
                .arg("-t")
                .arg("60")
                .arg("-s")
                .arg("-o")
                .arg(self.server_options());
            let output = run(&mut command)?;
            if output.status.success() {
                return Ok(());
            }
            let log = read_from(&self.log_file, log_offset);
            let error = command_error(&command, &output, Some(&log));
            tracing::warn!(attempt, %error, "pg_ctl start failed");
            last_error = Some(error);
        }
        Err(last_error.unwrap_or_else(|| EmbeddedPgError::Command {
            command: "pg_ctl start".to_owned(),
            status: "not run".to_owned(),
            output: String::new(),
        }))
    }

    fn pg_ctl_stop_command(&self, mode: &str) -> Command {
        let mut command = self.runner.command(&self.binaries.tool("pg_ctl"));
        command
            .arg("stop")
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-m")
            .arg(mode)
            .arg("-w")
            .arg("-t")
            .arg("60")
            .arg("-s");
        command
    }

    /// `pg_ctl stop`, then waits until the postmaster process itself is gone.
    fn pg_ctl_stop(&self, mode: &str) -> Result<()> {
        let postmaster = self
            .postmaster_pid()
            .map(|pid| (pid, process_start_time(pid)));
        let mut command = self.pg_ctl_stop_command(mode);
        let output = run(&mut command)?;
        // It may have stopped in the meantime, which is what we wanted.
        if !output.status.success() && self.is_running()? {
            return Err(command_error(&command, &output, None));
        }
        match postmaster {
            Some((pid, started)) => wait_until_gone(&self.data_dir, pid, started),
            None => Ok(()),
        }
    }
}

impl Drop for EmbeddedPg {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            tracing::error!(%error, "could not stop the embedded PostgreSQL cluster");
        }
        // The watchdog's pipe closes after this, and its own `pg_ctl stop` finds nothing to do.
    }
}

/// Whether `data_dir` holds a PostgreSQL cluster (`initdb` has run there).
pub fn is_cluster(data_dir: &Path) -> bool {
    data_dir.join("PG_VERSION").is_file()
}

/// Connection settings, as the superuser, for database `dbname` of a cluster that is running on
/// `data_dir` and ready (another process drives it, e.g. a running `ferry-server serve`): read
/// from its `postmaster.pid` (port, socket directory, listen address). `None` when no live
/// postmaster is ready there.
pub fn running_cluster_config(data_dir: &Path, dbname: &str) -> Option<tokio_postgres::Config> {
    let text = fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let pid: u32 = lines.first()?.trim().parse().ok()?;
    let port: u16 = lines.get(3)?.trim().parse().ok()?;
    let socket_dir = lines.get(4).map(|l| l.trim()).unwrap_or_default();
    let listen = lines.get(5).map(|l| l.trim()).unwrap_or_default();
    let ready = lines.get(7).is_some_and(|l| l.trim() == "ready");
    if !ready || !process_may_be_live_postgres(pid) {
        return None;
    }
    let mut config = tokio_postgres::Config::new();
    match (socket_dir, listen) {
        ("", "") => return None,
        ("", "*" | "0.0.0.0" | "localhost") => config.host("127.0.0.1"),
        ("", address) => config.host(address),
        (dir, _) => config.host_path(dir),
    };
    config.port(port).user(SUPERUSER).dbname(dbname);
    Some(config)
}

/// The pid in `<data_dir>/postmaster.pid`, if there is one.
fn read_postmaster_pid(data_dir: &Path) -> Option<u32> {
    let text = fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// How long stopping waits for the postmaster to exit (as long as `pg_ctl stop -t` waits).
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits until the postmaster `pid` (which started at `started`, see [`process_start_time`])
/// has exited.
///
/// `pg_ctl stop -w` returns as soon as `postmaster.pid` is gone, and the postmaster removes that
/// file on its way out, before the process has finished exiting: on a loaded machine it is
/// still there a moment later. Whoever stops a cluster and then starts another on the same
/// data directory, or checks that nothing is left running, needs the process gone. Without
/// `/proc` there is nothing to watch, and `pg_ctl`'s own wait is all we have.
fn wait_until_gone(data_dir: &Path, pid: u32, started: Option<u64>) -> Result<()> {
    if !Path::new("/proc/self/stat").exists() {
        return Ok(());
    }
    let begin = std::time::Instant::now();
    // A process of that pid that started at another time is not our postmaster (pid reuse).
    while process_may_be_live_postgres(pid) && process_start_time(pid) == started {
        if begin.elapsed() >= STOP_TIMEOUT {
            return Err(EmbeddedPgError::StillRunning {
                data_dir: data_dir.to_path_buf(),
                pid,
                waited_secs: begin.elapsed().as_secs(),
            });
        }
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// When process `pid` started (field 22 of `/proc/<pid>/stat`, in clock ticks since boot), or
/// `None` when it is gone or there is no `/proc`.
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`: after the last `)`, field 3 (state) comes first.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// Whether `pid` may be a running PostgreSQL process. Only a definite "no" (no such process,
/// a zombie, or a process of another name) returns false; without `/proc`, the answer is yes.
pub fn process_may_be_live_postgres(pid: u32) -> bool {
    if !Path::new("/proc/self/stat").exists() {
        return true;
    }
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state …`; comm may itself hold spaces and parentheses.
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return true;
    };
    let comm = &stat[open + 1..close];
    let state = stat[close + 1..].trim_start().chars().next();
    !matches!(state, Some('Z' | 'X')) && comm == "postgres"
}

/// `<data_dir>.log`, beside the data directory (not inside it: initdb wants an empty one).
fn log_file_for(data_dir: &Path) -> PathBuf {
    beside(data_dir, ".log")
}

fn beside(data_dir: &Path, suffix: &str) -> PathBuf {
    let mut name = data_dir
        .file_name()
        .map(OsStr::to_os_string)
        .unwrap_or_else(|| OsString::from("pgdata"));
    name.push(suffix);
    data_dir.with_file_name(name)
}

/// Takes `<data_dir>.lock` (an exclusive `flock`, released when the process ends however it
/// ends) and writes our pid in it, so that two processes never drive one cluster.
fn lock_data_dir(data_dir: &Path) -> Result<Flock<fs::File>> {
    let path = beside(data_dir, ".lock");
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_error("create", parent))?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_error("open", &path))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            let _ignored = lock.set_len(0);
            let _ignored = writeln!(*lock, "{}", std::process::id());
            Ok(lock)
        }
        Err((_file, Errno::EWOULDBLOCK)) => {
            let holder = fs::read_to_string(&path)
                .ok()
                .map(|pid| format!("pid {}", pid.trim()))
                .unwrap_or_else(|| format!("see {}", path.display()));
            Err(EmbeddedPgError::InUse {
                data_dir: data_dir.to_path_buf(),
                holder,
            })
        }
        Err((_file, errno)) => Err(io_error("lock", &path)(io::Error::from(errno))),
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(io_error("resolve", path))
}

/// Paths end up inside `pg_ctl`'s shell command line and PostgreSQL's list-valued options.
fn check_path_is_safe(path: &Path) -> Result<()> {
    let text = path.to_string_lossy();
    let unsafe_char = |c: char| {
        matches!(c, '\'' | '"' | '\\' | ',' | '$' | '`') || c.is_whitespace() || c.is_control()
    };
    if path.to_str().is_none() || text.chars().any(unsafe_char) {
        return Err(EmbeddedPgError::UnsafePath(path.to_path_buf()));
    }
    Ok(())
}

/// Quotes a value for a libpq `key=value` connection string.
fn quote_conninfo(value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('\'', "\\'");
    format!("'{escaped}'")
}

fn free_loopback_port() -> Result<u16> {
    let listener =
        std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(EmbeddedPgError::NoFreePort)?;
    let port = listener
        .local_addr()
        .map_err(EmbeddedPgError::NoFreePort)?
        .port();
    Ok(port)
}

fn run(command: &mut Command) -> Result<Output> {
    let program = PathBuf::from(command.get_program());
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(io_error("run", &program))
}

fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

fn describe_status(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".to_owned(),
    }
}

fn command_error(command: &Command, output: &Output, log: Option<&str>) -> EmbeddedPgError {
    let mut said = String::new();
    for part in [&output.stderr, &output.stdout] {
        let text = String::from_utf8_lossy(part);
        if !text.trim().is_empty() {
            said.push_str(text.trim());
            said.push('\n');
        }
    }
    if let Some(log) = log.filter(|log| !log.trim().is_empty()) {
        said.push_str("server log:\n");
        said.push_str(&last_lines(log, 15));
    }
    EmbeddedPgError::Command {
        command: describe(command),
        status: describe_status(output.status),
        output: said.trim().to_owned(),
    }
}

fn read_from(file: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = fs::File::open(file)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ignored = f.read_to_string(&mut text);
    }
    text
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]
mod tests {
    use super::*;

    #[test]
    fn major_version_is_read_from_postgres_version_output() {
        let cases = [
            (
                "postgres (PostgreSQL) 15.8 (Debian 15.8-1.pgdg120+1)\n",
                Some(15),
            ),
            ("postgres (PostgreSQL) 16.2\n", Some(16)),
            ("postgres (PostgreSQL) 17beta1\n", Some(17)),
            ("postgres (PostgreSQL) 9.6.24\n", Some(9)),
            // Not what `postgres --version` prints: no version to be had.
            ("garbage", None),
            ("", None),
        ];
        for (output, expected) in cases {
            assert_eq!(parse_major_version(output), expected, "{output:?}");
        }
    }

    #[test]
    fn paths_that_would_break_pg_ctl_are_refused() {
        let bad = [
            "/tmp/it's",
            "/tmp/a b",
            "/tmp/a,b",
            "/tmp/$HOME",
            "/tmp/a\"b",
            "/tmp/a\\b",
            "/tmp/`x`",
            "/tmp/a\nb",
        ];
        for path in bad {
            assert!(
                check_path_is_safe(Path::new(path)).is_err(),
                "{path:?} must be refused"
            );
        }
        for good in ["/work/main/.ferry/pgdata", "/tmp/ferry-test-pg-123/data"] {
            assert!(check_path_is_safe(Path::new(good)).is_ok(), "{good}");
        }
    }

    #[test]
    fn the_log_file_sits_beside_the_data_directory() {
        assert_eq!(
            log_file_for(Path::new("/repo/.ferry/pgdata")),
            Path::new("/repo/.ferry/pgdata.log")
        );
    }

    #[test]
    fn conninfo_values_are_quoted() {
        assert_eq!(quote_conninfo("/tmp/x"), "'/tmp/x'");
        assert_eq!(quote_conninfo("a'b\\c"), r"'a\'b\\c'");
    }

    #[test]
    fn an_empty_bin_dir_says_how_to_install_postgresql() {
        let dir = std::env::temp_dir().join(format!("ferry-no-pg-bin-{}", std::process::id()));
        let _ignored = fs::create_dir_all(&dir);
        let error = PgBinaries::locate(Some(&dir)).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("apt-get install postgresql"), "{message}");
        assert!(message.contains(&dir.display().to_string()), "{message}");
        let _ignored = fs::remove_dir(&dir);
    }
}
