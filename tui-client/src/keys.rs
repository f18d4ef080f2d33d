//! The keys and the `/commands`, as data: the one place they are written. The input
//! handler dispatches through [`BINDINGS`] and [`COMMANDS`]; the status bar's hint,
//! `/help`, `--help` and `docs/keys.md` are made from them.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseEventKind};

use crate::text::wrap;

/// What a person presses (or turns: the wheel), as a binding names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Press {
    /// A key, whatever modifiers come with it, unless a `Ctrl` or `Alt` binding of the
    /// same key takes it first.
    Key(KeyCode),
    /// A key with Ctrl held (Alt too, unless an `Alt` binding says otherwise: Ctrl comes
    /// first).
    Ctrl(KeyCode),
    /// A key with Alt held.
    Alt(KeyCode),
    /// Any character typed without Ctrl or Alt: other chords are not text, so a stray
    /// Alt-x never types an x.
    Text,
    /// The mouse wheel turned up (unless `--no-mouse` leaves it to the terminal).
    WheelUp,
    /// The mouse wheel turned down.
    WheelDown,
}

/// When a binding applies: some keys do one thing on an empty line and another on a
/// line with text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Always,
    /// The input line holds nothing.
    LineEmpty,
    /// The input line holds something.
    LineHasText,
    /// Connecting, counting down to a retry, or stopped after a failure.
    NotConnected,
}

/// What the client is doing, as far as the bindings care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Situation {
    pub line_empty: bool,
    pub connected: bool,
}

impl When {
    fn holds(self, situation: Situation) -> bool {
        match self {
            Self::Always => true,
            Self::LineEmpty => situation.line_empty,
            Self::LineHasText => !situation.line_empty,
            Self::NotConnected => !situation.connected,
        }
    }

    /// How the help says it; empty for [`When::Always`].
    pub fn phrase(self) -> &'static str {
        match self {
            Self::Always => "",
            Self::LineEmpty => "on an empty line",
            Self::LineHasText => "with text in the line",
            Self::NotConnected => "while not connected",
        }
    }
}

/// What a key does; `App` carries each out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Send,
    NewLine,
    Type,
    CharLeft,
    CharRight,
    WordLeft,
    WordRight,
    LineStart,
    LineEnd,
    Backspace,
    Delete,
    DeleteWordBefore,
    DeleteWordAfter,
    DeleteToStart,
    DeleteToEnd,
    Yank,
    /// Completes the name or id before the cursor; again, the next one.
    Complete,
    /// Up on an empty line: our last message, to edit (`chat.v2.json`), or else
    /// [`Action::HistoryBack`].
    EditLast,
    /// Shows the buffer of the digit pressed (Alt-1 is the first, Alt-0 the tenth).
    SwitchBuffer,
    NextBuffer,
    PreviousBuffer,
    /// Selects the message above the selected one (or the newest).
    SelectOlder,
    /// Selects the message below the selected one (past the newest: none).
    SelectNewer,
    HistoryBack,
    HistoryForward,
    PageUp,
    PageDown,
    WheelUp,
    WheelDown,
    Oldest,
    Newest,
    Search,
    EndSearch,
    Redraw,
    Reconnect,
    ToggleMembers,
    /// Scrolls who is here (F2) up a page.
    MembersUp,
    /// Scrolls who is here (F2) down a page.
    MembersDown,
    ToggleBuffers,
    ToggleSmartFilter,
    ToggleMouse,
    /// Shows the next mention of us going back from what is shown.
    OlderMention,
    /// Shows the read marker.
    ToReadMarker,
    Quit,
}

/// One row of the key table.
#[derive(Debug, Clone, Copy)]
pub struct Binding {
    pub keys: &'static [Press],
    pub when: When,
    /// What it does, in the help's words.
    pub what: &'static str,
    pub action: Action,
    /// The word beside its key in the status bar's hint, for the few shown there.
    pub hint: Option<&'static str>,
}

const fn row(keys: &'static [Press], when: When, action: Action, what: &'static str) -> Binding {
    Binding {
        keys,
        when,
        what,
        action,
        hint: None,
    }
}

const fn hinted(
    keys: &'static [Press],
    action: Action,
    hint: &'static str,
    what: &'static str,
) -> Binding {
    Binding {
        keys,
        when: When::Always,
        what,
        action,
        hint: Some(hint),
    }
}

use Press::{Alt, Ctrl, Key};
use When::{Always, LineEmpty, LineHasText, NotConnected};

