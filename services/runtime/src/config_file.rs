//! `--config PATH`: a daemon's settings from a TOML file.
//!
//! A file's keys are the daemon's long flags without their dashes
//! (`max-uploads = 64`, `tracker = "http://10.0.0.1:65001"`,
//! `verify-on-finish = true`; `_` may stand for `-`), so `--help` documents
//! the file as well and there is no second list of settings to keep in step
//! with the flags. A flag that may be repeated also takes a list
//! (`tracker = ["http://a:1", "http://b:2"]`): each item as one `--key`.
//!
//! Precedence, highest first: the command line, the `HIVE_*` environment,
//! the file, the built-in default. The command line is parsed twice: the
//! first parse finds `--config` and tells, for each setting, where its value
//! came from (clap's [`ValueSource`]); each setting of the file that came
//! from neither the command line nor the environment is then put before the
//! real arguments as `--key=value` and everything parsed again. So a value
//! from the file goes through the same parser as the flag's, and a file
//! never has to know the defaults.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use clap::{Arg, ArgAction, ArgMatches, Command, Parser, error::ErrorKind, parser::ValueSource};

/// The id of the argument that names the file. A daemon declares it as
/// `#[arg(long = "config", env = "HIVE_CONFIG", value_name = "PATH")]
/// config_file: Option<PathBuf>`.
pub const CONFIG_ARG: &str = "config_file";

/// Parses the process's command line into `C`, filled in from the file its
/// `--config` names; exits with a usage error (status 2) on a bad flag or
/// file.
pub fn parse<C: Parser>() -> C {
    try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// [`parse`] from given arguments (the first is the program's name).
pub fn try_parse_from<C, I, T>(args: I) -> Result<C, clap::Error>
where
    C: Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut command = C::command();
    let matches = command.try_get_matches_from_mut(&args)?;
    let Some(path) = matches.get_one::<PathBuf>(CONFIG_ARG) else {
        return C::from_arg_matches(&matches);
    };
    let from_file = settings(&command, &matches, path)?;
    // The program's name, then the file's settings, then the real arguments.
    let mut all = args;
    let at = all.len().min(1);
    all.splice(at..at, from_file.into_iter().map(OsString::from));
    C::from_arg_matches(&C::command().try_get_matches_from(all)?)
}

/// The file's settings that nothing on the command line or in the
/// environment overrides, as `--key=value` arguments; each value checked
/// by its flag's parser, so an error names the file and the key.
fn settings(
    command: &Command,
    matches: &ArgMatches,
    path: &Path,
) -> Result<Vec<String>, clap::Error> {
    let bad = |what: String| {
        command.clone().error(
            ErrorKind::InvalidValue,
            format!("--config {}: {what}", path.display()),
        )
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let at = e.span().map_or(0, |s| s.start.min(text.len()));
        let line = text[..at].matches('\n').count() + 1;
        bad(format!("line {line}: {}", e.message()))
    })?;
    let mut out = Vec::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let arg = setting(command, &long).ok_or_else(|| {
            bad(format!(
                "unknown setting {key:?}; the settings are the long flags of --help"
            ))
        })?;
        let given = matches!(
            matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if given {
            continue;
        }
        let values = match value {
            toml::Value::Array(items) if matches!(arg.get_action(), ArgAction::Append) => {
                if items.is_empty() {
                    return Err(bad(format!(
                        "{key}: an empty list; give at least one value"
                    )));
                }
                items.iter().collect()
            }
            one => vec![one],
        };
        for value in values {
            out.extend(setting_arg(arg, &long, key, value).map_err(&bad)?);
        }
    }
    Ok(out)
}

/// `--long=value` for one value of the setting `key` (nothing for a switch
/// set false), checked by its flag's parser; else what is wrong, naming
/// the key.
fn setting_arg(
    arg: &Arg,
    long: &str,
    key: &str,
    value: &toml::Value,
) -> Result<Option<String>, String> {
    let text = match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(x) => x.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        _ => return Err(format!("{key} must be a string, number or boolean")),
    };
    if !arg.get_action().takes_values() {
        // A switch (`--in-memory`): true sets it, false leaves it off.
        return match value {
            toml::Value::Boolean(true) => Ok(Some(format!("--{long}"))),
            toml::Value::Boolean(false) => Ok(None),
            _ => Err(format!("{key} must be true or false")),
        };
    }
    let setting = format!("--{long}={text}");
    // The flag's own parser, on this flag alone.
    Command::new("config")
        .no_binary_name(true)
        .arg(arg.clone())
        .try_get_matches_from([&setting])
        .map_err(|e| {
            let e = e.to_string();
            let first = e.lines().next().unwrap_or_default();
            format!("{key}: {}", first.trim_start_matches("error: "))
        })?;
    Ok(Some(setting))
}

