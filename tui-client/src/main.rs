//! The `chat-tui` binary: flags, the terminal's set-up and restoration (also on panic),
//! and the event loop that feeds `App::update` and draws.

use std::io::{self, IsTerminal, Stdout};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use chat::ClientId;
use chat_tui::app::{App, BufferId, Command};
use chat_tui::event::Event;
use chat_tui::net::{self, Credentials, Steering, Target, Trust};
use chat_tui::sgr::BasicColours;
use chat_tui::{pipe, ui};
use clap::Parser;
use crossterm::event::{
    DisableBracketedPaste, DisableFocusChange, DisableMouseCapture, EnableBracketedPaste,
    EnableFocusChange, EnableMouseCapture, EventStream,
};
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use crossterm::{cursor, execute};
use futures_util::StreamExt;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::sync::mpsc;

/// What `--help` says after the flags: the keys and the commands from their tables, then
/// what they do not say.
fn after_help() -> String {
    format!(
        "{}
A message that mentions your id is highlighted; while the terminal is not focused it
also rings the bell and asks for a desktop notification (--no-notify: not that).

When stdin or stdout is not a terminal, or with --plain, it is a line client: each
stdin line is sent and each message is printed as one line.",
        chat_tui::keys::help_text(88)
    )
}

/// A terminal client for the chat.
#[derive(Parser, Debug)]
#[command(version = chat::version_and_commit!(), about, after_help = after_help())]
struct Args {
    /// What to print instead of joining a room.
    #[command(subcommand)]
    about: Option<chat::about::About>,

    /// Your client id, a decimal integer. Without it, a time-based id is made, as the
    /// browser page does.
    #[arg(long, env = "CHAT_ID", value_parser = ClientId::parse)]
    id: Option<ClientId>,

    /// The server's base URL: ws:// or wss://, with a path if it is served under one.
    #[arg(long, env = "CHAT_SERVER", default_value = "ws://localhost:8000")]
    server: String,

    /// The room to join (1-64 of A-Z a-z 0-9 . _ -); /join moves to another.
    #[arg(long, env = "CHAT_ROOM", default_value = chat::v1::RoomName::DEFAULT, value_parser = chat::v1::RoomName::parse)]
    room: chat::v1::RoomName,

    /// Append every message received, and every edit and delete, to this file, once,
    /// as plain text: one line each, after the date and time it was said and its room.
    /// A directory: one file per room in it, ROOM.log.
    #[arg(long, value_name = "FILE|DIR")]
    log: Option<std::path::PathBuf>,

    /// How many messages to keep for scrolling back.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    scrollback: u32,

    /// The largest message the server takes, in bytes (the server's --max-message-bytes):
    /// a longer line is kept (or, in pipe mode, skipped with a warning), not sent.
    #[arg(long, env = "CHAT_MAX_MESSAGE_BYTES", default_value_t = chat_tui::app::DEFAULT_MAX_MESSAGE_BYTES as u32, value_parser = clap::value_parser!(u32).range(1..))]
    max_message_bytes: u32,

    /// How the time before each message is written: a strftime format, local time
    /// (`%H:%M` for minutes, `%a %H:%M` with the day).
    #[arg(long, value_name = "FORMAT", default_value = chat_tui::time_format::DEFAULT, value_parser = chat_tui::time_format::TimeFormat::new)]
    time_format: chat_tui::time_format::TimeFormat,

    /// Start with the smart filter on (Alt-J turns it off and on): the joins and leaves
    /// of people who had not spoken in the 10 minutes before are hidden.
    #[arg(long)]
    smart_filter: bool,

    /// A word that highlights a message as a mention of you does (any case, as a word of
    /// its own); again for more.
    #[arg(long, value_name = "WORD", action = clap::ArgAction::Append)]
    highlight: Vec<String>,

    /// URLs as clickable links (OSC 8): auto, where the terminal is known to support
    /// them (kitty, iTerm2, WezTerm, foot, VTE terminals, Windows Terminal, VS Code,
    /// Ghostty; not inside tmux or screen); always; never.
    #[arg(long, value_enum, default_value_t = Hyperlinks::Auto, value_name = "WHEN")]
    hyperlinks: Hyperlinks,