/// Every key the full-screen client takes, in the order the help lists them.
pub const BINDINGS: &[Binding] = &[
    hinted(
        &[Key(KeyCode::Enter)],
        Action::Send,
        "send",
        "send the line; an empty one is not sent, and one over `--max-message-bytes` is kept with a warning",
    ),
    row(
        &[Alt(KeyCode::Enter)],
        Always,
        Action::NewLine,
        "a new line in the same message",
    ),
    row(
        &[Press::Text],
        Always,
        Action::Type,
        "typed into the line (a paste too, without its trailing newline: it is sent only on Enter)",
    ),
    row(
        &[Key(KeyCode::Left)],
        Always,
        Action::CharLeft,
        "a character back, as the terminal draws one (`❤️`, a flag, a ZWJ family)",
    ),
    row(
        &[Key(KeyCode::Right)],
        Always,
        Action::CharRight,
        "a character forward",
    ),
    row(
        &[Alt(KeyCode::Char('b')), Ctrl(KeyCode::Left)],
        Always,
        Action::WordLeft,
        "a word back",
    ),
    row(
        &[Alt(KeyCode::Char('f')), Ctrl(KeyCode::Right)],
        Always,
        Action::WordRight,
        "a word forward",
    ),
    row(
        &[Ctrl(KeyCode::Char('a'))],
        Always,
        Action::LineStart,
        "to the start of the line",
    ),
    row(
        &[Key(KeyCode::Home)],
        LineHasText,
        Action::LineStart,
        "to the start of the line",
    ),
    row(
        &[Ctrl(KeyCode::Char('e'))],
        Always,
        Action::LineEnd,
        "to the end of the line",
    ),
    row(
        &[Key(KeyCode::End)],
        LineHasText,
        Action::LineEnd,
        "to the end of the line",
    ),
    row(
        &[Key(KeyCode::Backspace)],
        Always,
        Action::Backspace,
        "delete the character before the cursor",
    ),
    row(
        &[Key(KeyCode::Delete)],
        Always,
        Action::Delete,
        "delete the character under the cursor",
    ),
    row(
        &[Ctrl(KeyCode::Char('d'))],
        LineHasText,
        Action::Delete,
        "delete the character under the cursor",
    ),
    row(
        &[Ctrl(KeyCode::Char('w'))],
        Always,
        Action::DeleteWordBefore,
        "delete the word before the cursor",
    ),
    row(
        &[Alt(KeyCode::Char('d'))],
        Always,
        Action::DeleteWordAfter,
        "delete the word after the cursor",
    ),
    row(
        &[Ctrl(KeyCode::Char('u'))],
        Always,
        Action::DeleteToStart,
        "delete everything before the cursor",
    ),
    row(
        &[Ctrl(KeyCode::Char('k'))],
        Always,
        Action::DeleteToEnd,
        "delete everything after the cursor",
    ),
    row(
        &[Ctrl(KeyCode::Char('y'))],
        Always,
        Action::Yank,
        "put back what the last of the four deletes above took",
    ),
    row(
        &[Key(KeyCode::Tab)],
        Always,
        Action::Complete,
        "complete the name or id before the cursor (after an `@` too) from who is here and who spoke; again, the next one (`: ` after it at the start of the line)",
    ),
    row(
        &[Key(KeyCode::Up)],
        LineEmpty,
        Action::EditLast,
        "edit your last message (`chat.v2.json` servers; Enter saves, Esc gives up); elsewhere an earlier line you sent",
    ),
    row(
        &[Key(KeyCode::Up)],
        LineHasText,
        Action::HistoryBack,
        "an earlier line you sent",
    ),
    row(
        &[Alt(KeyCode::Up)],
        Always,
        Action::SelectOlder,
        "select a message: the newest, then each above it (shown in reverse); `/reply`, `/react`, `/edit` and `/delete` act on it (`chat.v2.json` servers)",
    ),
    row(
        &[Alt(KeyCode::Down)],
        Always,
        Action::SelectNewer,
        "select the message below; past the newest, none",
    ),
    row(
        &[Key(KeyCode::Down)],
        Always,
        Action::HistoryForward,
        "a later line you sent, then what you were typing",
    ),
    hinted(
        &[Key(KeyCode::PageUp)],
        Action::PageUp,
        "scroll",
        "scroll the messages up a page; new ones don't move the view while you are scrolled up",
    ),
    row(
        &[Key(KeyCode::PageDown)],
        Always,
        Action::PageDown,
        "scroll the messages down a page; once the rest fits, the view follows new ones again",
    ),
    row(
        &[Press::WheelUp],
        Always,
        Action::WheelUp,
        "scroll the messages up a few rows",
    ),
    row(
        &[Press::WheelDown],
        Always,
        Action::WheelDown,
        "scroll the messages down a few rows",
    ),
    row(
        &[Ctrl(KeyCode::Home)],
        Always,
        Action::Oldest,
        "the oldest message",
    ),
    row(
        &[Key(KeyCode::Home)],
        LineEmpty,
        Action::Oldest,
        "the oldest message",
    ),
    row(
        &[Ctrl(KeyCode::End)],
        Always,
        Action::Newest,
        "the newest message",
    ),
    row(
        &[Key(KeyCode::End)],
        LineEmpty,
        Action::Newest,
        "the newest message",
    ),
    row(
        &[Alt(KeyCode::Char('n'))],
        Always,
        Action::OlderMention,
        "show the next message that mentions you (or a `--highlight` word), going back from what is shown; again, the one before it",
    ),
    row(
        &[Alt(KeyCode::Char('u'))],
        Always,
        Action::ToReadMarker,
        "show the read marker: where you stopped reading (End goes back to the newest)",
    ),
    row(
        &[Ctrl(KeyCode::Char('r'))],
        Always,
        Action::Search,
        "search older messages for the line's text, then for the next older match (any case)",
    ),
    row(
        &[Key(KeyCode::Esc)],
        Always,
        Action::EndSearch,
        "give up an edit, or the selected message, or end the search",
    ),
    row(
        &[Ctrl(KeyCode::Char('l'))],
        Always,
        Action::Redraw,
        "redraw the whole screen (if the terminal left stray glyphs)",
    ),
    row(
        &[Key(KeyCode::F(5))],
        NotConnected,
        Action::Reconnect,
        "reconnect now, while waiting to retry or after a failure that is not retried",
    ),
    row(
        &[
            Alt(KeyCode::Char('1')),
            Alt(KeyCode::Char('2')),
            Alt(KeyCode::Char('3')),
            Alt(KeyCode::Char('4')),
            Alt(KeyCode::Char('5')),
            Alt(KeyCode::Char('6')),
            Alt(KeyCode::Char('7')),
            Alt(KeyCode::Char('8')),
            Alt(KeyCode::Char('9')),
            Alt(KeyCode::Char('0')),
        ],
        Always,
        Action::SwitchBuffer,
        "show that buffer (a room or a direct message open: `/join`, `/query`), as the status bar numbers them; Alt-0 is the tenth, `/buffer N` any",
    ),
    row(
        &[Ctrl(KeyCode::Char('n')), Alt(KeyCode::Right)],
        Always,
        Action::NextBuffer,
        "show the next buffer",
    ),
    row(
        &[Ctrl(KeyCode::Char('p')), Alt(KeyCode::Left)],
        Always,
        Action::PreviousBuffer,
        "show the previous buffer",
    ),
    row(
        &[Key(KeyCode::F(3))],
        Always,
        Action::ToggleBuffers,
        "hide or show the list of open buffers, left of the messages (shown while more than one is open)",
    ),
    row(
        &[Alt(KeyCode::Char('j'))],
        Always,
        Action::ToggleSmartFilter,
        "the smart filter: hide or show the joins and leaves of people who had not spoken in the 10 minutes before (`chat.v1.json` servers; `--smart-filter` starts with it on)",
    ),
    row(
        &[Alt(KeyCode::Char('m'))],
        Always,
        Action::ToggleMouse,
        "give the mouse to the terminal, so that text can be selected and copied (the wheel no longer scrolls), and take it back",
    ),
    row(
        &[Key(KeyCode::F(2))],
        Always,
        Action::ToggleMembers,
        "show or hide who is here, beside the messages (`chat.v1.json` servers)",
    ),
    row(
        &[Key(KeyCode::F(11))],
        Always,
        Action::MembersUp,
        "scroll who is here (F2) up a page",
    ),
    row(
        &[Key(KeyCode::F(12))],
        Always,
        Action::MembersDown,
        "scroll who is here (F2) down a page, in a room of thousands",
    ),
    hinted(
        &[Ctrl(KeyCode::Char('c'))],
        Action::Quit,
        "quit",
        "quit (with messages not sent yet, or a line typed, says so first: again to drop them); the terminal is restored, also on an error or a panic",
    ),
    row(&[Ctrl(KeyCode::Char('d'))], LineEmpty, Action::Quit, "quit"),
];

