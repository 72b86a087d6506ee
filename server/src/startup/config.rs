//! Typed configuration: one [`Settings`] struct read from flags and environment variables.
//!
//! Every setting has a flag and an environment variable (listed, with its default, in
//! `server/.env.sample` and in `ferry-server --help`). Secrets are [`Secret`]s and their
//! environment values are hidden from `--help`. Paths that default to the repository
//! (`.ferry/pgdata`, `www`, `pkg`) are resolved against [`Settings::project_dir`].

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::http::auth::jwks::JwksSource;
use crate::startup::secret::Secret;
use crate::startup::telemetry::LogFormat;

/// Default HTTP port.
pub const DEFAULT_PORT: u16 = 8080;
/// Default size of the PostgreSQL connection pool.
pub const DEFAULT_POOL_SIZE: usize = 10;
/// Default `statement_timeout` of every transaction the server opens, in milliseconds.
pub const DEFAULT_STATEMENT_TIMEOUT_MS: u64 = 30_000;
/// Default time allowed to open one database connection, in milliseconds.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Default largest accepted request body: 8 MiB.
pub const DEFAULT_BODY_LIMIT_BYTES: usize = 8 * 1024 * 1024;
/// Default time a request may take before it is answered with a timeout error, in milliseconds.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Default time a client has to send a request's headers (the request line included), in
/// milliseconds; also how long an idle keep-alive connection is kept.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Default sustained request rate per user (token bucket refill rate).
pub const DEFAULT_RATE_LIMIT_PER_SECOND: f64 = 20.0;
/// Default burst of requests per user (token bucket size).
pub const DEFAULT_RATE_LIMIT_BURST: u32 = 40;
/// Default id of the field encryption key.
pub const DEFAULT_FIELD_KEY_ID: &str = "k1";
/// Default age after which the JWKS is fetched again on the next token, in seconds.
pub const DEFAULT_JWKS_REFRESH_SECS: u64 = 600;
/// Default shortest time between two refetches of the JWKS (an unknown `kid` or a stale set),
/// in seconds.
pub const DEFAULT_JWKS_REFETCH_COOLDOWN_SECS: u64 = 30;
/// Default lifetime of tokens issued by `POST /dev/token`, in seconds.
pub const DEFAULT_DEV_TOKEN_TTL_SECS: u64 = 24 * 60 * 60;