    /// More rooms to open at the start, beside --room (and those open when you last
    /// quit): ops,dev, or the flag again.
    #[arg(long, value_name = "ROOM,…", value_delimiter = ',', action = clap::ArgAction::Append, value_parser = chat::v1::RoomName::parse)]
    rooms: Vec<chat::v1::RoomName>,

    /// Colours: auto (none if NO_COLOR is set), always, never. Bold, reverse and dim
    /// are drawn either way.
    #[arg(long, value_enum, default_value_t = Colours::Auto, value_name = "WHEN")]
    colours: Colours,

    /// Bind a key to an action, before the key table: NAME=KEY, as older-mention=Alt-P
    /// or quit=Ctrl-Q (the names are in docs/keys.md); again for more.
    #[arg(long, value_name = "NAME=KEY", action = clap::ArgAction::Append, value_parser = chat_tui::keys::Rebinding::parse)]
    key: Vec<chat_tui::keys::Rebinding>,

    /// Read the settings from this file rather than $XDG_CONFIG_HOME/chat-tui/config.toml
    /// (~/.config/chat-tui/config.toml): TOML, each key a flag's name (server = "ws://…",
    /// rooms = ["ops"], no-mouse = true); the flags and variables come first.
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,

    /// Leave the mouse to the terminal, so text can be selected; the wheel won't scroll.
    #[arg(long)]
    no_mouse: bool,

    /// No bell and no desktop notification when a message mentions your id while the
    /// terminal is not focused (it is still highlighted).
    #[arg(long)]
    no_notify: bool,

    /// Line mode for scripts, even on a terminal.
    #[arg(long)]
    plain: bool,

    /// Trust the server's certificate only if this CA (a PEM file) issued it, for a
    /// server with a private certificate authority.
    #[arg(
        long,
        env = "CHAT_CA_CERT",
        value_name = "FILE",
        conflicts_with = "insecure"
    )]
    ca_cert: Option<std::path::PathBuf>,

    /// Accept any TLS certificate for wss:// (throwaway test servers only).
    #[arg(long)]
    insecure: bool,

    /// A token proving your id, for a server started with --jwt-secret (sent in the
    /// Authorization header).
    #[arg(long, env = "CHAT_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Read the token proving your id from this file (its first line), so that it is in
    /// no command line nor settings file.
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    token_file: Option<std::path::PathBuf>,

    /// The name to go by, shown beside your id (1-32 printable characters). A server
    /// that checks tokens takes the name from the token instead.
    #[arg(long, env = "CHAT_NAME", value_parser = chat::v1::DisplayName::parse)]
    name: Option<chat::v1::DisplayName>,
}

/// When messages are drawn in colour.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Colours {
    Auto,
    Always,
    Never,
}

/// `$XDG_CONFIG_HOME/chat-tui/config.toml`, or `~/.config/chat-tui/config.toml`.
fn default_settings_file() -> Option<std::path::PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|dir| !dir.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| std::path::PathBuf::from(home).join(".config"))
        })?;
    Some(config.join("chat-tui").join("config.toml"))
}

/// The arguments, with the settings file under them (`chat::config_file`: each key a
/// flag's name; flags, then variables, then the file, then the defaults). A file named
/// with --config must be there; the default one may not be. A bad file is told as
/// FILE:LINE: what is wrong.
fn arguments() -> Result<Args, String> {
    use clap::{CommandFactory, FromArgMatches};
    let command = Args::command();
    let words: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // clap says what is wrong with the arguments in its own words, with its "did you
    // mean" tips, and exits with status 2.
    let first = command.clone().get_matches_from(&words);
    // `completions` and `man` print from the flags' definitions alone: a settings file,
    // even a broken one, has no say in them.
    if first.subcommand().is_some() {
        return Args::from_arg_matches(&first).map_err(|error| error.to_string());
    }
    let (file, named) = match first.get_one::<std::path::PathBuf>("config") {
        Some(file) => (Some(file.clone()), true),
        None => (default_settings_file(), false),
    };
    let matches = match file {
        Some(file) if named || file.exists() => chat::config_file::ConfigFile::read(&file)
            .and_then(|settings| settings.apply(&command, &first, words))
            .map_err(|error| error.to_string())?,
        _ => first,
    };
    Args::from_arg_matches(&matches).map_err(|error| error.to_string())
}