/// Which of a key's bindings are tried first: a Ctrl chord before an Alt one, either
/// before the plain key, so that Alt-Enter is not Enter and Ctrl-Home is not Home.
fn precedence(input: Press) -> u8 {
    match input {
        Ctrl(_) => 0,
        Alt(_) => 1,
        _ => 2,
    }
}

impl Press {
    /// Whether `key` is this input.
    fn matches(self, key: &KeyEvent) -> bool {
        let control = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        match self {
            Key(code) => key.code == code,
            Ctrl(code) => control && key.code == code,
            Alt(code) => alt && key.code == code,
            Press::Text => matches!(key.code, KeyCode::Char(_)) && !control && !alt,
            Press::WheelUp | Press::WheelDown => false,
        }
    }

    /// Its name in the help: `Ctrl-Home`, `Alt-B`, `PageUp`.
    pub fn name(self) -> String {
        match self {
            Key(code) => code_name(code),
            Ctrl(code) => format!("Ctrl-{}", code_name(code)),
            Alt(code) => format!("Alt-{}", code_name(code)),
            Press::Text => "a character".to_owned(),
            Press::WheelUp => "mouse wheel up".to_owned(),
            Press::WheelDown => "mouse wheel down".to_owned(),
        }
    }

    /// Its name where room is short (the status bar): `^C`, `PgUp`.
    pub fn short_name(self) -> String {
        match self {
            Ctrl(code) => format!("^{}", code_name(code)),
            Key(KeyCode::PageUp) => "PgUp".to_owned(),
            Key(KeyCode::PageDown) => "PgDn".to_owned(),
            other => other.name(),
        }
    }
}