/// `ferry-server [SUBCOMMAND] [OPTIONS]`.
#[derive(Debug, Parser)]
#[command(
    name = "ferry-server",
    version,
    about = "Ferry's ingest server: authenticated, exactly-once batch ingest into PostgreSQL.",
    long_about = "Ferry's ingest server: authenticated, exactly-once batch ingest into PostgreSQL.\n\n\
                  Without DATABASE_URL it starts (and stops) its own PostgreSQL cluster from the \
                  PostgreSQL binaries on this machine, in <project>/.ferry/pgdata, and enables the \
                  development endpoints."
)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings shared by every subcommand.
    #[command(flatten)]
    pub settings: Settings,
}

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the HTTP server (the default): apply pending schema migrations, check the schema,
    /// then serve.
    Serve,
    /// Apply pending schema migrations (create or change tables), then exit.
    ///
    /// Schema migrations create and change Ferry's and the app's tables; they move no data
    /// (data migrations arrive from browsers, over HTTP, while the server runs).
    Migrate {
        /// Record the app-table schema migrations as applied without running them, for an app
        /// whose tables already exist (they are checked first). Ferry's own tables are still
        /// created.
        #[arg(long)]
        baseline: bool,
    },
    /// Summarise the fleet (users by the state of their latest migration, records per kind and
    /// outcome, quarantined, open conflicts, records per hour), then the migration runs: how
    /// many are running, abandoned, verified and rolled back, and each run's batches, records
    /// per kind and outcome, and open conflicts.
    Status {
        /// Only this user (UUID); every user when omitted.
        #[arg(long)]
        user: Option<uuid::Uuid>,
        /// Only this migration (UUID).
        #[arg(long)]
        migration: Option<uuid::Uuid>,
        /// A running migration with no batch for this many seconds is shown as abandoned.
        #[arg(long, env = "FERRY_ABANDONED_AFTER_SECS", default_value_t = 86_400)]
        abandoned_after: u64,
        /// Also count the runs per user and state.
        #[arg(long)]
        by_user: bool,
        /// Print `{"fleet": …, "runs": […]}` as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Roll one user's migration back: restore every row it touched as it was before.
    Rollback {
        /// The migration (UUID).
        #[arg(long)]
        migration: uuid::Uuid,
        /// The user (UUID) whose migration it is.
        #[arg(long)]
        user: uuid::Uuid,
    },
    /// Remove the bookkeeping of migrations verified longer ago than the retention: their
    /// ledger answers, received hashes and before-images (their counts stay in the reports and
    /// the fleet summary). Those migrations can no longer be rolled back. Running, stalled and
    /// rolled-back migrations are never touched. Says first what it would remove; deletes only
    /// with --yes (without --yes nor --dry-run: nothing deleted, exit status 1).
    Purge {
        /// Purge migrations verified longer ago than this: a whole number and a unit, s, m,
        /// h, d or w (`30d`, `12h`).
        #[arg(long, env = "FERRY_PURGE_AFTER", default_value = crate::operator::purge::DEFAULT_RETENTION,
              value_parser = crate::operator::purge::parse_retention)]
        older_than: std::time::Duration,
        /// Only count what would be removed (exit status 0).
        #[arg(long, conflicts_with = "yes")]
        dry_run: bool,
        /// Delete (without: only say what would be removed).
        #[arg(long)]
        yes: bool,
    },
    /// List open conflicts (policy `manual`) waiting for a user's decision.
    Conflicts {
        /// Only this user (UUID); every user when omitted.
        #[arg(long)]
        user: Option<uuid::Uuid>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the quarantined records as JSON, with their raw values in clear: those of kinds
    /// with sensitive fields are sealed at rest and opened with FERRY_FIELD_KEY.
    Quarantine {
        /// Only this user (UUID); every user when omitted.
        #[arg(long)]
        user: Option<uuid::Uuid>,
        /// Only this migration (UUID).
        #[arg(long)]
        migration: Option<uuid::Uuid>,
    },
    /// Work with backup files made by the browser migrator.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Write and check a migration spec (no database needed).
    #[command(subcommand)]
    Spec(SpecCommand),
}

/// `ferry-server spec …`.
#[derive(Debug, Clone, Subcommand)]
pub enum SpecCommand {
    /// Print the JSON Schema of the spec format (name it in a spec's "$schema" for your editor).
    Schema,
    /// Check spec files: every problem of each, in the words the server uses at start; exit
    /// status 1 if any file has a problem.
    Check {
        /// The spec files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Retire a spec version: no new migration starts under it (400 spec_mismatch naming the
    /// versions served); a migration in flight under it may finish. Says first how many users
    /// still have a migration in flight on it; retires only with --yes.
    Retire {
        /// The spec's app.
        app: String,
        /// The version to retire.
        version: String,
        /// Retire it (without: only say who is still on it).
        #[arg(long)]
        yes: bool,
    },
    /// Print CREATE TABLE statements for the specs' tables that pass the start-up schema check
    /// (the usual first migration of an app adopting Ferry).
    Ddl {
        /// The spec files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Propose a draft spec from one user's localStorage: a JSON object of key → value copied
    /// from the browser, or the output of `backup open` (`-` reads stdin). The draft goes to
    /// stdout, the notes on what was guessed or skipped to stderr.
    Infer {
        /// The export file, or `-` for stdin.
        export: PathBuf,
    },
}

/// `ferry-server backup …`.
#[derive(Debug, Clone, Subcommand)]
pub enum BackupCommand {
    /// Decrypt a passphrase backup and print its pairs as JSON on stdout (metadata on stderr).
    ///
    /// The passphrase comes from FERRY_BACKUP_PASSPHRASE, else it is asked for on the terminal
    /// (without echo), else one line is read from stdin. Strings are printed in Ferry's escaped
    /// form: NUL, lone surrogates and U+FFFF appear as U+FFFF followed by four uppercase hex
    /// digits of the UTF-16 code unit; every other character is itself.
    Open {
        /// The backup file.
        file: PathBuf,
    },
}

/// How the embedded PostgreSQL cluster accepts connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PgListen {
    /// A Unix socket in the socket directory only: nothing listens on the network.
    Socket,
    /// TCP on 127.0.0.1 (port from `FERRY_PG_PORT`, or a free one).
    Tcp,
}

/// Every setting of the server. Flags win over environment variables, which win over defaults.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// PostgreSQL connection string (URL or `key=value` form). Unset: start the embedded cluster.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<Secret<String>>,