/// When URLs are drawn as hyperlinks.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Hyperlinks {
    Auto,
    Always,
    Never,
}

/// Whether this terminal is known to make OSC 8 hyperlinks clickable, by what it says
/// of itself in the environment; a multiplexer in between may not pass them on.
fn terminal_links() -> bool {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if !var("TMUX").is_empty() || var("TERM").starts_with("screen") {
        return false;
    }
    let program = var("TERM_PROGRAM");
    let term = var("TERM");
    ["iTerm.app", "WezTerm", "vscode", "ghostty"].contains(&program.as_str())
        || var("VTE_VERSION")
            .parse::<u32>()
            .is_ok_and(|version| version >= 5000)
        || !var("KITTY_WINDOW_ID").is_empty()
        || !var("WT_SESSION").is_empty()
        || ["xterm-kitty", "foot", "wezterm", "xterm-ghostty"]
            .iter()
            .any(|known| term.starts_with(known))
}

fn main() -> ExitCode {
    let args = match arguments() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("chat-tui: {error}");
            return ExitCode::from(2);
        }
    };
    if let Some(about) = &args.about {
        use clap::CommandFactory;
        return match about.print(Args::command(), &mut io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("chat-tui: cannot write to standard output: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let token = match &args.token_file {
        Some(file) => match std::fs::read_to_string(file) {
            Ok(text) => Some(text.lines().next().unwrap_or_default().trim().to_owned()),
            Err(error) => {
                eprintln!(
                    "chat-tui: cannot read the token file {}: {error}",
                    file.display()
                );
                return ExitCode::from(2);
            }
        },
        None => args.token.clone(),
    };
    let id_was_given = args.id.is_some();
    let id = args.id.clone().unwrap_or_else(time_based_id);
    let trust = match (&args.ca_cert, args.insecure) {
        (Some(file), _) => match Trust::ca_file(file) {
            Ok(trust) => trust,
            Err(error) => {
                eprintln!("chat-tui: {error:#}");
                return ExitCode::from(2);
            }
        },
        (None, true) => Trust::Any,
        (None, false) => Trust::WebPki,
    };
    let credentials = Credentials {
        token,
        name: args.name.clone(),
    };
    let target = match Target::new(&args.server, &id, trust, credentials) {
        Ok(target) => target,
        Err(error) => {
            eprintln!("chat-tui: {error:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("chat-tui: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    // A terminal that cannot move the cursor (TERM=dumb: Emacs shells, some CI logs)
    // gets the line mode too.
    let dumb = std::env::var_os("TERM").is_some_and(|term| term == "dumb");
    let plain = args.plain || dumb || !io::stdin().is_terminal() || !io::stdout().is_terminal();
    let result = if plain {
        if !id_was_given {
            eprintln!("chat-tui: your id is {id}");
        }
        runtime
            .block_on(pipe::run(
                &target.in_room(&args.room),
                &id,
                args.max_message_bytes as usize,
            ))
            .map(|()| ExitCode::SUCCESS)
    } else {
        runtime.block_on(interactive(&args, id, target))
    };
    // A read of stdin may still be blocked in one of the runtime's threads, and would
    // hold up a normal shutdown until the next line: exit without waiting for it.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("chat-tui: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Milliseconds since 1970, like the browser page's `Date.now()`.
fn time_based_id() -> ClientId {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis());
    ClientId::parse(&millis.to_string()).expect("a number of milliseconds is a valid id")
}

fn local_time() -> String {
    chat_tui::app::local_time_of(chat_tui::app::unix_millis())
}

/// The signals that end the full-screen client as Ctrl-C does, the terminal restored:
/// SIGTERM (`kill`, a service manager), SIGHUP (the terminal closed) and SIGINT (`kill
/// -INT`; in raw mode Ctrl-C is a key, not a signal).
#[cfg(unix)]
struct Signals {
    term: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn listen() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind: SignalKind| signal(kind).context("listening for signals");
        Ok(Self {
            term: listen(SignalKind::terminate())?,
            hangup: listen(SignalKind::hangup())?,
            interrupt: listen(SignalKind::interrupt())?,
        })
    }

    /// The next of them to come, as its number.
    async fn next(&mut self) -> i32 {
        use tokio::signal::unix::SignalKind;
        tokio::select! {
            _ = self.term.recv() => SignalKind::terminate().as_raw_value(),
            _ = self.hangup.recv() => SignalKind::hangup().as_raw_value(),
            _ = self.interrupt.recv() => SignalKind::interrupt().as_raw_value(),
        }
    }
}

/// Elsewhere, Ctrl-Break and the console closing, as tokio reports them.
#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn listen() -> anyhow::Result<Self> {
        Ok(Self)
    }

    async fn next(&mut self) -> i32 {
        if tokio::signal::ctrl_c().await.is_err() {
            // Not listening: never.
            std::future::pending::<()>().await;
        }
        2
    }
}

/// The full-screen client. Ends with success when the user quits, and with 128 + the
/// signal's number, as a shell reports it, after a signal.
async fn interactive(args: &Args, id: ClientId, target: Target) -> anyhow::Result<ExitCode> {
    chat_tui::time_format::choose(args.time_format.clone());
    let mouse = !args.no_mouse;
    let server = args.server.trim_end_matches('/').to_owned();
    let mut app = App::new(
        server.clone(),
        id.to_string(),
        args.scrollback as usize,
        local_time,
    );
    app.max_message_bytes = args.max_message_bytes as usize;
    app.notify = !args.no_notify;
    app.mouse = mouse;
    app.rebound = args.key.clone();
    app.hyperlinks = match args.hyperlinks {
        Hyperlinks::Always => true,
        Hyperlinks::Never => false,
        Hyperlinks::Auto => terminal_links(),
    };
    app.highlights = args
        .highlight
        .iter()
        .map(|word| word.trim().to_lowercase())
        .filter(|word| !word.is_empty())
        .collect();
    app.set_smart_filter(args.smart_filter);
    // NO_COLOR (no-color.org) asks for no colours, and only that: the view leaves them
    // out and keeps bold, reverse and dim. crossterm honours it too, by writing a reset
    // in place of any colour, which would drop the attributes with it; so it is told to
    // write what the view gives it.
    app.colours = match args.colours {
        Colours::Always => true,
        Colours::Never => false,
        Colours::Auto => std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty()),
    };
    crossterm::style::force_color_output(true);

    let (events_in, mut events) = mpsc::channel::<Event>(1024);
    let mut log = match &args.log {
        Some(path) => Some(Log::open(path)?),
        None => None,
    };
    if log.is_some() {
        app.keep_received();
    }
    app.room = args.room.clone();
    let target = Target {
        offer: chat_tui::event::Protocol::V2,
        ..target
    };
    let mut networks = Networks {
        target,
        events: events_in.clone(),
        open: std::collections::HashMap::new(),
    };
    networks.open(app.active_buffer(), args.room.clone());
    // The rooms open when the client last quit, for this server and id, beside.
    let rooms = RoomsFile::locate();
    let key = format!("{server} {id}");
    for room in rooms
        .as_ref()
        .map(|file| file.read(&key))
        .unwrap_or_default()
    {
        if let Some(Command::Open { buffer, room }) = app.open_beside(room) {
            networks.open(buffer, room);
        }
    }
    // And those the flags or the settings file name.
    for room in args.rooms.iter().cloned() {
        if let Some(Command::Open { buffer, room }) = app.open_beside(room) {
            networks.open(buffer, room);
        }
    }

    // Listened for before the terminal is changed, so that none goes unheard.
    let mut signals = Signals::listen()?;
    let restore_on_exit = TerminalGuard::enter(mouse)?;
    chat_tui::text::set_quirks(measure_quirks());
    let mut terminal = Terminal::new(CrosstermBackend::new(BasicColours::new(io::stdout())))
        .context("opening the terminal")?;
    redraw_everything(&mut terminal)?;
    let size = terminal.size()?;
    app.update(Event::Terminal(crossterm::event::Event::Resize(
        size.width,
        size.height,
    )));
    tokio::spawn(forward_terminal_events(events_in.clone()));
    tokio::spawn(tick_every_second(events_in));

    // Redraws are coalesced: everything already waiting is applied before one draw, so a
    // burst of messages costs one frame, and with nothing happening nothing is drawn.
    const MOST_EVENTS_PER_FRAME: usize = 4096;
    terminal.draw(|frame| ui::render(&app, frame))?;
    panic_if_testing_the_panic_hook();
    let mut exit = ExitCode::SUCCESS;
    'running: loop {
        terminal.draw(|frame| ui::render(&app, frame))?;
        let next = tokio::select! {
            next = events.recv() => next,
            number = signals.next() => {
                exit = ExitCode::from(u8::try_from(128 + number).unwrap_or(u8::MAX));
                None
            }
        };
        let Some(mut event) = next else {
            break;
        };
        for _ in 0..MOST_EVENTS_PER_FRAME {
            let command = app.update(event);
            // The direct messages the server listed, opened beside.
            for (buffer, room) in app.take_opened() {
                networks.open(buffer, room);
            }
            // Typing, read positions, edits and pages: each is said again or asked
            // again if it cannot go now, so a full channel drops it.
            for (buffer, line) in app.take_all_frames() {
                let _ = networks.send(buffer, app.connections_of(buffer), line);
            }
            if let Some(writing) = &mut log {
                let written: io::Result<()> = app
                    .take_received()
                    .iter()
                    .try_for_each(|received| writing.write(received));
                if let Err(error) = written {
                    app.notice(&format!(
                        "cannot write the log {}: {error}; logging stopped",
                        writing.path.display()
                    ));
                    log = None;
                }
            }
            let buffer = app.routed();
            match command {
                Some(Command::Quit) => break 'running,
                Some(Command::Redraw) => redraw_everything(&mut terminal)?,
                Some(Command::Mouse(take)) => {
                    // Not worth failing for: the next Alt-M tries again.
                    let _ = if take {
                        execute!(io::stdout(), EnableMouseCapture)
                    } else {
                        execute!(io::stdout(), DisableMouseCapture)
                    };
                }
                Some(Command::Reconnect) => networks.reconnect(buffer),
                Some(Command::Notify(text)) => notify(&text),
                Some(Command::Open { buffer, room }) => networks.open(buffer, room),
                Some(Command::Close { buffer, frames }) => {
                    for line in frames {
                        let _ = networks.send(buffer, app.connections_of(buffer), line);
                    }
                    networks.close(buffer);
                }
                Some(Command::Send(line)) => {
                    if let Err(line) = networks.send(buffer, app.connections_of(buffer), line) {
                        app.unsent(line);
                    }
                }
                Some(Command::Resend(frames)) => {
                    let connection = app.connections_of(buffer);
                    for line in frames {
                        // A full channel means a connection backed up far beyond these
                        // few; the next reconnect sends them again if it did not.
                        let _ = networks.send(buffer, connection, line);
                    }
                }
                None => {}
            }
            match events.try_recv() {
                Ok(next) => event = next,
                Err(_) => break,
            }
        }
    }
    // The terminal back first, so that a word about the rooms file can be read.
    drop(restore_on_exit);
    if let Some(file) = &rooms
        && let Err(error) = file.write(&key, &app.rooms())
    {
        // Not worth failing for: the rooms are opened by hand next time.
        eprintln!(
            "chat-tui: cannot keep the open rooms in {}: {error}",
            file.0.display()
        );
    }
    // Closing the line channels tells the network tasks to close the sockets politely.
    let tasks = networks.close_all();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        futures_util::future::join_all(tasks),
    )
    .await;
    Ok(exit)
}