fn code_name(code: KeyCode) -> String {
    match code {
        KeyCode::Char(c) => c.to_uppercase().to_string(),
        KeyCode::F(n) => format!("F{n}"),
        KeyCode::PageUp => "PageUp".to_owned(),
        KeyCode::PageDown => "PageDown".to_owned(),
        KeyCode::Esc => "Esc".to_owned(),
        other => format!("{other:?}"),
    }
}

/// The action bound to `key` in `situation`, if any.
pub fn action_for_key(key: &KeyEvent, situation: Situation) -> Option<Action> {
    BINDINGS
        .iter()
        .flat_map(|binding| binding.keys.iter().map(move |input| (*input, binding)))
        .filter(|(input, binding)| input.matches(key) && binding.when.holds(situation))
        .min_by_key(|(input, _)| precedence(*input))
        .map(|(_, binding)| binding.action)
}

/// The names of the actions a key can be bound to with `--key NAME=KEY` (the settings
/// file's `key`), as `docs/keys.md` lists them beside each binding.
pub const ACTION_NAMES: &[(&str, Action)] = &[
    ("send", Action::Send),
    ("new-line", Action::NewLine),
    ("char-left", Action::CharLeft),
    ("char-right", Action::CharRight),
    ("word-left", Action::WordLeft),
    ("word-right", Action::WordRight),
    ("line-start", Action::LineStart),
    ("line-end", Action::LineEnd),
    ("backspace", Action::Backspace),
    ("delete", Action::Delete),
    ("delete-word-before", Action::DeleteWordBefore),
    ("delete-word-after", Action::DeleteWordAfter),
    ("delete-to-start", Action::DeleteToStart),
    ("delete-to-end", Action::DeleteToEnd),
    ("yank", Action::Yank),
    ("complete", Action::Complete),
    ("edit-last", Action::EditLast),
    ("next-buffer", Action::NextBuffer),
    ("previous-buffer", Action::PreviousBuffer),
    ("select-older", Action::SelectOlder),
    ("select-newer", Action::SelectNewer),
    ("history-back", Action::HistoryBack),
    ("history-forward", Action::HistoryForward),
    ("page-up", Action::PageUp),
    ("page-down", Action::PageDown),
    ("oldest", Action::Oldest),
    ("newest", Action::Newest),
    ("search", Action::Search),
    ("end-search", Action::EndSearch),
    ("redraw", Action::Redraw),
    ("reconnect", Action::Reconnect),
    ("toggle-members", Action::ToggleMembers),
    ("members-up", Action::MembersUp),
    ("members-down", Action::MembersDown),
    ("toggle-buffers", Action::ToggleBuffers),
    ("toggle-smart-filter", Action::ToggleSmartFilter),
    ("toggle-mouse", Action::ToggleMouse),
    ("older-mention", Action::OlderMention),
    ("to-read-marker", Action::ToReadMarker),
    ("quit", Action::Quit),
];

impl Action {
    /// Its name for `--key`, if it can be bound there (typing, Alt-digit and the wheel
    /// cannot).
    pub fn name(self) -> Option<&'static str> {
        ACTION_NAMES
            .iter()
            .find(|(_, action)| *action == self)
            .map(|(name, _)| *name)
    }
}

/// A key the user bound to an action (`--key NAME=KEY`): it comes before the table's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebinding {
    pub press: Press,
    pub action: Action,
}

impl Rebinding {
    /// Reads `NAME=KEY`: `older-mention=Alt-P`, `quit=Ctrl-Q`, `toggle-buffers=F4`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, key) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not NAME=KEY (older-mention=Alt-P)"))?;
        let action = ACTION_NAMES
            .iter()
            .find(|(known, _)| *known == name.trim())
            .map(|(_, action)| *action)
            .ok_or_else(|| {
                let names: Vec<&str> = ACTION_NAMES.iter().map(|(name, _)| *name).collect();
                format!(
                    "no action is called {name:?}; the names: {}",
                    names.join(", ")
                )
            })?;
        Ok(Self {
            press: parse_press(key.trim())?,
            action,
        })
    }
}

