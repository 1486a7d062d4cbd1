//! `tablelog`: the command-line interface. One module per subcommand; output to
//! stdout, diagnostics and progress to stderr, `error: …` and a non-zero exit
//! status on failure.

mod args;
mod bench;
mod checkpoint;
mod column;
mod compact;
mod demo;
mod import;
mod init;
mod inspect;
mod out;
mod par;
mod query;
mod requests;
mod torture;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// An embedded, append-only event log that rebuilds tables as of any time.
///
/// Times accept RFC 3339 (2013-01-01T10:00:00Z, offsets allowed),
/// "YYYY-MM-DD HH:MM:SS[.ffffff]" (UTC), YYYY-MM-DD (midnight UTC), or integers
/// (epoch milliseconds unless --time-unit says otherwise). Durations: 500ms, 30s,
/// 30m, 2h, 7d. Times print as RFC 3339 UTC.
#[derive(Parser, Debug)]
#[command(
    name = "tablelog",
    version,
    about,
    long_about,
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Init(init::InitArgs),
    Import(import::ImportArgs),
    Table(query::TableArgs),
    Get(query::GetArgs),
    History(query::HistoryArgs),
    Changes(query::ChangesArgs),
    Join(query::JoinArgs),
    Window(query::WindowArgs),
    Checkpoint(checkpoint::CheckpointArgs),
    Column(column::ColumnArgs),
    Compact(compact::CompactArgs),
    Verify(inspect::VerifyArgs),
    Stats(inspect::StatsArgs),
    Demo(demo::DemoArgs),
    Bench(bench::BenchArgs),
    /// Crash-test child: appends with sync durability and prints ACK lines.
    #[command(hide = true)]
    TortureWriter(torture::TortureArgs),
}

/// How a subcommand ended when it did not fail.
pub enum Outcome {
    /// Exit status 0.
    Ok,
    /// Exit status 1 with nothing on stdout (a lookup found no row).
    NotFound,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            // One line, as for every other error: clap's first line is `error: …`.
            let text = e.render().to_string();
            eprintln!(
                "{}",
                text.lines().next().unwrap_or("error: invalid arguments")
            );
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Init(a) => init::run(a),
        Command::Import(a) => import::run(a),
        Command::Table(a) => query::table(a),
        Command::Get(a) => query::get(a),
        Command::History(a) => query::history(a),
        Command::Changes(a) => query::changes(a),
        Command::Join(a) => query::join(a),
        Command::Window(a) => query::window(a),
        Command::Checkpoint(a) => checkpoint::run(a),
        Command::Column(a) => column::run(a),
        Command::Compact(a) => compact::run(a),
        Command::Verify(a) => inspect::verify(a),
        Command::Stats(a) => inspect::stats(a),
        Command::Demo(a) => demo::run(a),
        Command::Bench(a) => bench::run(a),
        Command::TortureWriter(a) => torture::run(a),
    };
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::NotFound) => ExitCode::from(1),
        Err(e) => {
            if out::is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