/// Where the rooms open at quitting are kept for the next start, one line per server
/// and id: `ws://host:8000 42 main,ops,dm.7.42`.
struct RoomsFile(std::path::PathBuf);

/// The most server-and-id lines kept; the oldest go.
const MOST_ROOM_LINES: usize = 100;

impl RoomsFile {
    /// `$XDG_STATE_HOME/chat-tui/rooms`, or `~/.local/state/chat-tui/rooms`.
    fn locate() -> Option<Self> {
        let state = std::env::var_os("XDG_STATE_HOME")
            .filter(|dir| !dir.is_empty())
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|home| std::path::PathBuf::from(home).join(".local/state"))
            })?;
        Some(Self(state.join("chat-tui").join("rooms")))
    }

    /// The rooms kept for `key` (server and id), in order; none if unreadable.
    fn read(&self, key: &str) -> Vec<chat::v1::RoomName> {
        let text = std::fs::read_to_string(&self.0).unwrap_or_default();
        text.lines()
            .filter_map(|line| line.strip_prefix(key)?.strip_prefix(' '))
            .next()
            .map(|rooms| {
                rooms
                    .split(',')
                    .filter_map(|room| chat::v1::RoomName::parse(room).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Keeps `rooms` for `key`, last, in place of what was kept for it.
    fn write(&self, key: &str, rooms: &[chat::v1::RoomName]) -> io::Result<()> {
        let text = std::fs::read_to_string(&self.0).unwrap_or_default();
        let mut lines: Vec<String> = text
            .lines()
            .filter(|line| {
                line.strip_prefix(key)
                    .is_none_or(|rest| !rest.starts_with(' '))
            })
            .map(str::to_owned)
            .collect();
        let rooms: Vec<&str> = rooms.iter().map(chat::v1::RoomName::as_str).collect();
        lines.push(format!("{key} {}", rooms.join(",")));
        let from = lines.len().saturating_sub(MOST_ROOM_LINES);
        if let Some(dir) = self.0.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&self.0, lines[from..].join("\n") + "\n")
    }
}

/// The connections of the open buffers: one network task each, with what steers it and
/// the channel of lines it sends.
struct Networks {
    target: Target,
    /// Where every task's news goes, tagged with its buffer.
    events: mpsc::Sender<Event>,
    open: std::collections::HashMap<BufferId, Network>,
}

struct Network {
    steering: std::sync::Arc<Steering>,
    lines: mpsc::Sender<net::Outgoing>,
    task: tokio::task::JoinHandle<()>,
}

impl Networks {
    /// Connects buffer `buffer` to `room`.
    fn open(&mut self, buffer: BufferId, room: chat::v1::RoomName) {
        let (lines_out, lines) = mpsc::channel::<net::Outgoing>(64);
        let (news_in, mut news) = mpsc::channel::<Event>(256);
        let events = self.events.clone();
        // Each task's news, tagged with its buffer for `App::update`.
        tokio::spawn(async move {
            while let Some(event) = news.recv().await {
                let event = match event {
                    Event::Net(news) => Event::Room(buffer, news),
                    other => other,
                };
                if events.send(event).await.is_err() {
                    return;
                }
            }
        });
        let steering = Steering::new(room);
        let task = tokio::spawn(net::run(
            self.target.clone(),
            lines,
            news_in,
            steering.clone(),
        ));
        self.open.insert(
            buffer,
            Network {
                steering,
                lines: lines_out,
                task,
            },
        );
    }

    /// Hands `line` to buffer `buffer`'s connection number `connection`; gives it back
    /// if sending is backed up.
    fn send(&self, buffer: BufferId, connection: u64, line: String) -> Result<(), String> {
        let Some(network) = self.open.get(&buffer) else {
            return Ok(());
        };
        network
            .lines
            .try_send(net::Outgoing { connection, line })
            .map_err(|refused| refused.into_inner().line)
    }

    fn reconnect(&self, buffer: BufferId) {
        if let Some(network) = self.open.get(&buffer) {
            network.steering.reconnect();
        }
    }

    /// Closes buffer `buffer`'s connection politely (its line channel ends).
    fn close(&mut self, buffer: BufferId) {
        self.open.remove(&buffer);
    }

    /// Closes every connection; the tasks, to wait for.
    fn close_all(self) -> Vec<tokio::task::JoinHandle<()>> {
        self.open
            .into_values()
            .map(|network| network.task)
            .collect()
    }
}

type Screen = Terminal<CrosstermBackend<BasicColours<Stdout>>>;

/// Clears the screen and has the next draw write every cell again (Ctrl-L).
///
/// Not `Terminal::clear`: that asks the terminal where the cursor is, and the answer
/// goes to the event stream's reader, which holds the input; crossterm then gives up
/// after 2 s and the client quit. Resizing to the same size clears the screen and resets
/// the back buffer without asking anything.
fn redraw_everything(terminal: &mut Screen) -> io::Result<()> {
    let size = terminal.size()?;
    terminal.resize(ratatui::layout::Rect::new(0, 0, size.width, size.height))
}

/// Draws each of [`chat_tui::text::PROBES`] in the top left corner and asks the terminal
/// where that left the cursor: how many columns it drew it in. A terminal that does not
/// answer (crossterm waits 2 s) is taken to draw them as they are counted.
fn measure_quirks() -> chat_tui::text::Quirks {
    let mut columns = [0; chat_tui::text::PROBES.len()];
    let mut stdout = io::stdout();
    for (index, probe) in chat_tui::text::PROBES.iter().enumerate() {
        let drawn = execute!(stdout, cursor::MoveTo(0, 0), crossterm::style::Print(probe));
        match drawn.and_then(|()| cursor::position()) {
            Ok((column, _)) => columns[index] = usize::from(column),
            Err(_) => return chat_tui::text::Quirks::default(),
        }
    }
    let _ = execute!(
        stdout,
        crossterm::terminal::Clear(crossterm::terminal::ClearType::All)
    );
    chat_tui::text::Quirks::measured(columns)
}

/// Rings the bell and asks for a desktop notification, in the two forms terminals know
/// (OSC 9: iTerm2, kitty, WezTerm, foot; OSC 777: rxvt, VTE-based), which the others
/// ignore. `text` is already sanitized: no control character can end the sequence.
fn notify(text: &str) {
    let text: String = text.chars().take(200).collect();
    let sequence = format!("\x07\x1b]9;{text}\x07\x1b]777;notify;chat-tui;{text}\x07");
    let mut stdout = io::stdout();
    let _ = std::io::Write::write_all(&mut stdout, sequence.as_bytes());
    let _ = std::io::Write::flush(&mut stdout);
}

/// `--log PATH`: every message received, and every edit and delete, appended once as
/// one plain line: the date and time it was said, its room, its text. PATH a directory:
/// one file per room in it, `ROOM.log`; otherwise one file for all. A failed write (a
/// full disk) stops the logging, with a notice, not the client.
struct Log {
    /// The one file, or the directory of the rooms' files.
    path: std::path::PathBuf,
    per_room: bool,
    /// The files open, by path.
    files: std::collections::HashMap<std::path::PathBuf, LogFile>,
}

/// One log file, and what it holds already.
struct LogFile {
    file: std::io::LineWriter<std::fs::File>,
    /// The lines at the end of the file already: the history a `chat.v1.json` server
    /// sends on every connection is logged by a previous run, and not again.
    /// Counted, as the same line may be there twice (two joins in one second).
    already: std::collections::HashMap<String, usize>,
}

/// How much of the end of an existing log is read to know what it holds already: more
/// than a room's history (the server's default keeps 1000 events).
const LOG_TAIL_BYTES: u64 = 4 << 20;

impl Log {
    /// Logging to `path`, a file or a directory; the one file is opened now, so that a
    /// path that cannot be written is said at the start.
    fn open(path: &std::path::Path) -> anyhow::Result<Self> {
        let mut log = Self {
            path: path.to_owned(),
            per_room: path.is_dir(),
            files: std::collections::HashMap::new(),
        };
        if !log.per_room {
            log.files.insert(path.to_owned(), LogFile::open(path)?);
        }
        Ok(log)
    }

    fn write(&mut self, received: &chat_tui::app::Received) -> io::Result<()> {
        // A room name is 1-64 of A-Z a-z 0-9 . _ - (`RoomName`): a file name as it is.
        let path = if self.per_room {
            self.path.join(format!("{}.log", received.room))
        } else {
            self.path.clone()
        };
        let file = match self.files.entry(path) {
            std::collections::hash_map::Entry::Occupied(open) => open.into_mut(),
            std::collections::hash_map::Entry::Vacant(new) => {
                let file = LogFile::open(new.key()).map_err(io::Error::other)?;
                new.insert(file)
            }
        };
        file.write(&received.line(chrono::Local::now()))
    }
}

impl LogFile {
    fn open(path: &std::path::Path) -> anyhow::Result<Self> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .with_context(|| format!("cannot open the log {}", path.display()))?;
        let length = file.metadata().map(|meta| meta.len()).unwrap_or(0);
        let mut tail = Vec::new();
        file.seek(SeekFrom::Start(length.saturating_sub(LOG_TAIL_BYTES)))
            .and_then(|_| file.read_to_end(&mut tail))
            .with_context(|| format!("cannot read the log {}", path.display()))?;
        let mut already = std::collections::HashMap::new();
        for line in String::from_utf8_lossy(&tail).lines() {
            *already.entry(line.to_owned()).or_insert(0) += 1;
        }
        Ok(Self {
            file: std::io::LineWriter::new(file),
            already,
        })
    }

    fn write(&mut self, line: &str) -> io::Result<()> {
        if let Some(times) = self.already.get_mut(line).filter(|times| **times > 0) {
            *times -= 1;
            return Ok(());
        }
        std::io::Write::write_all(&mut self.file, format!("{line}\n").as_bytes())
    }
}

/// A [`Event::Tick`] each second, for what shows only for a while (someone typing).
async fn tick_every_second(events: mpsc::Sender<Event>) {
    let mut second = tokio::time::interval(std::time::Duration::from_secs(1));
    second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        second.tick().await;
        if events.send(Event::Tick).await.is_err() {
            return;
        }
    }
}