/// Reads a key as the help names it: `Ctrl-Q`, `Alt-P`, `F4`, `Tab`, `PageUp`, `x`.
pub fn parse_press(text: &str) -> Result<Press, String> {
    let (wrap, rest): (fn(KeyCode) -> Press, &str) = if let Some(rest) = text.strip_prefix("Ctrl-")
    {
        (Ctrl, rest)
    } else if let Some(rest) = text.strip_prefix("Alt-") {
        (Alt, rest)
    } else {
        (Key, text)
    };
    let named = [
        ("Enter", KeyCode::Enter),
        ("Tab", KeyCode::Tab),
        ("Esc", KeyCode::Esc),
        ("Backspace", KeyCode::Backspace),
        ("Delete", KeyCode::Delete),
        ("Home", KeyCode::Home),
        ("End", KeyCode::End),
        ("PageUp", KeyCode::PageUp),
        ("PageDown", KeyCode::PageDown),
        ("Up", KeyCode::Up),
        ("Down", KeyCode::Down),
        ("Left", KeyCode::Left),
        ("Right", KeyCode::Right),
    ];
    let code = if let Some((_, code)) = named
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(rest))
    {
        *code
    } else if let Some(number) = rest
        .strip_prefix('F')
        .and_then(|number| number.parse::<u8>().ok())
        .filter(|number| (1..=12).contains(number))
    {
        KeyCode::F(number)
    } else {
        let mut chars = rest.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) if !c.is_control() => KeyCode::Char(c.to_ascii_lowercase()),
            _ => {
                return Err(format!(
                    "{text:?} is not a key (Ctrl-Q, Alt-P, F4, Tab, PageUp)"
                ));
            }
        }
    };
    let press = wrap(code);
    if matches!(press, Key(KeyCode::Char(_))) {
        return Err(format!(
            "{text:?} would take a letter from typing: Ctrl- or Alt- with it"
        ));
    }
    Ok(press)
}

/// The action bound to `key` in `situation`: the user's `rebound` keys first, then the
/// table's.
pub fn action_for_key_in(
    key: &KeyEvent,
    situation: Situation,
    rebound: &[Rebinding],
) -> Option<Action> {
    rebound
        .iter()
        .filter(|rebinding| rebinding.press.matches(key))
        .min_by_key(|rebinding| precedence(rebinding.press))
        .map(|rebinding| rebinding.action)
        .or_else(|| action_for_key(key, situation))
}

/// The action bound to a turn of the mouse wheel, if any.
pub fn action_for_wheel(kind: MouseEventKind) -> Option<Action> {
    let wanted = match kind {
        MouseEventKind::ScrollUp => Press::WheelUp,
        MouseEventKind::ScrollDown => Press::WheelDown,
        _ => return None,
    };
    BINDINGS
        .iter()
        .find(|binding| binding.keys.contains(&wanted))
        .map(|binding| binding.action)
}

/// What a `/command` does; `App` carries each out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlashAction {
    Buffer,
    /// A moderator's request, by the command's name.
    Moderate,
    Part,
    Query,
    Msg,
    Edit,
    Delete,
    React,
    Reply,
    Me,
    Join,
    Who,
    Reconnect,
    Search,
    Clear,
    Quit,
    Help,
}

/// One row of the command table.
#[derive(Debug, Clone, Copy)]
pub struct SlashCommand {
    /// Typed after the `/`.
    pub name: &'static str,
    /// What follows it, as the help names it.
    pub argument: Option<&'static str>,
    pub what: &'static str,
    pub action: SlashAction,
}

