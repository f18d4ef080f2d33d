//! Every test that starts `chat-tui` gives it a scratch `XDG_STATE_HOME` and
//! `XDG_CONFIG_HOME`: a test never writes the rooms it opened into the user's state,
//! nor reads the user's settings file.

/// How a test starts the binary: by Cargo's path to it, or the end-to-end tests' helper.
const STARTS: [&str; 2] = [concat!("CARGO_BIN_EXE_", "chat-tui"), "chat_tui_binary()"];

/// The test files of this crate and of the end-to-end crate, with their text.
fn test_files() -> Vec<(std::path::PathBuf, String)> {
    let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [crate_dir.join("tests"), crate_dir.join("../tests")] {
        let entries = std::fs::read_dir(&dir).expect("a tests folder");
        for entry in entries {
            let path = entry.expect("a folder entry").path();
            // This file names the starts without making any.
            let this = path
                .file_name()
                .is_some_and(|name| name == "scratch_homes.rs");
            if path.extension().is_some_and(|ext| ext == "rs") && !this {
                let text = std::fs::read_to_string(&path).expect("a test file");
                files.push((path, text));
            }
        }
    }
    files
}

#[test]
fn every_start_of_chat_tui_sets_both_scratch_homes() {
    let mut checked = 0;
    for (path, text) in test_files() {
        let starts: usize = STARTS.iter().map(|start| text.matches(start).count()).sum();
        if starts == 0 {
            continue;
        }
        checked += 1;
        for variable in ["\"XDG_STATE_HOME\"", "\"XDG_CONFIG_HOME\""] {
            let set = text.matches(variable).count();
            assert!(
                set >= starts,
                "{}: chat-tui is started {starts} times and {variable} set {set} times",
                path.display()
            );
        }
    }
    assert!(checked >= 8, "the test files were found ({checked})");
}