async fn forward_terminal_events(events: mpsc::Sender<Event>) {
    let mut terminal_events = EventStream::new();
    while let Some(Ok(event)) = terminal_events.next().await {
        if events.send(Event::Terminal(event)).await.is_err() {
            return;
        }
    }
}

/// Puts the terminal in raw mode on the alternate screen, and restores it exactly when
/// dropped, on a normal exit and on an error. A panic hook restores it too, before the
/// panic message is printed, so the message is readable.
struct TerminalGuard;

impl TerminalGuard {
    fn enter(mouse: bool) -> anyhow::Result<Self> {
        let previous_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous_hook(info);
        }));
        enable_raw_mode().context("putting the terminal in raw mode")?;
        let guard = Self;
        let mut stdout = io::stdout();
        execute!(
            stdout,
            EnterAlternateScreen,
            EnableBracketedPaste,
            EnableFocusChange
        )?;
        if mouse {
            execute!(stdout, EnableMouseCapture)?;
        }
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn restore_terminal() {
    let mut stdout: Stdout = io::stdout();
    let _ = execute!(
        stdout,
        DisableMouseCapture,
        DisableBracketedPaste,
        DisableFocusChange,
        LeaveAlternateScreen,
        cursor::Show
    );
    let _ = disable_raw_mode();
}

/// Fault injection for the end-to-end tests, which check that a panic gives the terminal
/// back as it was: with `CHAT_TUI_TEST_PANIC` set, the client panics once the screen is
/// drawn. Only in debug builds, which the tests use; a release build has no such switch.
fn panic_if_testing_the_panic_hook() {
    if cfg!(debug_assertions) && std::env::var_os("CHAT_TUI_TEST_PANIC").is_some() {
        panic!("CHAT_TUI_TEST_PANIC is set");
    }
}
