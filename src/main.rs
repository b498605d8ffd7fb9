//! `cdc-bridge`: see the README. Everything lives in the library; this only hands over.

fn main() -> std::process::ExitCode {
    cdc_bridge::cli::main()
}
