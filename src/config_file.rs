//! Settings from a TOML file, under a program's flags and environment variables.
//!
//! Both binaries read their settings with clap; this module adds one more source below
//! the variables and above the defaults, without a second definition of the settings:
//! every flag `--some-flag` is the file's key `some-flag`, checked by the flag's own
//! parser. Precedence: flags, then variables, then the file, then the defaults.
//!
//! How it works: the program's arguments are parsed once; each key of the file whose
//! flag was given neither on the command line nor by a variable becomes that flag,
//! appended to the arguments, and they are parsed again. An error from that parse is
//! told with the file's line.
//!
//! The same definition prints the file: [`render`] writes every setting with its help
//! text as a comment and its value, which is both `config default` (the defaults) and
//! `config show` (what a run would use), and a rendered file read back renders the same.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

/// Arguments that are not settings: they say what to do, or where the settings are.
const NOT_SETTINGS: &[&str] = &["help", "version", "config"];

/// A settings file, read and parsed, but not yet checked against the flags.
#[derive(Debug)]
pub struct ConfigFile {
    path: PathBuf,
    /// Each key with the line it is on and its value.
    keys: BTreeMap<String, (usize, toml::Value)>,
}

/// Why a settings file cannot be used; each says the file and, where it can, the line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("{}:{line}: {message}", path.display())]
    Setting {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

impl ConfigFile {
    /// Reads and parses `path`: TOML, one `key = value` per setting, no tables.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.into(),
            error,
        })?;
        Self::parse(path, &text)
    }

    /// Parses `text`, read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let table: BTreeMap<toml::Spanned<String>, toml::Value> =
            toml::from_str(text).map_err(|error| ConfigError::Syntax {
                path: path.into(),
                message: error.to_string().trim_end().to_owned(),
            })?;
        let keys = table
            .into_iter()
            .map(|(key, value)| {
                let line = line_of(text, key.span().start);
                (key.into_inner(), (line, value))
            })
            .collect();
        Ok(Self {
            path: path.into(),
            keys,
        })
    }

    /// Checks every key against `command`'s flags and every value with the flag's own
    /// parser, as a run would, without running anything.
    pub fn check(&self, command: &Command) -> Result<(), ConfigError> {
        let matches = command
            .clone()
            .ignore_errors(true)
            .get_matches_from([command.get_name()]);
        self.apply(command, &matches, vec![command.get_name().into()])
            .map(drop)
    }

    /// Parses `arguments` (the program's name first) with this file under them: the
    /// settings the flags and variables leave unset are taken from the file.
    pub fn apply(
        &self,
        command: &Command,
        first_parse: &ArgMatches,
        mut arguments: Vec<OsString>,
    ) -> Result<ArgMatches, ConfigError> {
        let mut from_file = Vec::new();
        let mut words_from_file = Vec::new();
        for (key, (line, value)) in &self.keys {
            let setting_error = |message: String| ConfigError::Setting {
                path: self.path.clone(),
                line: *line,
                message,
            };
            let Some(arg) = settings(command).find(|arg| arg.get_long() == Some(key)) else {
                return Err(setting_error(unknown_key(command, key)));
            };
            let given = first_parse.value_source(arg.get_id().as_str());
            if matches!(
                given,
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            ) {
                continue;
            }
            let words =
                flag_words(arg, value).map_err(|why| setting_error(format!("{key}: {why}")))?;
            from_file.push((key.as_str(), *line));
            words_from_file.extend(words);
        }
        // Before the command line's own words, where a subcommand may follow.
        arguments.splice(1..1, words_from_file);
        command
            .clone()
            .try_get_matches_from(arguments)
            .map_err(|error| self.blame(error, &from_file))
    }

    /// Says which line of the file a parse error comes from, when it names one of the
    /// file's keys; the flags' own errors are left as clap words them.
    fn blame(&self, error: clap::Error, from_file: &[(&str, usize)]) -> ConfigError {
        let rendered = error.render().to_string();
        let message = rendered
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_owned();
        let named = from_file
            .iter()
            .find(|(key, _)| message.contains(&format!("--{key}")));
        match named {
            Some((key, line)) => ConfigError::Setting {
                path: self.path.clone(),
                line: *line,
                message: format!("{key}: {message}"),
            },
            None => ConfigError::Syntax {
                path: self.path.clone(),
                message,
            },
        }
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The arguments of `command` that are settings, in the order of its help.
fn settings(command: &Command) -> impl Iterator<Item = &Arg> {
    command.get_arguments().filter(|arg| {
        arg.get_long()
            .is_some_and(|long| !NOT_SETTINGS.contains(&long))
            && !arg.is_positional()
    })
}

/// A key that names no flag, with the closest one if there is one close enough.
fn unknown_key(command: &Command, key: &str) -> String {
    let closest = settings(command)
        .filter_map(Arg::get_long)
        .map(|long| (strsim::jaro_winkler(key, long), long))
        .filter(|(similarity, _)| *similarity > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match closest {
        Some((_, long)) => format!("unknown setting {key:?}; did you mean {long:?}?"),
        // Only chat-server prints a whole file; every program has its --help.
        None if command.find_subcommand("config").is_some() => format!(
            "unknown setting {key:?}; `{} config default` lists them all",
            command.get_name()
        ),
        None => format!(
            "unknown setting {key:?}; `{} --help` lists them all",
            command.get_name()
        ),
    }
}

/// Whether `arg` is a switch (given or not) rather than a flag with a value.
fn is_switch(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

/// The command-line words that give `arg` the file's `value`.
fn flag_words(arg: &Arg, value: &toml::Value) -> Result<Vec<OsString>, String> {
    let long = format!("--{}", arg.get_long().unwrap_or_default());
    if is_switch(arg) {
        return match value {
            toml::Value::Boolean(true) => Ok(vec![long.into()]),
            toml::Value::Boolean(false) => Ok(Vec::new()),
            _ => Err("expected true or false".into()),
        };
    }
    let values = match value {
        toml::Value::Array(values) => values.iter().collect(),
        value => vec![value],
    };
    let mut words = Vec::new();
    for value in values {
        let text = match value {
            toml::Value::String(text) => text.clone(),
            toml::Value::Integer(number) => number.to_string(),
            toml::Value::Float(number) => number.to_string(),
            toml::Value::Boolean(yes) => yes.to_string(),
            _ => return Err("expected a string, a number or a list of them".into()),
        };
        // `--flag=value`, so that a value starting with '-' is not read as a flag.
        words.push(format!("{long}={text}").into());
    }
    Ok(words)
}

/// The settings of `matches` as a settings file: every flag of `command` with its help
/// as a comment, and its value (commented out where it has none). `hidden` names the
/// settings whose values are secrets: they are shown as set, not what they are.
pub fn render(command: &Command, matches: &ArgMatches, hidden: &[&str]) -> String {
    let mut file = String::new();
    let _ = writeln!(
        file,
        "# Settings of {name}: each key is the flag of the same name (`{name} --help`).\n\
         # Flags and environment variables take precedence over this file.",
        name = command.get_name()
    );
    for arg in settings(command) {
        let long = arg.get_long().unwrap_or_default();
        file.push('\n');
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(ToString::to_string)
            .unwrap_or_default();
        // clap drops a one-line help's final stop; the file is prose.
        let help = match help.chars().last() {
            Some(last) if !".!?:".contains(last) => help + ".",
            _ => help,
        };
        for line in wrap(&help, 86) {
            let _ = writeln!(file, "# {line}");
        }
        if let Some(variable) = arg.get_env() {
            let _ = writeln!(file, "# Environment: {}", variable.to_string_lossy());
        }
        let raw: Vec<String> = matches
            .get_raw(arg.get_id().as_str())
            .map(|values| {
                values
                    .map(|value| value.to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let repeatable = matches!(arg.get_action(), ArgAction::Append);
        if is_switch(arg) {
            let on = matches.get_flag(arg.get_id().as_str());
            let _ = writeln!(file, "{long} = {on}");
        } else if hidden.contains(&long) && !raw.is_empty() {
            let _ = writeln!(file, "# {long} = (set, not shown)");
        } else if repeatable {
            let items: Vec<String> = raw.iter().map(|value| toml_value(value)).collect();
            let _ = writeln!(file, "{long} = [{}]", items.join(", "));
        } else if let Some(value) = raw.first() {
            let _ = writeln!(file, "{long} = {}", toml_value(value));
        } else {
            let example = arg
                .get_value_names()
                .and_then(|names| names.first())
                .map_or_else(|| long.to_uppercase(), ToString::to_string);
            let _ = writeln!(file, "# {long} = {}", toml_value(&example));
        }
    }
    file
}

/// A value as TOML writes it: a number when it reads as one, else a string.
fn toml_value(raw: &str) -> String {
    if raw.parse::<i64>().is_ok() {
        return raw.to_owned();
    }
    if raw.contains('.')
        && raw.parse::<f64>().is_ok_and(|number| number.is_finite())
        && !raw.starts_with('.')
        && !raw.ends_with('.')
    {
        return raw.to_owned();
    }
    toml::Value::String(raw.to_owned()).to_string()
}

/// `text` as lines of at most `width` characters, broken between words, its own line
/// breaks kept.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.lines() {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> Command {
        Command::new("demo")
            .arg(Arg::new("config").long("config"))
            .arg(
                Arg::new("port")
                    .long("port")
                    .help("Port to listen on.")
                    .default_value("8000")
                    .value_parser(clap::value_parser!(u16)),
            )
            .arg(
                Arg::new("ratio")
                    .long("ratio")
                    .default_value("0.5")
                    .value_parser(clap::value_parser!(f64)),
            )
            .arg(Arg::new("host").long("host").default_value("127.0.0.1"))
            .arg(Arg::new("data-dir").long("data-dir").value_name("DIR"))
            .arg(
                Arg::new("allowed-origin")
                    .long("allowed-origin")
                    .action(ArgAction::Append),
            )
            .arg(Arg::new("echo").long("echo").action(ArgAction::SetTrue))
            .arg(Arg::new("secret").long("secret"))
    }

    fn load(text: &str, arguments: &[&str]) -> Result<ArgMatches, ConfigError> {
        let file = ConfigFile::parse(Path::new("demo.toml"), text)?;
        let mut all: Vec<OsString> = vec!["demo".into()];
        all.extend(arguments.iter().map(OsString::from));
        let first = command().try_get_matches_from(&all).expect("flags parse");
        file.apply(&command(), &first, all)
    }

    #[test]
    fn the_file_sets_what_the_flags_leave_unset() {
        let matches = load(
            "port = 9000\nhost = \"0.0.0.0\"\necho = true\nallowed-origin = [\"a\", \"b\"]\n",
            &["--host", "::1"],
        )
        .unwrap();
        assert_eq!(matches.get_one::<u16>("port"), Some(&9000));
        assert_eq!(matches.get_one::<String>("host").unwrap(), "::1");
        assert!(matches.get_flag("echo"));
        let origins: Vec<&String> = matches.get_many("allowed-origin").unwrap().collect();
        assert_eq!(origins, ["a", "b"]);
    }

    #[test]
    fn errors_name_the_line() {
        let bad_value = load("host = \"x\"\n\nport = 70000\n", &[]).unwrap_err();
        assert_eq!(
            bad_value
                .to_string()
                .split(": ")
                .take(2)
                .collect::<Vec<_>>(),
            ["demo.toml:3", "port"],
            "{bad_value}"
        );
        let unknown = load("\nprot = 1\n", &[]).unwrap_err().to_string();
        assert!(
            unknown.starts_with("demo.toml:2: unknown setting \"prot\"; did you mean \"port\"?"),
            "{unknown}"
        );
        let wrong_type = load("echo = \"yes\"\n", &[]).unwrap_err().to_string();
        assert_eq!(wrong_type, "demo.toml:1: echo: expected true or false");
        let syntax = load("port = \n", &[]).unwrap_err().to_string();
        assert!(syntax.contains("line 1"), "{syntax}");
    }

    #[test]
    fn a_rendered_file_renders_the_same_when_read_back() {
        let defaults = command().get_matches_from(["demo"]);
        let rendered = render(&command(), &defaults, &["secret"]);
        assert!(
            rendered.contains("# Port to listen on.\nport = 8000\n"),
            "{rendered}"
        );
        assert!(rendered.contains("\n# data-dir = \"DIR\"\n"), "{rendered}");
        let again = load(&rendered, &[]).unwrap();
        assert_eq!(render(&command(), &again, &["secret"]), rendered);

        let set = load(
            "data-dir = \"/var/lib/x\"\nratio = 2.25\nallowed-origin = [\"*\"]\n",
            &[],
        )
        .unwrap();
        let rendered = render(&command(), &set, &["secret"]);
        let again = load(&rendered, &[]).unwrap();
        assert_eq!(render(&command(), &again, &["secret"]), rendered);
    }

    #[test]
    fn a_secret_is_rendered_as_set_but_not_shown() {
        let set = load("secret = \"s3cret\"\n", &[]).unwrap();
        let rendered = render(&command(), &set, &["secret"]);
        assert!(!rendered.contains("s3cret"), "{rendered}");
        assert!(
            rendered.contains("\n# secret = (set, not shown)\n"),
            "{rendered}"
        );
    }
}
