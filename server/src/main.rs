//! `ferry-server`: the thin binary around the `ferry_server` library.
//!
//! `ferry-server [serve]` runs the server; `ferry-server migrate [--baseline]` applies the
//! schema migrations and exits; `status`, `rollback`, `conflicts`, `quarantine` and
//! `backup open` are for operators (see [`ferry_server::operator::cli`]); `spec schema`,
//! `spec check` and `spec ddl` for the team writing the spec. Errors are printed once, with their whole cause chain.

use std::process::ExitCode;

use clap::Parser;
use ferry_server::error_chain;
use ferry_server::operator::cli::{self, CliError};
use ferry_server::operator::spec_tools;
use ferry_server::startup::config::{BackupCommand, Cli, Command, SpecCommand};
use ferry_server::startup::{Application, StartupError, run_migrate_command};
use ferry_server::startup::{shutdown, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = cli.settings.log_format;
    telemetry::init(log_format);
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // With JSON logs, the last line is JSON too, for the pipeline that reads them.
            match log_format {
                telemetry::LogFormat::Json => {
                    tracing::error!(error = %error_chain(&error), "ferry-server stopped on an error");
                }
                telemetry::LogFormat::Text => eprintln!("ferry-server: {}", error_chain(&error)),
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let shutdown = shutdown::signal_received().map_err(StartupError::Signals)?;
            let app = Application::build(&cli.settings).await?;
            ferry_server::startup::faults::arm_from_env(app.dev_mode());
            app.run_until_stopped(shutdown).await?;
            Ok(())
        }
        Command::Status {
            user,
            migration,
            abandoned_after,
            by_user,
            json,
        } => {
            let query = cli::StatusQuery {
                user,
                migration,
                abandoned_after: std::time::Duration::from_secs(abandoned_after),
                by_user,
                json,
            };
            cli::status(&cli.settings, &query).await
        }
        Command::Rollback { migration, user } => {
            cli::rollback(&cli.settings, user, migration).await
        }
        Command::Purge {
            older_than,
            dry_run,
            yes,
        } => cli::purge(&cli.settings, older_than, dry_run, yes).await,
        Command::Conflicts { user, json } => cli::conflicts(&cli.settings, user, json).await,
        Command::Quarantine { user, migration } => {
            cli::quarantine(&cli.settings, user, migration).await
        }
        Command::Backup(BackupCommand::Open { file }) => cli::backup_open(&file),
        Command::Spec(SpecCommand::Schema) => spec_tools::schema(),
        Command::Spec(SpecCommand::Check { files }) => spec_tools::check(&files),
        Command::Spec(SpecCommand::Ddl { files }) => spec_tools::ddl(&files),
        Command::Spec(SpecCommand::Retire { app, version, yes }) => {
            cli::retire_spec(&cli.settings, &app, &version, yes).await
        }
        Command::Spec(SpecCommand::Infer { export }) => spec_tools::infer(&export),
        Command::Migrate { baseline } => {
            if cli.settings.app_migrations.is_none() {
                eprintln!(
                    "ferry-server: no --app-migrations folder (FERRY_APP_MIGRATIONS): only Ferry's own tables; the app's are left as they are"
                );
            }
            let report = run_migrate_command(&cli.settings, baseline).await?;
            for name in &report.applied {
                println!("applied    {name}");
            }
            for name in &report.baselined {
                println!("baselined  {name}");
            }
            println!(
                "{} applied, {} baselined, {} already applied",
                report.applied.len(),
                report.baselined.len(),
                report.already_applied.len()
            );
            Ok(())
        }
    }
}