    /// HS256 secret that signs and verifies bearer tokens, at least 32 bytes. Outside dev mode,
    /// this or a JWKS is required; in dev mode a random one is generated at start when unset.
    #[arg(long, env = "FERRY_JWT_SECRET", global = true, hide_env_values = true)]
    pub jwt_secret: Option<Secret<String>>,

    /// URL of the identity provider's JWKS (e.g. `https://<tenant>/.well-known/jwks.json`):
    /// RS256/ES256 tokens are verified with its keys. https://, or http:// to a loopback host.
    #[arg(
        long,
        env = "FERRY_JWKS_URL",
        global = true,
        conflicts_with = "jwks_file"
    )]
    pub jwks_url: Option<String>,

    /// A JWKS file, instead of a URL: re-read when a token names an unknown `kid`.
    #[arg(long, env = "FERRY_JWKS_FILE", global = true)]
    pub jwks_file: Option<PathBuf>,

    /// Accepted token issuers (`iss`), comma-separated; unset: `iss` is not checked.
    #[arg(long, env = "FERRY_JWT_ISSUER", global = true, value_delimiter = ',')]
    pub jwt_issuer: Vec<String>,

    /// Accepted token audiences, comma-separated: a token's `aud` (a string or an array) must
    /// include one; unset: `aud` is not checked.
    #[arg(long, env = "FERRY_JWT_AUDIENCE", global = true, value_delimiter = ',')]
    pub jwt_audience: Vec<String>,

    /// Age after which the JWKS is fetched again on the next token, in seconds.
    #[arg(long, env = "FERRY_JWKS_REFRESH_SECS", global = true, default_value_t = DEFAULT_JWKS_REFRESH_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub jwks_refresh_secs: u64,

    /// Shortest time between two refetches of the JWKS, in seconds: tokens naming unknown
    /// `kid`s cause at most one fetch per this period.
    #[arg(long, env = "FERRY_JWKS_REFETCH_COOLDOWN_SECS", global = true, default_value_t = DEFAULT_JWKS_REFETCH_COOLDOWN_SECS)]
    pub jwks_refetch_cooldown_secs: u64,

    /// Address the HTTP server binds.
    #[arg(long, env = "FERRY_HOST", global = true, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,

    /// Port the HTTP server binds (0: any free port).
    #[arg(long, env = "FERRY_PORT", global = true, default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// Enable the development endpoints (`POST /dev/token`, `GET /dev/sample`). Always on with the embedded cluster.
    #[arg(long, env = "FERRY_DEV", global = true)]
    pub dev: bool,

    /// The project's folder: the base of the default `.ferry` (embedded cluster, dev field
    /// key), `www`, `pkg` and spec paths [default: the current directory].
    #[arg(long, env = "FERRY_PROJECT_DIR", global = true, default_value_os_t = default_project_dir())]
    pub project_dir: PathBuf,

    /// Data directory of the embedded cluster [default: <project>/.ferry/pgdata].
    #[arg(long, env = "FERRY_PG_DATA", global = true)]
    pub pg_data_dir: Option<PathBuf>,

    /// Socket directory of the embedded cluster [default: <project>/.ferry/run].
    #[arg(long, env = "FERRY_PG_SOCKET_DIR", global = true)]
    pub pg_socket_dir: Option<PathBuf>,

    /// How the embedded cluster listens.
    #[arg(long, env = "FERRY_PG_LISTEN", global = true, value_enum, default_value_t = PgListen::Socket)]
    pub pg_listen: PgListen,

    /// Port of the embedded cluster (`tcp`: default a free port; `socket`: names the socket file,
    /// default 5432).
    #[arg(long, env = "FERRY_PG_PORT", global = true)]
    pub pg_port: Option<u16>,

    /// Directory holding `initdb`, `pg_ctl` and `postgres` [default: searched on PATH, via
    /// `pg_config --bindir`, then /usr/lib/postgresql/<highest>/bin].
    #[arg(long, env = "FERRY_PG_BIN", global = true)]
    pub pg_bin_dir: Option<PathBuf>,

    /// Largest number of pooled database connections.
    #[arg(long, env = "FERRY_DB_POOL_SIZE", global = true, default_value_t = DEFAULT_POOL_SIZE,
          value_parser = clap::value_parser!(u32).range(1..=1000).map(|n| n as usize))]
    pub db_pool_size: usize,

    /// `statement_timeout` of every transaction the server opens (`SET LOCAL`), in milliseconds (0: none).
    #[arg(long, env = "FERRY_DB_STATEMENT_TIMEOUT_MS", global = true, default_value_t = DEFAULT_STATEMENT_TIMEOUT_MS)]
    pub db_statement_timeout_ms: u64,

    /// Time allowed to open one database connection, in milliseconds.
    #[arg(long, env = "FERRY_DB_CONNECT_TIMEOUT_MS", global = true, default_value_t = DEFAULT_CONNECT_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub db_connect_timeout_ms: u64,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "FERRY_BODY_LIMIT_BYTES", global = true, default_value_t = DEFAULT_BODY_LIMIT_BYTES,
          value_parser = clap::value_parser!(u64).range(1..=(1 << 32)).map(|n| n as usize))]
    pub body_limit_bytes: usize,

    /// Time a request may take before it is answered with a `request_timeout` error, in ms.
    #[arg(long, env = "FERRY_REQUEST_TIMEOUT_MS", global = true, default_value_t = DEFAULT_REQUEST_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_ms: u64,

    /// Time a client has to send a request's headers before the connection is closed (also how
    /// long an idle keep-alive connection is kept), in ms. Bounds slow-header ("slowloris")
    /// clients, which the request timeout (started once the headers are in) does not see.
    #[arg(long, env = "FERRY_HEADER_READ_TIMEOUT_MS", global = true, default_value_t = DEFAULT_HEADER_READ_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_ms: u64,

    /// Sustained authenticated requests per second per user (0: no rate limit).
    #[arg(long, env = "FERRY_RATE_LIMIT_PER_SECOND", global = true, default_value_t = DEFAULT_RATE_LIMIT_PER_SECOND)]
    pub rate_limit_per_second: f64,

    /// Requests a user may make in a burst above the sustained rate.
    #[arg(long, env = "FERRY_RATE_LIMIT_BURST", global = true, default_value_t = DEFAULT_RATE_LIMIT_BURST,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_burst: u32,

    /// Keep the per-user rate limit buckets in PostgreSQL (`ferry_rate_buckets`), shared by
    /// every server process over the database, instead of in this process's memory (one more
    /// statement per authenticated request). Set it when several processes serve one database.
    #[arg(
        long,
        env = "FERRY_RATE_LIMIT_SHARED",
        global = true,
        default_value_t = false
    )]
    pub rate_limit_shared: bool,

    /// Origins allowed to call the API from a browser, comma-separated (none: no CORS headers).
    #[arg(long, env = "FERRY_CORS_ORIGINS", global = true, value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Directory served at `/` [default: <project>/www].
    #[arg(long, env = "FERRY_WWW_DIR", global = true)]
    pub www_dir: Option<PathBuf>,

    /// Directory served at `/pkg` (the wasm bundle) [default: <project>/pkg].
    #[arg(long, env = "FERRY_PKG_DIR", global = true)]
    pub pkg_dir: Option<PathBuf>,

    /// Folder of the app's schema migrations (`NNNN_name.sql`, applied in order, each once,
    /// checksummed). Unset: no app table is ever created (Ferry's own tables always are).
    #[arg(long, env = "FERRY_APP_MIGRATIONS", global = true)]
    pub app_migrations: Option<PathBuf>,

    /// The migration spec(s) the server runs: files or folders (every `*.json` in a folder but
    /// `README*`, dotfiles and `*.schema.json`), comma-separated; several versions of an app
    /// are served at once [default: <project>/specs/taskboard.json].
    #[arg(long, env = "FERRY_SPEC", global = true, value_delimiter = ',')]
    pub spec: Vec<PathBuf>,

    /// AES-256 key (64 hex characters) encrypting sensitive fields at rest. Required unless in
    /// dev mode, where one is generated once and kept in <project>/.ferry/field.key.
    #[arg(long, env = "FERRY_FIELD_KEY", global = true, hide_env_values = true)]
    pub field_key: Option<Secret<String>>,

    /// The id stored with every encrypted value, naming FERRY_FIELD_KEY (for key rotation).
    #[arg(long, env = "FERRY_FIELD_KEY_ID", global = true, default_value = DEFAULT_FIELD_KEY_ID)]
    pub field_key_id: String,

    /// Lifetime of tokens issued by `POST /dev/token`, in seconds.
    #[arg(long, env = "FERRY_DEV_TOKEN_TTL_SECS", global = true, default_value_t = DEFAULT_DEV_TOKEN_TTL_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub dev_token_ttl_secs: u64,

    /// The operator's token for the dashboard at `/admin` (sent as `Authorization: Bearer
    /// <token>`), at least 32 characters. Unset (and no `--operator-token-file`): the dashboard
    /// is off and `/admin` answers 403 saying how to turn it on.
    #[arg(
        long,
        env = "FERRY_OPERATOR_TOKEN",
        global = true,
        hide_env_values = true,
        conflicts_with = "operator_token_file"
    )]
    pub operator_token: Option<Secret<String>>,

    /// A file holding the operator's token (its first line), instead of `FERRY_OPERATOR_TOKEN`.
    #[arg(long, env = "FERRY_OPERATOR_TOKEN_FILE", global = true)]
    pub operator_token_file: Option<PathBuf>,

    /// How log lines are written to stderr: `text` for a person, `json` (one object per line,
    /// with the request id of every line logged while handling a request) for a log pipeline.
    #[arg(long, env = "FERRY_LOG_FORMAT", global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The default [`Settings::project_dir`]: the current directory, never the checkout the binary
