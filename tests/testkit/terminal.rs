//! `chat-tui` in a real pseudo-terminal, its screen kept by a vt100 parser: what a
//! person sees and types.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portable_pty::{Child, CommandBuilder, MasterPty, PtySize, native_pty_system};

use crate::PATIENCE;

/// What a terminal does besides drawing: bells, and the OSC sequences vt100 does not
/// draw (desktop notifications).
#[derive(Default)]
pub struct Signals {
    pub bells: usize,
    /// Each unhandled OSC sequence, its parameters joined with `;`.
    pub oscs: Vec<String>,
}

impl vt100::Callbacks for Signals {
    fn audible_bell(&mut self, _: &mut vt100::Screen) {
        self.bells += 1;
    }

    fn unhandled_osc(&mut self, _: &mut vt100::Screen, params: &[&[u8]]) {
        let params: Vec<String> = params
            .iter()
            .map(|param| String::from_utf8_lossy(param).into_owned())
            .collect();
        self.oscs.push(params.join(";"));
    }
}

/// A program running in a pty of `rows` by `columns`, its output fed to a vt100 screen.
pub struct Terminal {
    screen: Arc<Mutex<vt100::Parser<Signals>>>,
    keyboard: Arc<Mutex<Box<dyn Write + Send>>>,
    child: Box<dyn Child + Send + Sync>,
    _master: Box<dyn MasterPty + Send>,
}

impl Terminal {
    /// Starts `program` with `args` and the extra environment `env` (and `TERM` set as a
    /// modern terminal would).
    pub fn start(
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        (rows, columns): (u16, u16),
    ) -> Self {
        let pty = native_pty_system()
            .openpty(PtySize {
                rows,
                cols: columns,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("open a pty");
        let mut command = CommandBuilder::new(program);
        command.args(args);
        command.env("TERM", "xterm-256color");
        for (key, value) in env {
            command.env(key, value);
        }
        let child = pty.slave.spawn_command(command).expect("spawn the program");
        drop(pty.slave);
        let screen = Arc::new(Mutex::new(vt100::Parser::new_with_callbacks(
            rows,
            columns,
            0,
            Signals::default(),
        )));
        let keyboard = Arc::new(Mutex::new(pty.master.take_writer().expect("pty writer")));
        let mut output = pty.master.try_clone_reader().expect("pty reader");
        let (feed, answer) = (screen.clone(), keyboard.clone());
        std::thread::spawn(move || {
            let mut buffer = [0u8; 8192];
            while let Ok(read) = output.read(&mut buffer) {
                if read == 0 {
                    break;
                }
                let output = &buffer[..read];
                let mut parser = feed.lock().unwrap();
                parser.process(output);
                // Answer cursor-position queries as a real terminal does; vt100 only draws.
                if output.windows(4).any(|window| window == b"\x1b[6n") {
                    let (row, column) = parser.screen().cursor_position();
                    let reply = format!("\x1b[{};{}R", row + 1, column + 1);
                    let mut keyboard = answer.lock().unwrap();
                    let _ = keyboard.write_all(reply.as_bytes());
                    let _ = keyboard.flush();
                }
            }
        });
        Self {
            screen,
            keyboard,
            child,
            _master: pty.master,
        }
    }

    /// What the screen shows now.
    pub fn contents(&self) -> String {
        self.screen.lock().unwrap().screen().contents()
    }

    /// The screen, for what `contents` leaves out (modes, cursor).
    pub fn screen(&self) -> std::sync::MutexGuard<'_, vt100::Parser<Signals>> {
        self.screen.lock().unwrap()
    }

    /// Waits until the screen shows `text`, failing with the screen if it never does.
    pub async fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.contents().contains(text) {
            assert!(
                Instant::now() < deadline,
                "the screen never showed {text:?}:\n{}",
                self.contents()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn type_keys(&mut self, keys: &str) {
        let mut keyboard = self.keyboard.lock().unwrap();
        keyboard.write_all(keys.as_bytes()).expect("type");
        keyboard.flush().expect("flush");
    }

    pub async fn wait_for_exit(&mut self) -> portable_pty::ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the program did not exit");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}
