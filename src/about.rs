//! What both binaries print about themselves, from their clap definitions: a shell's
//! completion script, the manual page, and the version with the commit it was built from.
//!
//! The packages install what these print (contrib/deb/build), so the completions and the
//! manual cannot drift from the flags.

use std::io::{self, Write};

/// The subcommands that print something about the program and exit; each binary
/// flattens them into its own subcommands.
#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum About {
    /// Print a shell's completion script for this program.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print this program's manual page (roff: `man -l -` reads it from a pipe).
    Man,
}

impl About {
    /// Writes what was asked for `command`, the program's whole clap definition.
    pub fn print(&self, mut command: clap::Command, out: &mut impl Write) -> io::Result<()> {
        match self {
            Self::Completions { shell } => {
                let name = command.get_name().to_owned();
                clap_complete::generate(*shell, &mut command, name, out);
                Ok(())
            }
            Self::Man => clap_mangen::Man::new(command).render(out),
        }
    }
}

/// The version `--version` prints: the package's, and the commit it was built from, as
/// `0.1.0 (commit 0123456789ab)`. It reads `CHAT_BUILD_COMMIT`, which the calling
/// package's build script sets (server/build.rs, which chat-tui's manifest also names).
#[macro_export]
macro_rules! version_and_commit {
    () => {
        concat!(
            env!("CARGO_PKG_VERSION"),
            " (commit ",
            env!("CHAT_BUILD_COMMIT"),
            ")"
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn demo() -> Command {
        Command::new("demo")
            .about("A demonstration")
            .arg(Arg::new("port").long("port").help("Port to listen on"))
    }

    fn printed(about: About) -> String {
        let mut out = Vec::new();
        about.print(demo(), &mut out).expect("print");
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn the_manual_and_completions_name_every_flag() {
        let manual = printed(About::Man);
        assert!(manual.contains(".TH demo 1"), "{manual}");
        assert!(manual.contains("\\-\\-port"), "{manual}");
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Fish] {
            let script = printed(About::Completions { shell });
            assert!(script.contains("demo"), "{shell}: {script}");
            assert!(script.contains("port"), "{shell}: {script}");
        }
    }
}