/// was built from (a copied binary runs where its operator runs it; `cargo run` from the
/// repository root still finds the demo).
pub fn default_project_dir() -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|dir| std::path::absolute(dir).ok())
        .unwrap_or_else(|| PathBuf::from("."))
}

impl Settings {
    /// The defaults, ignoring flags and environment (for tests and embedding).
    pub fn defaults() -> Self {
        Self {
            database_url: None,
            jwt_secret: None,
            jwks_url: None,
            jwks_file: None,
            jwt_issuer: Vec::new(),
            jwt_audience: Vec::new(),
            jwks_refresh_secs: DEFAULT_JWKS_REFRESH_SECS,
            jwks_refetch_cooldown_secs: DEFAULT_JWKS_REFETCH_COOLDOWN_SECS,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: DEFAULT_PORT,
            dev: false,
            project_dir: default_project_dir(),
            pg_data_dir: None,
            pg_socket_dir: None,
            pg_listen: PgListen::Socket,
            pg_port: None,
            pg_bin_dir: None,
            db_pool_size: DEFAULT_POOL_SIZE,
            db_statement_timeout_ms: DEFAULT_STATEMENT_TIMEOUT_MS,
            db_connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            body_limit_bytes: DEFAULT_BODY_LIMIT_BYTES,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            header_read_timeout_ms: DEFAULT_HEADER_READ_TIMEOUT_MS,
            rate_limit_per_second: DEFAULT_RATE_LIMIT_PER_SECOND,
            rate_limit_burst: DEFAULT_RATE_LIMIT_BURST,
            rate_limit_shared: false,
            cors_origins: Vec::new(),
            www_dir: None,
            pkg_dir: None,
            dev_token_ttl_secs: DEFAULT_DEV_TOKEN_TTL_SECS,
            spec: Vec::new(),
            app_migrations: None,
            field_key: None,
            field_key_id: DEFAULT_FIELD_KEY_ID.to_owned(),
            log_format: LogFormat::Text,
            operator_token: None,
            operator_token_file: None,
        }
    }

