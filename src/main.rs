//! The `chorus` binary: load settings, start telemetry, run one node until
//! SIGTERM or Ctrl-C, drain, exit.

use std::process::ExitCode;

use chorus::app::App;
use chorus::config::Settings;
use chorus::{shutdown, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&settings.log, settings.log_format);
    let result = async {
        let app = App::build(settings).await?;
        app.run_until_stopped(shutdown::signal()).await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