/// Every `/command`, in the order the help lists them. Anything else that starts with
/// one `/` is not sent to the room: it stays in the input line, with a notice.
pub const COMMANDS: &[SlashCommand] = &[
    SlashCommand {
        name: "join",
        argument: Some("ROOM"),
        what: "open ROOM beside the rooms open (a buffer, over a connection of its own), or show it if it is open",
        action: SlashAction::Join,
    },
    SlashCommand {
        name: "kick",
        argument: Some("ID [REASON]"),
        what: "remove ID from the room (moderators; they may come back)",
        action: SlashAction::Moderate,
    },
    SlashCommand {
        name: "ban",
        argument: Some("ID [DURATION] [REASON]"),
        what: "remove ID and keep them out, for DURATION (30m, 2h, 7d) or until /unban",
        action: SlashAction::Moderate,
    },
    SlashCommand {
        name: "unban",
        argument: Some("ID"),
        what: "lift ID's ban",
        action: SlashAction::Moderate,
    },
    SlashCommand {
        name: "mute",
        argument: Some("ID [DURATION]"),
        what: "ID reads but cannot send, for DURATION or until /unmute",
        action: SlashAction::Moderate,
    },
    SlashCommand {
        name: "unmute",
        argument: Some("ID"),
        what: "let ID send again",
        action: SlashAction::Moderate,
    },
    SlashCommand {
        name: "topic",
        argument: Some("TEXT"),
        what: "set the room's topic (nothing: clear it)",
        action: SlashAction::Moderate,
    },
    SlashCommand {
        name: "slow",
        argument: Some("DURATION|off"),
        what: "one message per DURATION for each member (moderators excepted)",
        action: SlashAction::Moderate,
    },
    SlashCommand {
        name: "op",
        argument: Some("ID"),
        what: "make ID a moderator of the room (owners)",
        action: SlashAction::Moderate,
    },
    SlashCommand {
        name: "deop",
        argument: Some("ID"),
        what: "make ID a member again (owners)",
        action: SlashAction::Moderate,
    },
    SlashCommand {
        name: "buffer",
        argument: Some("N|ROOM"),
        what: "show buffer N, as the status bar numbers them (past Alt-0, the tenth), or the buffer of ROOM",
        action: SlashAction::Buffer,
    },
    SlashCommand {
        name: "part",
        argument: None,
        what: "leave this room and close its buffer (not the last one)",
        action: SlashAction::Part,
    },
    SlashCommand {
        name: "query",
        argument: Some("ID"),
        what: "open the direct messages with ID (the room dm.<id>.<id>, for the two of you only)",
        action: SlashAction::Query,
    },
    SlashCommand {
        name: "msg",
        argument: Some("ID TEXT"),
        what: "open the direct messages with ID and say TEXT there (at once, or as soon as its connection has joined)",
        action: SlashAction::Msg,
    },
    SlashCommand {
        name: "who",
        argument: None,
        what: "who is here, as a line in the pane (`chat.v1.json` servers)",
        action: SlashAction::Who,
    },
    SlashCommand {
        name: "me",
        argument: Some("TEXT"),
        what: "say what you do: `* Ada waves` (`chat.v2.json` servers)",
        action: SlashAction::Me,
    },
    SlashCommand {
        name: "reply",
        argument: Some("TEXT"),
        what: "answer the selected message (Alt-Up), or else the newest of someone else's; the reply shows it quoted above (`chat.v2.json` servers)",
        action: SlashAction::Reply,
    },
    SlashCommand {
        name: "edit",
        argument: Some("[TEXT]"),
        what: "your selected or else last message becomes TEXT; without TEXT, it is put in the line to edit, as Up on an empty line does (`chat.v2.json` servers)",
        action: SlashAction::Edit,
    },
    SlashCommand {
        name: "delete",
        argument: None,
        what: "take your selected or else last message back (`chat.v2.json` servers)",
        action: SlashAction::Delete,
    },
    SlashCommand {
        name: "react",
        argument: Some("EMOJI"),
        what: "react to the selected message, or else the newest of someone else's (again: take it back); reactions show under the message (`chat.v2.json` servers)",
        action: SlashAction::React,
    },
    SlashCommand {
        name: "reconnect",
        argument: None,
        what: "drop the connection and make a new one",
        action: SlashAction::Reconnect,
    },
    SlashCommand {
        name: "search",
        argument: Some("TEXT"),
        what: "on a `chat.v2.json` server, ask it for the newest messages with words starting so, over all it keeps; elsewhere, scroll to the newest message containing TEXT (shown in reverse), Ctrl-R going to older ones and Esc ending it",
        action: SlashAction::Search,
    },
    SlashCommand {
        name: "clear",
        argument: None,
        what: "clear the messages shown",
        action: SlashAction::Clear,
    },
    SlashCommand {
        name: "quit",
        argument: None,
        what: "quit",
        action: SlashAction::Quit,
    },
    SlashCommand {
        name: "help",
        argument: None,
        what: "list the commands and the keys",
        action: SlashAction::Help,
    },
];

/// How to send a line that starts with `/`, listed with the commands.
const ESCAPE: (&str, &str) = ("//text", "send `/text`");

impl SlashCommand {
    /// As typed: `/join ROOM`.
    pub fn usage(&self) -> String {
        match self.argument {
            Some(argument) => format!("/{} {argument}", self.name),
            None => format!("/{}", self.name),
        }
    }
}

/// The command called `name` (without its `/`).
pub fn slash_command(name: &str) -> Option<&'static SlashCommand> {
    COMMANDS.iter().find(|command| command.name == name)
}

/// The keys of a binding as the help lists them: `Alt-B, Ctrl-Left`.
fn keys_cell(binding: &Binding) -> String {
    let names: Vec<String> = binding.keys.iter().map(|input| input.name()).collect();
    match names.as_slice() {
        // A run (Alt-1 … Alt-9) as its ends, so that the key column stays narrow.
        [first, .., last] if names.len() > 3 => format!("{first} … {last}"),
        _ => names.join(", "),
    }
}