    /// The migration spec files and folders.
    pub fn spec_paths(&self) -> Vec<PathBuf> {
        if self.spec.is_empty() {
            vec![self.project_dir.join("specs").join("taskboard.json")]
        } else {
            self.spec.clone()
        }
    }

    /// Where dev mode keeps its generated field encryption key.
    pub fn dev_field_key_path(&self) -> PathBuf {
        self.ferry_dir().join("field.key")
    }

    /// The `.ferry/` folder of the project: embedded cluster data, socket and log.
    pub fn ferry_dir(&self) -> PathBuf {
        self.project_dir.join(".ferry")
    }

    /// Data directory of the embedded cluster.
    pub fn pg_data_dir(&self) -> PathBuf {
        self.pg_data_dir
            .clone()
            .unwrap_or_else(|| self.ferry_dir().join("pgdata"))
    }

    /// Socket directory of the embedded cluster.
    pub fn pg_socket_dir(&self) -> PathBuf {
        self.pg_socket_dir
            .clone()
            .unwrap_or_else(|| self.ferry_dir().join("run"))
    }

    /// Directory served at `/`.
    pub fn www_dir(&self) -> PathBuf {
        self.www_dir
            .clone()
            .unwrap_or_else(|| self.project_dir.join("www"))
    }

    /// Directory served at `/pkg`.
    pub fn pkg_dir(&self) -> PathBuf {
        self.pkg_dir
            .clone()
            .unwrap_or_else(|| self.project_dir.join("pkg"))
    }

