use std::process::ExitCode;

fn main() -> ExitCode {
    containerssh::cli::main()
}
