//! `cronwarden import`: read a crontab (a file, or stdin for `-`), write
//! the cronwarden TOML of [`crontab::convert`] to stdout and say on stderr
//! which lines did not translate. Exit 0 when all did, 1 when some became
//! comments, 2 when the input cannot be read or `--tz` is unknown.

mod crontab;

use std::{
    io::{Read, Write},
    path::Path,
    process::ExitCode,
};

use jiff::tz::TimeZone;

pub(crate) fn import(
    file: &Path,
    system: bool,
    tz: Option<String>,
    safe_defaults: bool,
) -> anyhow::Result<ExitCode> {
    let stdin = file == Path::new("-");
    let mut bytes = vec![];
    let read = if stdin {
        std::io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::File::open(file).and_then(|mut f| f.read_to_end(&mut bytes).map(|_| ()))
    };
    if let Err(e) = read {
        eprintln!("cronwarden: cannot read {}: {e}", file.display());
        return Ok(ExitCode::from(2));
    }
    let timezone = match tz {
        Some(tz) if TimeZone::get(&tz).is_err() => {
            eprintln!("cronwarden: --tz: unknown time zone {tz:?}");
            return Ok(ExitCode::from(2));
        }
        Some(tz) => Some(tz),
        None => TimeZone::system().iana_name().map(str::to_string),
    };
    let opts = crontab::Options {
        system: system
            || (!stdin && crontab::is_system_path(&file.canonicalize().unwrap_or(file.into()))),
        source: if stdin {
            "stdin".into()
        } else {
            file.display().to_string()
        },
        timezone,
        safe_defaults,
    };
    let conversion = crontab::convert(&String::from_utf8_lossy(&bytes), &opts);
    std::io::stdout()
        .lock()
        .write_all(conversion.toml.as_bytes())?;
    for (line, why) in &conversion.untranslated {
        let why = why.lines().next().unwrap_or_default();
        eprintln!("{}: line {line}: not translated: {why}", opts.source);
    }
    Ok(ExitCode::from(u8::from(
        !conversion.untranslated.is_empty(),
    )))
}