/// The argument a file's key sets: any long flag but --config, --help and
/// --version.
fn setting<'a>(command: &'a Command, long: &str) -> Option<&'a Arg> {
    command.get_arguments().find(|a| {
        a.get_long() == Some(long)
            && !matches!(a.get_id().as_str(), CONFIG_ARG | "help" | "version")
    })
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, time::Duration};

    use clap::Parser;

    use super::try_parse_from;

    #[derive(Parser, Debug)]
    struct Args {
        #[arg(long = "config", value_name = "PATH")]
        config_file: Option<PathBuf>,
        #[arg(long, default_value_t = 32)]
        max_uploads: usize,
        #[arg(long, default_value = "10s", value_parser = humantime_like)]
        ttl: Duration,
        #[arg(long)]
        in_memory: bool,
        #[arg(long)]
        advertise: Option<String>,
        #[arg(long, value_delimiter = ',', default_value = "http://d:1")]
        tracker: Vec<String>,
    }

    fn humantime_like(s: &str) -> Result<Duration, String> {
        s.strip_suffix('s')
            .and_then(|n| n.parse().ok())
            .map(Duration::from_secs)
            .ok_or_else(|| format!("not a duration: {s:?}"))
    }

    fn parse(file: &str, flags: &[&str]) -> Result<Args, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hive.toml");
        std::fs::write(&path, file).unwrap();
        let path = path.display().to_string();
        let args = ["daemon", "--config", &path]
            .into_iter()
            .chain(flags.iter().copied());
        try_parse_from::<Args, _, _>(args).map_err(|e| e.to_string())
    }

    #[test]
    fn the_file_fills_in_what_no_flag_sets() {
        let a = parse("max-uploads = 7\nttl = \"3s\"\nin_memory = true\n", &[]).unwrap();
        assert_eq!(a.max_uploads, 7);
        assert_eq!(a.ttl, Duration::from_secs(3));
        assert!(a.in_memory);
        assert_eq!(a.advertise, None);
        // Not in the file: the default.
        let a = parse("advertise = \"h:1\"\n", &[]).unwrap();
        assert_eq!((a.max_uploads, a.advertise.as_deref()), (32, Some("h:1")));
    }

    #[test]
    fn a_flag_wins_over_the_file() {
        let a = parse("max-uploads = 7\nttl = \"3s\"\n", &["--max-uploads", "9"]).unwrap();
        assert_eq!((a.max_uploads, a.ttl), (9, Duration::from_secs(3)));
    }

    #[test]
    fn a_bad_file_names_the_file_and_the_key() {
        for (file, key) in [
            ("max-uploads = \"lots\"\n", "max-uploads"),
            ("nonsense = 1\n", "nonsense"),
            ("in-memory = \"yes\"\n", "in-memory"),
            ("ttl = [1]\n", "ttl"),
            ("config = \"other.toml\"\n", "config"),
            ("help = true\n", "help"),
            ("ttl = \"1s\"\nmax-uploads = \n", "line 2"),
        ] {
            let e = parse(file, &[]).unwrap_err();
            assert!(e.contains("--config") && e.contains(key), "{file}: {e}");
        }
    }

    #[test]
    fn a_repeatable_flag_takes_a_string_or_a_list() {
        let a = parse("tracker = \"http://a:1,http://b:2\"\n", &[]).unwrap();
        assert_eq!(a.tracker, ["http://a:1", "http://b:2"]);
        let a = parse("tracker = [\"http://a:1\", \"http://b:2\"]\n", &[]).unwrap();
        assert_eq!(a.tracker, ["http://a:1", "http://b:2"]);
        let a = parse("tracker = [\"http://a:1\"]\n", &["--tracker", "http://c:3"]).unwrap();
        assert_eq!(a.tracker, ["http://c:3"]);
        assert_eq!(parse("", &[]).unwrap().tracker, ["http://d:1"]);
        for file in ["tracker = []\n", "tracker = [[\"http://a:1\"]]\n"] {
            let e = parse(file, &[]).unwrap_err();
            assert!(
                e.contains("--config") && e.contains("tracker"),
                "{file}: {e}"
            );
        }
    }

    #[test]
    fn no_file_no_change() {
        let a = try_parse_from::<Args, _, _>(["daemon", "--max-uploads", "3"]).unwrap();
        assert_eq!(a.max_uploads, 3);
    }
}