/// The status bar's reminder of the most used keys: `Enter send · PgUp scroll · ^C quit `.
pub fn key_hint() -> String {
    let hints: Vec<String> = BINDINGS
        .iter()
        .filter_map(|binding| {
            let hint = binding.hint?;
            let key = binding.keys.first()?.short_name();
            Some(format!("{key} {hint}"))
        })
        .collect();
    format!("{} ", hints.join(" · "))
}

/// Rows of `(left, right)` as plain text: the left column padded, the right wrapped to
/// fit `width` columns and its continuations indented under it.
fn columns(rows: &[(String, String)], width: usize) -> String {
    let left = rows
        .iter()
        .map(|(left, _)| crate::text::width(left))
        .max()
        .unwrap_or(0);
    let mut text = String::new();
    for (key, what) in rows {
        let pad = left - crate::text::width(key);
        let lines = wrap(what, width.saturating_sub(left + 4));
        for (index, line) in lines.iter().enumerate() {
            if index == 0 {
                text.push_str(&format!(
                    "  {key}{}  {}\n",
                    " ".repeat(pad),
                    line.trim_end()
                ));
            } else {
                text.push_str(&format!("  {}  {}\n", " ".repeat(left), line.trim_end()));
            }
        }
    }
    text
}

fn key_rows() -> Vec<(String, String)> {
    BINDINGS
        .iter()
        .map(|binding| {
            let keys = match binding.when {
                Always => keys_cell(binding),
                when => format!("{} {}", keys_cell(binding), when.phrase()),
            };
            (keys, binding.what.to_owned())
        })
        .collect()
}

fn command_rows() -> Vec<(String, String)> {
    COMMANDS
        .iter()
        .map(|command| (command.usage(), command.what.to_owned()))
        .chain(std::iter::once((ESCAPE.0.to_owned(), ESCAPE.1.to_owned())))
        .collect()
}

/// The keys and the commands as `--help` lists them, `width` columns wide.
pub fn help_text(width: usize) -> String {
    format!(
        "Keys:\n{}\nCommands, typed in the input line:\n{}",
        columns(&key_rows(), width),
        columns(&command_rows(), width)
    )
}

/// What `/help` says: the commands, then the keys.
pub fn help_notice() -> String {
    let commands = columns(&command_rows(), usize::MAX);
    let keys = columns(&key_rows(), usize::MAX);
    format!("commands:\n{commands}keys:\n{}", keys.trim_end())
}

