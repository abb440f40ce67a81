//! Command lines of this crate's binaries, all parsed with `lexopt`: every
//! binary takes `-h`/`--help` and `-V`/`--version` and refuses an argument
//! it does not know with one line naming it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

pub use lexopt;

/// The version line of binary `name`.
pub fn version_line(name: &str) -> String {
    format!("{name} {}", env!("CARGO_PKG_VERSION"))
}

fn utf8(v: OsString, flag: &str) -> Result<String, String> {
    v.into_string()
        .map_err(|v| format!("{flag}: `{}` is not valid UTF-8", v.to_string_lossy()))
}

/// The next value, as text, for option `flag`.
pub fn string(p: &mut lexopt::Parser, flag: &str) -> Result<String, String> {
    let v = p.value().map_err(|e| e.to_string())?;
    utf8(v, flag)
}

/// The next value, as a path.
pub fn path(p: &mut lexopt::Parser) -> Result<PathBuf, String> {
    p.value().map(PathBuf::from).map_err(|e| e.to_string())
}

/// The next value parsed as `T` (a number, say) for option `flag`.
pub fn number<T: FromStr>(p: &mut lexopt::Parser, flag: &str) -> Result<T, String> {
    let v = string(p, flag)?;
    v.parse()
        .map_err(|_| format!("{flag}: `{v}` is not a valid number"))
}

/// What a parser that met `arg` it does not take says.
pub fn unexpected(arg: lexopt::Arg<'_>) -> String {
    arg.unexpected().to_string()
}

/// The command line of a driver that takes no arguments: `--help` and
/// `--version` are answered (and the driver exits 0), anything else is one
/// line on stderr and exit status 2. `None`: go on and serve.
pub fn driver_without_options(name: &str, about: &str) -> Option<ExitCode> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let result = (|| -> Result<Option<ExitCode>, String> {
        if let Some(arg) = p.next().map_err(|e| e.to_string())? {
            return match arg {
                Short('h') | Long("help") => {
                    println!("usage: {name}\n\n{about}");
                    Ok(Some(ExitCode::SUCCESS))
                }
                Short('V') | Long("version") => {
                    println!("{}", version_line(name));
                    Ok(Some(ExitCode::SUCCESS))
                }
                other => Err(unexpected(other)),
            };
        }
        Ok(None)
    })();
    match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: {e} ({name} --help shows the usage)");
            Some(ExitCode::from(2))
        }
    }
}