    /// `statement_timeout` of pooled connections; `None` when disabled.
    pub fn statement_timeout(&self) -> Option<Duration> {
        (self.db_statement_timeout_ms > 0)
            .then(|| Duration::from_millis(self.db_statement_timeout_ms))
    }

    /// Time allowed to open one database connection.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.db_connect_timeout_ms)
    }

    /// Time a request may take.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// Time a client has to send a request's headers.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// The JWKS to verify RS256/ES256 tokens with, if any.
    pub fn jwks_source(&self) -> Option<JwksSource> {
        match (&self.jwks_url, &self.jwks_file) {
            (Some(url), _) => Some(JwksSource::Url(url.clone())),
            (None, Some(path)) => Some(JwksSource::File(path.clone())),
            (None, None) => None,
        }
    }

    /// Age after which the JWKS is refetched.
    pub fn jwks_refresh(&self) -> Duration {
        Duration::from_secs(self.jwks_refresh_secs)
    }

    /// Shortest time between two JWKS refetches.
    pub fn jwks_refetch_cooldown(&self) -> Duration {
        Duration::from_secs(self.jwks_refetch_cooldown_secs)
    }

    /// Lifetime of dev tokens.
    pub fn dev_token_ttl(&self) -> Duration {
        Duration::from_secs(self.dev_token_ttl_secs)
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::path::Path;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_work_before_and_after_the_subcommand() {
        let before =
            Cli::try_parse_from(["ferry-server", "--port", "9001", "migrate", "--baseline"])
                .map_err(|e| e.to_string());
        let after =
            Cli::try_parse_from(["ferry-server", "migrate", "--baseline", "--port", "9001"])
                .map_err(|e| e.to_string());
        for cli in [before, after] {
            let cli = cli.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(cli.settings.port, 9001);
            assert!(matches!(
                cli.command,
                Some(Command::Migrate { baseline: true })
            ));
        }
    }

    #[test]
    fn the_log_format_is_text_or_json() {
        let default = Cli::try_parse_from(["ferry-server"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(default.settings.log_format, LogFormat::Text);
        let json = Cli::try_parse_from(["ferry-server", "migrate", "--log-format", "json"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(json.settings.log_format, LogFormat::Json);
        assert!(Cli::try_parse_from(["ferry-server", "--log-format", "xml"]).is_err());
    }

    #[test]
    fn cors_origins_are_comma_separated() {
        let cli = Cli::try_parse_from([
            "ferry-server",
            "--cors-origins",
            "http://a.example,http://b.example",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            cli.settings.cors_origins,
            ["http://a.example", "http://b.example"]
        );
    }

    #[test]
    fn token_issuers_and_audiences_are_comma_separated() {
        let cli = Cli::try_parse_from([
            "ferry-server",
            "--jwks-url",
            "https://tenant.example/.well-known/jwks.json",
            "--jwt-issuer",
            "https://tenant.example/",
            "--jwt-audience",
            "ferry,https://api.example",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let settings = cli.settings;
        assert_eq!(settings.jwt_issuer, ["https://tenant.example/"]);
        assert_eq!(settings.jwt_audience, ["ferry", "https://api.example"]);
        assert_eq!(
            settings.jwks_source(),
            Some(JwksSource::Url(
                "https://tenant.example/.well-known/jwks.json".to_owned()
            ))
        );
        let both = Cli::try_parse_from([
            "ferry-server",
            "--jwks-url",
            "https://a.example/jwks",
            "--jwks-file",
            "jwks.json",
        ]);
        assert!(both.is_err(), "a JWKS URL and a JWKS file at once");
    }

    #[test]
    fn secrets_do_not_print_in_debug_output() {
        let cli = Cli::try_parse_from([
            "ferry-server",
            "--database-url",
            "postgres://ferry:pa55word@db/ferry",
            "--jwt-secret",
            "0123456789abcdef0123456789abcdef",
            "--field-key",
            "feedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedface",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let printed = format!("{cli:?}");
        assert!(!printed.contains("pa55word"), "{printed}");
        assert!(!printed.contains("0123456789abcdef"), "{printed}");
        assert!(!printed.contains("feedface"), "{printed}");
    }

    #[test]
    fn env_sample_documents_every_variable() {
        let sample =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".env.sample"))
                .unwrap_or_else(|e| panic!("server/.env.sample: {e}"));
        for arg in Cli::command().get_arguments() {
            if let Some(env) = arg.get_env() {
                let name = env.to_string_lossy();
                assert!(
                    sample.contains(&format!("{name}=")),
                    "server/.env.sample does not mention {name}"
                );
            }
        }
    }

    /// Regression: the default project dir was the checkout the binary was built from.
    #[test]
    fn the_default_project_dir_is_the_current_directory_not_the_build_checkout() {
        let current = std::env::current_dir().unwrap();
        assert_eq!(default_project_dir(), current);
        assert_eq!(Settings::defaults().project_dir, current);
        let cli = Cli::try_parse_from(["ferry-server"]).unwrap_or_else(|e| panic!("{e}"));
        if std::env::var_os("FERRY_PROJECT_DIR").is_none() {
            assert_eq!(cli.settings.project_dir, current);
        }
    }

    #[test]
    fn derived_paths_follow_the_project_dir() {
        let mut settings = Settings::defaults();
        settings.project_dir = PathBuf::from("/srv/app");
        assert_eq!(settings.pg_data_dir(), Path::new("/srv/app/.ferry/pgdata"));
        assert_eq!(settings.pg_socket_dir(), Path::new("/srv/app/.ferry/run"));
        assert_eq!(settings.www_dir(), Path::new("/srv/app/www"));
        assert_eq!(settings.pkg_dir(), Path::new("/srv/app/pkg"));
        assert_eq!(
            settings.spec_paths(),
            vec![PathBuf::from("/srv/app/specs/taskboard.json")]
        );
        assert_eq!(
            settings.dev_field_key_path(),
            Path::new("/srv/app/.ferry/field.key")
        );
    }
}
