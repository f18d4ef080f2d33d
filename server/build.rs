//! Names the commit the binary is built from, for `--version` (`chat::version_and_commit!`):
//! chat-server's, and chat-tui's, whose manifest names this file too.

use std::process::Command;

fn main() {
    let git = |arguments: &[&str]| {
        Command::new("git")
            .args(arguments)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .map(|text| text.trim().to_owned())
    };
    // A source tarball (a Debian source package, `cargo package`) has no repository.
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=CHAT_BUILD_COMMIT={commit}");
    // Built again when HEAD moves: the file HEAD names, and HEAD itself.
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={head}");
    }
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"])
        .and_then(|name| git(&["rev-parse", "--git-path", &name]))
    {
        println!("cargo:rerun-if-changed={reference}");
    }
}