/// A Markdown table cell: `|` would end the cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// The key table and the command table in Markdown, as `docs/keys.md` has them.
pub fn keys_markdown() -> String {
    let mut markdown =
        String::from("| key | what it does | when | `--key` name |\n|---|---|---|---|\n");
    for binding in BINDINGS {
        markdown.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            cell(&keys_cell(binding)),
            cell(binding.what),
            binding.when.phrase(),
            binding
                .action
                .name()
                .map_or_else(String::new, |name| format!("`{name}`"))
        ));
    }
    markdown.push_str("\n| command | argument | what it does |\n|---|---|---|\n");
    for command in COMMANDS {
        markdown.push_str(&format!(
            "| `/{}` | {} | {} |\n",
            command.name,
            command
                .argument
                .map_or_else(String::new, |argument| format!("`{argument}`")),
            cell(command.what)
        ));
    }
    markdown.push_str(&format!("| `{}` |  | {} |\n", ESCAPE.0, cell(ESCAPE.1)));
    markdown
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key event that is `input`.
    fn event(input: Press) -> Option<KeyEvent> {
        let (code, modifiers) = match input {
            Key(code) => (code, KeyModifiers::NONE),
            Ctrl(code) => (code, KeyModifiers::CONTROL),
            Alt(code) => (code, KeyModifiers::ALT),
            Press::Text => (KeyCode::Char('x'), KeyModifiers::NONE),
            Press::WheelUp | Press::WheelDown => return None,
        };
        Some(KeyEvent::new(code, modifiers))
    }

    fn situations(when: When) -> Vec<Situation> {
        let all = [false, true].into_iter().flat_map(|line_empty| {
            [false, true].map(|connected| Situation {
                line_empty,
                connected,
            })
        });
        all.filter(|situation| when.holds(*situation)).collect()
    }

    #[test]
    fn every_binding_reaches_its_action() {
        for binding in BINDINGS {
            for input in binding.keys {
                for situation in situations(binding.when) {
                    let action = match event(*input) {
                        Some(key) => action_for_key(&key, situation),
                        None => action_for_wheel(match input {
                            Press::WheelUp => MouseEventKind::ScrollUp,
                            _ => MouseEventKind::ScrollDown,
                        }),
                    };
                    assert_eq!(
                        action,
                        Some(binding.action),
                        "{} {situation:?}: another binding takes it",
                        input.name()
                    );
                }
            }
        }
    }

    #[test]
    fn chords_come_before_the_plain_key_and_are_never_text() {
        let empty = Situation {
            line_empty: true,
            connected: true,
        };
        let key = |code, modifiers| KeyEvent::new(code, modifiers);
        let both = KeyModifiers::CONTROL | KeyModifiers::ALT;
        assert_eq!(
            action_for_key(&key(KeyCode::Enter, KeyModifiers::CONTROL), empty),
            Some(Action::Send)
        );
        assert_eq!(
            action_for_key(&key(KeyCode::Char('d'), both), empty),
            Some(Action::Quit),
            "Ctrl before Alt"
        );
        assert_eq!(
            action_for_key(&key(KeyCode::Char('x'), KeyModifiers::ALT), empty),
            None
        );
        assert_eq!(
            action_for_key(&key(KeyCode::Char('X'), KeyModifiers::SHIFT), empty),
            Some(Action::Type)
        );
        assert_eq!(
            action_for_key(
                &key(KeyCode::F(5), KeyModifiers::NONE),
                Situation {
                    connected: true,
                    ..empty
                }
            ),
            None,
            "F5 only while not connected"
        );
    }

    #[test]
    fn the_hint_is_made_of_the_hinted_bindings() {
        assert_eq!(key_hint(), "Enter send · PgUp scroll · ^C quit ");
    }

    #[test]
    fn help_names_every_key_and_command_and_fits_its_width() {
        let help = help_text(80);
        for needle in [
            "Alt-Enter",
            "F2",
            "F5",
            "Ctrl-D on an empty line",
            "/join ROOM",
            "//text",
        ] {
            assert!(help.contains(needle), "{needle} in\n{help}");
        }
        for line in help.lines() {
            assert!(crate::text::width(line) <= 80, "{line:?}");
        }
        let notice = help_notice();
        assert!(notice.starts_with("commands:\n  /join ROOM"), "{notice}");
        assert!(notice.contains("Ctrl-R"), "{notice}");
    }

    #[test]
    fn keys_can_be_bound_by_name() {
        let rebound = [
            Rebinding::parse("older-mention=Alt-P").unwrap(),
            Rebinding::parse("quit = Ctrl-Q").unwrap(),
            Rebinding::parse("toggle-buffers=F4").unwrap(),
        ];
        let situation = Situation {
            line_empty: true,
            connected: true,
        };
        let key = |code, modifiers| KeyEvent::new(code, modifiers);
        let of = |event| action_for_key_in(&event, situation, &rebound);
        assert_eq!(
            of(key(KeyCode::Char('p'), KeyModifiers::ALT)),
            Some(Action::OlderMention)
        );
        assert_eq!(
            of(key(KeyCode::Char('q'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
        assert_eq!(
            of(key(KeyCode::F(4), KeyModifiers::NONE)),
            Some(Action::ToggleBuffers)
        );
        assert_eq!(
            of(key(KeyCode::Char('n'), KeyModifiers::ALT)),
            Some(Action::OlderMention),
            "the table's still"
        );
        assert!(
            Rebinding::parse("nosuch=Alt-P")
                .unwrap_err()
                .contains("older-mention")
        );
        assert!(Rebinding::parse("quit=q").unwrap_err().contains("typing"));
        assert!(Rebinding::parse("quit=Ctrl-").is_err());
        assert!(Rebinding::parse("quit").is_err());
        for (name, action) in ACTION_NAMES {
            assert_eq!(action.name(), Some(*name));
        }
    }

    #[test]
    fn only_the_table_s_commands_are_known() {
        assert_eq!(
            slash_command("join").map(|c| c.action),
            Some(SlashAction::Join)
        );
        assert!(slash_command("nosuch").is_none());
        assert!(slash_command("").is_none());
    }

    const BEGIN: &str = "<!-- generated by chat-tui: keys -->\n";
    const END: &str = "<!-- end of generated -->";

    /// `docs/keys.md` holds exactly [`keys_markdown`] between its markers;
    /// `UPDATE_DOCS=1 cargo test -p chat-tui --lib keys` writes it there.
    #[test]
    fn docs_keys_md_is_the_generated_tables() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/keys.md");
        let doc = std::fs::read_to_string(&path).expect("docs/keys.md");
        let start = doc.find(BEGIN).expect("the begin marker") + BEGIN.len();
        let end = start + doc[start..].find(END).expect("the end marker");
        let generated = keys_markdown();
        if std::env::var_os("UPDATE_DOCS").is_some() {
            let updated = format!("{}{generated}{}", &doc[..start], &doc[end..]);
            std::fs::write(&path, updated).expect("write docs/keys.md");
            return;
        }
        assert!(
            doc[start..end] == generated,
            "docs/keys.md is not what the tables say: run UPDATE_DOCS=1 cargo test -p chat-tui --lib keys"
        );
    }
}
