//! The view: the message pane, the status bar and the input line, drawn from [`App`].

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

use crate::app::{App, BUFFERS_WIDTH, Entry, Kind, Link, MEMBERS_WIDTH};
use crate::text::{for_this_terminal, safe_char, sanitize_line, width};

const PROMPT: &str = "› ";

/// Colours for other people's ids; each id always gets the same one.
const ID_COLOURS: [Color; 10] = [
    Color::Red,
    Color::Green,
    Color::Yellow,
    Color::Blue,
    Color::Magenta,
    Color::Cyan,
    Color::LightRed,
    Color::LightGreen,
    Color::LightYellow,
    Color::LightMagenta,
];

/// Draws the whole screen.
pub fn render(app: &App, frame: &mut Frame) {
    let title = app.title();
    let [title_row, pane, status, input] = Layout::vertical([
        Constraint::Length(u16::from(title.is_some())),
        Constraint::Min(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    if let Some(title) = title {
        render_title(app, &title, title_row, frame);
    }
    let pane = match &app.session {
        Some(session) if app.members_shown() => {
            let [messages, members] =
                Layout::horizontal([Constraint::Min(1), Constraint::Length(MEMBERS_WIDTH)])
                    .areas(pane);
            render_members(app, session, members, frame);
            messages
        }
        _ => pane,
    };
    let pane = if app.buffer_list_shown() {
        let [list, messages] =
            Layout::horizontal([Constraint::Length(BUFFERS_WIDTH), Constraint::Min(1)]).areas(pane);
        render_buffers(app, list, frame);
        messages
    } else {
        pane
    };
    render_messages(app, pane, frame);
    if let Some(notice) = &app.notice_below
        && app.viewport.is_scrolled_up()
        && pane.height > 1
    {
        // Said below the view, where it cannot be seen: over the pane's last row.
        let row = Rect {
            y: pane.bottom() - 1,
            height: 1,
            ..pane
        };
        let style = Style::new()
            .fg(Color::Yellow)
            .add_modifier(Modifier::ITALIC | Modifier::REVERSED);
        frame.render_widget(ratatui::widgets::Clear, row);
        frame.render_widget(
            Paragraph::new(Line::from(Span::styled(sanitize_line(notice), style))),
            row,
        );
    }
    render_status(app, status, frame);
    render_input(app, input, frame);
    if !app.colours {
        // Colours only: bold, reverse, dim and italic say what they say without them.
        for cell in frame.buffer_mut().content.iter_mut() {
            cell.set_fg(Color::Reset).set_bg(Color::Reset);
        }
    }
}

/// The room's topic, slow mode and read-only, above the messages, in the status bar's
/// colours; cut at the terminal's edge with `…`.
fn render_title(app: &App, title: &str, area: Rect, frame: &mut Frame) {
    let bar = if app.colours {
        Style::new().bg(Color::DarkGray).fg(Color::White)
    } else {
        Style::new().add_modifier(Modifier::REVERSED)
    };
    let room = format!(" #{} ", sanitize_line(app.room.as_str()));
    let text = sanitize_line(title);
    let room_width = width(&room);
    let room_style = bar.add_modifier(Modifier::BOLD);
    let room_span = Span::styled(room, room_style);
    let space = usize::from(area.width).saturating_sub(room_width + 1);
    let text = if width(&text) > space {
        let mut cut = String::new();
        for grapheme in text.graphemes(true) {
            if width(&cut) + width(grapheme) + 1 > space {
                break;
            }
            cut.push_str(grapheme);
        }
        cut.push('…');
        cut
    } else {
        text
    };
    let pad = space.saturating_sub(width(&text));
    let line = Line::from(vec![
        room_span,
        Span::styled(text, bar),
        Span::styled(" ".repeat(pad + 1), bar),
    ]);
    frame.render_widget(Paragraph::new(line), area);
}

/// The colour for an id: an FNV-1a hash of its canonical text, so it is the same in every
/// run and on every machine.
pub fn id_colour(id: &str) -> Color {
    let hash = id.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    ID_COLOURS[hash as usize % ID_COLOURS.len()]
}

/// Who is here, beside the messages: a rule on the left, then one member a row.
fn render_members(app: &App, session: &crate::app::Session, area: Rect, frame: &mut Frame) {
    let rule = Style::new().fg(Color::DarkGray);
    let roster = session.sorted_roster(&app.id);
    let mut lines = vec![Line::from(vec![
        Span::styled("│ ", rule),
        Span::styled(
            format!("{} here", session.here()),
            Style::new().add_modifier(Modifier::BOLD),
        ),
    ])];
    // Only the rows that fit are made (a big room holds thousands), from where F11 and
    // F12 scrolled to; a row above says how many are scrolled past, the last how many
    // are below, whether they did not fit or are not fetched.
    let rows = usize::from(area.height).saturating_sub(1);
    let unlisted = session.unlisted();
    let first = app.members_scroll.min(roster.len().saturating_sub(1));
    if first > 0 && rows > 1 {
        lines.push(Line::from(vec![
            Span::styled("│ ", rule),
            Span::styled(format!("↑ {first} more (F11)"), rule),
        ]));
    }
    let rows = rows.saturating_sub(lines.len() - 1);
    let rest = &roster[first..];
    let fits = rest.len() <= rows && unlisted == 0;
    let shown = if fits {
        rest.len()
    } else {
        rows.saturating_sub(1).min(rest.len())
    };
    lines.extend(rest[..shown].iter().map(|member| {
        let style = if member.ends_with("(you)") {
            Style::new().add_modifier(Modifier::BOLD)
        } else {
            Style::new()
        };
        Line::from(vec![
            Span::styled("│ ", rule),
            Span::styled(sanitize_line(member), style),
        ])
    }));
    if !fits && rows > 0 {
        let more = rest.len() - shown + unlisted;
        let scroll = if rest.len() > shown { " (F12)" } else { "" };
        lines.push(Line::from(vec![
            Span::styled("│ ", rule),
            Span::styled(format!("and {more} more{scroll}"), rule),
        ]));
    }
    while lines.len() < usize::from(area.height) {
        lines.push(Line::from(Span::styled("│", rule)));
    }
    frame.render_widget(Paragraph::new(lines), area);
}

/// The open buffers, left of the messages: one a row, numbered as Alt-1… shows them,
/// with what came while each was not on screen; a rule on the right.
fn render_buffers(app: &App, area: Rect, frame: &mut Frame) {
    let rule = Style::new().fg(Color::DarkGray);
    let room_width = usize::from(area.width.saturating_sub(2));
    let mut lines: Vec<Line> = app
        .tabs()
        .into_iter()
        .map(|tab| {
            let mut counts = String::new();
            if tab.unread > 0 {
                counts = format!(" {}", tab.unread);
            }
            if tab.mentions > 0 {
                counts.push('!');
            }
            let name = format!("{} #{}", tab.number, sanitize_line(&tab.room));
            let name: String = name
                .chars()
                .take(room_width.saturating_sub(counts.chars().count()))
                .collect();
            let text = format!("{name}{counts}");
            let style = if tab.active {
                Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED)
            } else if tab.mentions > 0 {
                Style::new()
                    .fg(Color::LightYellow)
                    .add_modifier(Modifier::BOLD)
            } else if tab.unread > 0 {
                Style::new().add_modifier(Modifier::BOLD)
            } else {
                Style::new()
            };
            let pad = room_width.saturating_sub(width(&text));
            Line::from(vec![
                Span::styled(text, style),
                Span::raw(" ".repeat(pad)),
                Span::styled(" │", rule),
            ])
        })
        .collect();
    while lines.len() < usize::from(area.height) {
        lines.push(Line::from(vec![
            Span::raw(" ".repeat(room_width)),
            Span::styled(" │", rule),
        ]));
    }
    frame.render_widget(Paragraph::new(lines), area);
}

fn render_messages(app: &App, area: Rect, frame: &mut Frame) {
    // Only what is on the screen is wrapped and styled, however long the scrollback.
    let visible: Vec<Line> = app
        .visible()
        .into_iter()
        .flat_map(|(number, entry, rows)| {
            let found = app
                .viewport
                .search()
                .is_some_and(|search| search.found == number)
                || app.selected_entry() == Some(number);
            let mut lines = entry_lines(entry, area.width);
            if found {
                // The message a search found, in reverse.
                for line in &mut lines {
                    for span in line.spans.iter_mut().skip(1) {
                        span.style = span.style.add_modifier(Modifier::REVERSED);
                    }
                }
            }
            lines.into_iter().skip(rows.start).take(rows.len())
        })
        .collect();
    frame.render_widget(Paragraph::new(visible), area);
    if app.hyperlinks {
        crate::link::link_cells(frame.buffer_mut(), area);
    }
}

/// An entry as styled rows: the time on the first, an indent on the rest, so that a
/// continuation can never pass for a message of its own.
fn entry_lines(entry: &Entry, width: u16) -> Vec<Line<'static>> {
    let time_style = Style::new().fg(Color::DarkGray);
    let text_style = match &entry.kind {
        Kind::Presence | Kind::QuietPresence { .. } => {
            Style::new().fg(Color::Gray).add_modifier(Modifier::DIM)
        }
        Kind::Notice => Style::new()
            .fg(Color::Yellow)
            .add_modifier(Modifier::ITALIC),
        // On its way: not yet what the room has seen.
        Kind::Said { pending: true, .. } => Style::new().add_modifier(Modifier::DIM),
        Kind::Said { mine: true, .. } => Style::new().add_modifier(Modifier::BOLD),
        // A mention of you stands out in colour and, without colour, in bold.
        Kind::Said {
            mentions_me: true, ..
        } => Style::new()
            .fg(Color::LightYellow)
            .add_modifier(Modifier::BOLD),
        Kind::Said { .. } | Kind::Other => Style::new(),
        Kind::ReadMarker { .. } => Style::new().fg(Color::LightRed),
        Kind::Divider => Style::new().fg(Color::Cyan).add_modifier(Modifier::DIM),
        Kind::Quote => Style::new().fg(Color::Gray).add_modifier(Modifier::ITALIC),
    };
    let prefix = match &entry.kind {
        Kind::Said {
            id, mine, prefix, ..
        } => {
            let style = if *mine {
                Style::new()
                    .fg(Color::Cyan)
                    .add_modifier(Modifier::BOLD | Modifier::REVERSED)
            } else {
                Style::new().fg(id_colour(id)).add_modifier(Modifier::BOLD)
            };
            Some((*prefix, style))
        }
        _ => None,
    };
    entry
        .rows(width)
        .into_iter()
        .enumerate()
        .map(|(index, row)| {
            let mut spans = Vec::with_capacity(3);
            if index == 0 {
                spans.push(Span::styled(
                    format!(
                        "{:<width$}",
                        entry.time,
                        width = crate::time_format::time_width()
                    ),
                    time_style,
                ));
            } else {
                spans.push(Span::raw(" ".repeat(crate::time_format::time_width())));
            }
            match prefix {
                Some((length, style)) if index == 0 && row.len() >= length => {
                    let (head, tail) = row.split_at(length);
                    spans.push(Span::styled(head.to_owned(), style));
                    spans.push(Span::styled(tail.to_owned(), text_style));
                }
                _ => spans.push(Span::styled(row, text_style)),
            }
            Line::from(spans)
        })
        .collect()
}

fn render_status(app: &App, area: Rect, frame: &mut Frame) {
    // Without colours the bar is drawn in reverse, so that it still stands apart.
    let bar = if app.colours {
        Style::new().bg(Color::DarkGray).fg(Color::White)
    } else {
        Style::new().add_modifier(Modifier::REVERSED)
    };
    let state = match app.link {
        Link::Connecting => Span::styled("○ connecting…", bar.fg(Color::LightYellow)),
        Link::Connected => Span::styled("● connected", bar.fg(Color::LightGreen)),
        Link::Retrying { seconds } => Span::styled(
            format!("○ reconnecting in {seconds} s (F5: now)"),
            bar.fg(Color::LightRed),
        ),
        Link::Stopped => Span::styled("✕ not connected (F5: try again)", bar.fg(Color::LightRed)),
    };
    // Most important first, as a narrow terminal cuts the end.
    let mut left = vec![Span::raw(" "), state];
    if app.editing() {
        left.push(Span::raw(" · "));
        left.push(Span::styled(
            "editing your message: Enter saves, Esc gives up",
            bar.add_modifier(Modifier::BOLD),
        ));
    }
    if app.selected_entry().is_some() {
        left.push(Span::raw(" · "));
        left.push(Span::styled(
            "selected: /reply /react /edit /delete · Esc",
            bar.add_modifier(Modifier::BOLD),
        ));
    }
    if let Some(typing) = crate::app::typing_line(&app.conversation.typing) {
        left.push(Span::raw(" · "));
        left.push(Span::styled(
            sanitize_line(&typing),
            bar.add_modifier(Modifier::ITALIC),
        ));
    }
    if app.loading_older() {
        left.push(Span::raw(" · "));
        left.push(Span::raw("loading older messages…"));
    }
    if app.viewport.is_scrolled_up() {
        // irssi's `-- MORE --`: there is more below.
        left.push(Span::raw(" · "));
        left.push(Span::styled("-- MORE --", bar.add_modifier(Modifier::BOLD)));
    }
    if let Some(search) = app.viewport.search() {
        left.push(Span::raw(" · "));
        left.push(Span::styled(
            format!(
                "search “{}”: ^R older, Esc done",
                sanitize_line(&search.query)
            ),
            bar.add_modifier(Modifier::BOLD),
        ));
    }
    if app.viewport.unseen() > 0 {
        left.push(Span::raw(" · "));
        left.push(Span::styled(
            format!("{} new ↓", app.viewport.unseen()),
            bar.add_modifier(Modifier::BOLD),
        ));
    }
    left.push(Span::raw(format!(" · id {} · #{}", app.id, app.room)));
    // The hotlist: the other open buffers, numbered as Alt-1… shows them, with what
    // came while they were not on screen (`!` when that calls for you).
    let mut hotlist: Vec<(Span, bool)> = Vec::new();
    for tab in app.tabs().iter().filter(|tab| !tab.active) {
        let mut shown = format!(" {}:#{}", tab.number, sanitize_line(&tab.room));
        if tab.unread > 0 {
            shown.push_str(&format!("({})", tab.unread));
        }
        if tab.mentions > 0 {
            shown.push('!');
        }
        let style = if tab.mentions > 0 {
            bar.fg(Color::LightYellow).add_modifier(Modifier::BOLD)
        } else if tab.unread > 0 {
            bar.add_modifier(Modifier::BOLD)
        } else {
            bar
        };
        hotlist.push((Span::styled(shown, style), tab.unread > 0));
    }
    // Who is here is known only while connected.
    let mut tail = Vec::new();
    if let Some(session) = &app.session
        && app.link == Link::Connected
    {
        tail.push(Span::raw(format!(" · {} here (F2)", session.here())));
    }
    tail.push(Span::raw(format!(" · {}", sanitize_line(&app.server))));
    // Too many buffers for the bar: the quiet ones give way, so that what has news is
    // never cut off at the right (the buffer list, F3, still shows them all). What
    // comes after the hotlist is cut first.
    let before = Line::from(left.clone()).width();
    let all: usize = hotlist.iter().map(|(span, _)| span.width()).sum();
    if before + all > usize::from(area.width) {
        let quiet = hotlist.iter().filter(|(_, news)| !news).count();
        hotlist.retain(|(_, news)| *news);
        if quiet > 0 {
            hotlist.push((Span::styled(format!(" +{quiet}"), bar), false));
        }
    }
    left.extend(hotlist.into_iter().map(|(span, _)| span));
    left.extend(tail);
    let left = Line::from(left);
    let used = left.width();
    frame.render_widget(Paragraph::new(left).style(bar), area);
    let hint = crate::keys::key_hint();
    let hint_width = width(&hint) as u16;
    if usize::from(area.width) >= used + usize::from(hint_width) + 2 {
        let hint_area = Rect {
            x: area.right() - hint_width,
            width: hint_width,
            ..area
        };
        frame.render_widget(Paragraph::new(hint).style(bar), hint_area);
    }
}

fn render_input(app: &App, area: Rect, frame: &mut Frame) {
    // Measured as ratatui draws it, grapheme cluster by cluster (a family emoji is one
    // two-column character, not five), after each control is made visible.
    let visible_text = |text: &str| -> String {
        let safe: String = text.chars().map(safe_char).collect();
        for_this_terminal(&safe).into_owned()
    };
    let before = visible_text(app.input.before_cursor());
    let after = visible_text(&app.input.text()[app.input.cursor()..]);
    let cursor_column: usize = before.graphemes(true).map(UnicodeWidthStr::width).sum();
    let room = usize::from(area.width)
        .saturating_sub(width(PROMPT) + 1)
        .max(1);
    // Scroll the line sideways so the cursor stays in view. A wide character cut by the
    // left edge is left out whole, so what is skipped may be a column more.
    let at_least = cursor_column.saturating_sub(room);
    let mut skip_columns = None;
    let mut column = 0;
    let mut visible = String::new();
    for grapheme in before.graphemes(true).chain(after.graphemes(true)) {
        if column >= at_least {
            skip_columns.get_or_insert(column);
            visible.push_str(grapheme);
        }
        column += grapheme.width();
    }
    let skip_columns = skip_columns.unwrap_or(column).min(cursor_column);
    let line = Line::from(vec![
        Span::styled(PROMPT, Style::new().fg(Color::Cyan)),
        Span::raw(visible),
    ]);
    frame.render_widget(Paragraph::new(line), area);
    let x = area.x + (width(PROMPT) + cursor_column - skip_columns) as u16;
    frame.set_cursor_position(Position::new(x.min(area.right().saturating_sub(1)), area.y));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::TIME_WIDTH;
    use crate::event::{Event, NetEvent, Protocol};
    use crossterm::event::Event as TerminalEvent;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn noon() -> String {
        "12:00:00".to_owned()
    }

    fn app(columns: u16, rows: u16, messages: &[&str]) -> App {
        let mut app = App::new("ws://localhost:8000".into(), "42".into(), 10_000, noon);
        app.update(Event::Terminal(TerminalEvent::Resize(columns, rows)));
        app.update(Event::Net(NetEvent::Connected {
            protocol: Protocol::Plain,
        }));
        for text in messages {
            app.update(Event::Net(NetEvent::Received {
                text: (*text).to_owned(),
            }));
        }
        app
    }

    fn draw(app: &App, columns: u16, rows: u16) -> Terminal<TestBackend> {
        let mut terminal = Terminal::new(TestBackend::new(columns, rows)).expect("terminal");
        terminal.draw(|frame| render(app, frame)).expect("draw");
        terminal
    }

    #[test]
    fn a_conversation() {
        let app = app(
            80,
            8,
            &[
                "Client #42 has entered the chat",
                "Client #7 has entered the chat",
                "Client #7: hi there",
                "Client #42: hello!",
                "Client #7 has left the chat",
            ],
        );
        insta::assert_snapshot!(draw(&app, 80, 8).backend());
    }

    #[test]
    fn long_lines_wrap_and_newlines_indent() {
        let app = app(
            40,
            10,
            &[
                "Client #7: a long message that does not fit on one row of forty columns",
                "Client #7: first line\nClient #8 has left the chat\nthird line",
            ],
        );
        insta::assert_snapshot!(draw(&app, 40, 10).backend());
    }

    #[test]
    fn wide_characters_keep_alignment() {
        let app = app(
            30,
            8,
            &[
                "Client #7: 你好世界，这是一条很长的消息",
                "Client #8: 🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉",
            ],
        );
        insta::assert_snapshot!(draw(&app, 30, 8).backend());
    }

    #[test]
    fn hostile_control_characters_are_shown_not_obeyed() {
        let app = app(
            60,
            5,
            &[
                "Client #7: \u{1b}[2J\u{1b}]0;owned\u{7}\r\u{9b}1m \u{202e}txet desrever",
                "Client #7: \u{8}\u{8}\u{8}Client #42: fake",
            ],
        );
        insta::assert_snapshot!(draw(&app, 60, 5).backend());
    }

    #[test]
    fn the_status_bar_shows_reconnecting_and_new_messages() {
        let mut app = app(
            70,
            6,
            &[
                "Client #7: 1",
                "Client #7: 2",
                "Client #7: 3",
                "Client #7: 4",
                "Client #7: 5",
            ],
        );
        app.update(Event::Terminal(TerminalEvent::Key(
            crossterm::event::KeyEvent::from(crossterm::event::KeyCode::PageUp),
        )));
        app.update(Event::Net(NetEvent::Received {
            text: "Client #7: 6".into(),
        }));
        app.update(Event::Net(NetEvent::Disconnected {
            reason: "connection reset".into(),
        }));
        app.update(Event::Net(NetEvent::Retrying { seconds: 4 }));
        insta::assert_snapshot!(draw(&app, 70, 6).backend());
    }

    #[test]
    fn a_notice_while_scrolled_up_is_shown_and_search_without_text_says_so() {
        let messages: Vec<String> = (0..30).map(|n| format!("Client #7: {n}")).collect();
        let messages: Vec<&str> = messages.iter().map(String::as_str).collect();
        let mut app = app(60, 12, &messages);
        let key =
            |code| Event::Terminal(TerminalEvent::Key(crossterm::event::KeyEvent::from(code)));
        app.update(key(crossterm::event::KeyCode::PageUp));
        app.update(Event::Terminal(TerminalEvent::Paste(
            "/search nosuchthing".into(),
        )));
        app.update(key(crossterm::event::KeyCode::Enter));
        assert!(app.viewport.is_scrolled_up());
        let shown = format!("{:?}", draw(&app, 60, 12).backend());
        assert!(
            shown.contains("* no message contains “nosuchthing”"),
            "{shown}"
        );

        app.update(Event::Terminal(TerminalEvent::Paste("/search".into())));
        app.update(key(crossterm::event::KeyCode::Enter));
        let shown = format!("{:?}", draw(&app, 60, 12).backend());
        assert!(
            shown.contains("* /search needs the text to look for: /search TEXT"),
            "{shown}"
        );
        assert!(!shown.contains("unknown command"), "{shown}");
    }

    #[test]
    fn a_long_wide_line_scrolled_sideways_keeps_the_cursor_after_the_text() {
        let mut app = app(20, 4, &[]);
        // 20 columns of CJK: the 17 shown start in the middle of the second character,
        // which is left out whole.
        app.update(Event::Terminal(TerminalEvent::Paste(
            "一二三四五六七八九十".into(),
        )));
        let mut terminal = draw(&app, 20, 4);
        let input_row: String = (0..20)
            .map(|x| terminal.backend().buffer()[(x, 3)].symbol().to_owned())
            .collect();
        // A wide character's second cell holds a space in the buffer.
        assert_eq!(
            input_row.replace(' ', ""),
            "›三四五六七八九十",
            "{input_row:?}"
        );
        terminal.backend_mut().assert_cursor_position((18, 3));
    }

    #[test]
    fn offline_the_status_bar_does_not_say_who_is_here() {
        let mut app = app(100, 4, &[]);
        app.session = Some(crate::app::Session::default());
        let bar = |app: &App| {
            let terminal = draw(app, 100, 4);
            (0..100)
                .map(|x| terminal.backend().buffer()[(x, 2)].symbol().to_owned())
                .collect::<String>()
        };
        assert!(bar(&app).contains("0 here (F2)"), "{}", bar(&app));
        app.update(Event::Net(NetEvent::Disconnected {
            reason: "connection reset".into(),
        }));
        app.update(Event::Net(NetEvent::Retrying { seconds: 3 }));
        assert!(!bar(&app).contains("here (F2)"), "{}", bar(&app));
    }

    #[test]
    fn a_long_input_scrolls_to_keep_the_cursor_visible() {
        let mut app = app(20, 4, &[]);
        app.update(Event::Terminal(TerminalEvent::Paste(
            "0123456789abcdefghijklmnop".into(),
        )));
        let mut terminal = draw(&app, 20, 4);
        insta::assert_snapshot!(terminal.backend());
        terminal.backend_mut().assert_cursor_position((19, 3));
    }

    #[test]
    fn the_cursor_sits_after_what_is_drawn_emoji_included() {
        // Each is drawn as one two-column character; summing its chars' widths would
        // put the cursor 1, 4, 0 and 2 columns off.
        for (typed, columns) in [("x❤️y", 4), ("👨‍👩‍👧y", 3), ("🇫🇷y", 3), ("1️⃣y", 3)]
        {
            let mut app = app(30, 4, &[]);
            app.update(Event::Terminal(TerminalEvent::Paste(typed.into())));
            let mut terminal = draw(&app, 30, 4);
            let x = (width(PROMPT) + columns) as u16;
            terminal.backend_mut().assert_cursor_position((x, 3));
            assert_eq!(terminal.backend().buffer()[(x - 1, 3)].symbol(), "y");
        }
    }

    #[test]
    fn the_read_marker_and_more_below() {
        let mut app = app(50, 8, &[]);
        for n in 0..8 {
            app.update(Event::Net(NetEvent::Received {
                text: format!("Client #7: before {n}"),
            }));
        }
        app.update(Event::Terminal(TerminalEvent::FocusLost));
        for text in ["Client #7: after", "Client #8: hi 42"] {
            app.update(Event::Net(NetEvent::Received { text: text.into() }));
        }
        app.update(Event::Terminal(TerminalEvent::FocusGained));
        let at_the_bottom = draw(&app, 50, 8);
        insta::assert_snapshot!(at_the_bottom.backend());
        let mention = &at_the_bottom.backend().buffer()[(TIME_WIDTH as u16 + 12, 5)];
        assert!(mention.modifier.contains(Modifier::BOLD), "{mention:?}");
        app.update(Event::Terminal(TerminalEvent::Mouse(
            crossterm::event::MouseEvent {
                kind: crossterm::event::MouseEventKind::ScrollUp,
                column: 0,
                row: 0,
                modifiers: crossterm::event::KeyModifiers::NONE,
            },
        )));
        insta::assert_snapshot!(draw(&app, 50, 8).backend());
    }

    #[test]
    fn without_colours_the_attributes_stay() {
        let mut app = app(40, 4, &["Client #42: mine", "Client #7: theirs"]);
        app.colours = false;
        let terminal = draw(&app, 40, 4);
        let buffer = terminal.backend().buffer();
        assert!(
            buffer
                .content
                .iter()
                .all(|cell| cell.fg == Color::Reset && cell.bg == Color::Reset)
        );
        let mine = &buffer[(TIME_WIDTH as u16, 0)];
        assert!(mine.modifier.contains(Modifier::REVERSED | Modifier::BOLD));
        let status = &buffer[(0, 2)];
        assert!(status.modifier.contains(Modifier::REVERSED), "{status:?}");
    }

    #[test]
    fn own_messages_are_marked_and_ids_keep_their_colour() {
        let app = app(40, 4, &["Client #42: mine", "Client #7: theirs"]);
        let terminal = draw(&app, 40, 4);
        let buffer = terminal.backend().buffer();
        let mine = &buffer[(TIME_WIDTH as u16, 0)];
        assert!(mine.modifier.contains(Modifier::REVERSED), "{mine:?}");
        let theirs = &buffer[(TIME_WIDTH as u16, 1)];
        assert!(!theirs.modifier.contains(Modifier::REVERSED));
        assert_eq!(theirs.fg, id_colour("7"));
        // Fixed forever: changing the hash would recolour everyone.
        assert_eq!(id_colour("7"), Color::LightRed);
        assert_eq!(id_colour("42"), id_colour("42"));
    }

    #[test]
    fn over_v1_names_dividers_pending_messages_and_who_is_here() {
        let mut app = App::new("ws://localhost:8000".into(), "42".into(), 100, noon);
        app.event_time = |_| "11:59:00".to_owned();
        app.update(Event::Terminal(TerminalEvent::Resize(80, 8)));
        app.update(Event::Net(NetEvent::Connected {
            protocol: Protocol::V1,
        }));
        let frames = [
            r#"{"type":"welcome","id":"42","room":"main","epoch":"e","offset":1,"members":[{"id":"7","name":"Grace","since":1}],"recovered":false,"verified":false,"limits":{"max_message_bytes":1000,"max_nonce_chars":64,"history":10}}"#,
            r#"{"offset":1,"ts":1,"id":"7","name":"Grace","type":"message","text":"before you came"}"#,
            r#"{"offset":2,"ts":2,"id":"42","name":"Ada","type":"join"}"#,
            r#"{"offset":3,"ts":3,"id":"9","type":"join"}"#,
        ];
        for frame in frames {
            let frame = chat::v1::ServerFrame::parse(frame).expect(frame);
            app.update(Event::Net(NetEvent::Frame(frame)));
        }
        app.update(Event::Terminal(TerminalEvent::Paste("on its way".into())));
        app.update(Event::Terminal(TerminalEvent::Key(
            crossterm::event::KeyEvent::from(crossterm::event::KeyCode::Enter),
        )));
        app.update(Event::Terminal(TerminalEvent::Key(
            crossterm::event::KeyEvent::from(crossterm::event::KeyCode::F(2)),
        )));
        let terminal = draw(&app, 80, 8);
        insta::assert_snapshot!(terminal.backend());
        let pending = &terminal.backend().buffer()[(TIME_WIDTH as u16 + 6, 4)];
        assert!(pending.modifier.contains(Modifier::DIM), "{pending:?}");
    }

    #[test]
    fn f11_and_f12_scroll_who_is_here_a_page_at_a_time() {
        let mut app = App::new("ws://localhost:8000".into(), "42".into(), 100, noon);
        app.update(Event::Terminal(TerminalEvent::Resize(80, 12)));
        app.update(Event::Net(NetEvent::Connected {
            protocol: Protocol::V1,
        }));
        // 40 others (ids 100 to 139, which sort as their names do).
        let members: Vec<String> = (100..140)
            .map(|id| format!(r#"{{"id":"{id}","since":1}}"#))
            .collect();
        let welcome = format!(
            r#"{{"type":"welcome","id":"42","room":"main","epoch":"e","offset":1,"members":[{}],"recovered":false,"verified":false,"limits":{{"max_message_bytes":1000,"max_nonce_chars":64,"history":10}}}}"#,
            members.join(",")
        );
        let frame = chat::v1::ServerFrame::parse(&welcome).expect("a welcome");
        app.update(Event::Net(NetEvent::Frame(frame)));
        let key = |app: &mut App, code| {
            app.update(Event::Terminal(TerminalEvent::Key(
                crossterm::event::KeyEvent::from(code),
            )));
        };
        key(&mut app, crossterm::event::KeyCode::F(2));
        // The member list's column, one string a row.
        let list = |app: &App| -> Vec<String> {
            let terminal = draw(app, 80, 12);
            let buffer = terminal.backend().buffer();
            (0..10)
                .map(|y| {
                    let row: String = (80 - MEMBERS_WIDTH..80)
                        .map(|x| buffer[(x, y)].symbol().to_owned())
                        .collect();
                    row.trim_start_matches('│').trim().to_owned()
                })
                .collect()
        };
        let ids = |rows: &[String]| -> Vec<String> {
            rows.iter()
                .filter_map(|row| row.strip_prefix("Client #"))
                .map(|id| id.trim_end_matches(" (you)").to_owned())
                .collect()
        };
        let top = list(&app);
        assert_eq!(top[0], "40 here", "{top:?}");
        assert_eq!(top[9], "and 32 more (F12)", "{top:?}");
        let first_page = ids(&top);
        assert_eq!(first_page.len(), 8, "{top:?}");

        // Ten rows: the count, one above, seven members (the page F12 moves by), one below.
        key(&mut app, crossterm::event::KeyCode::F(12));
        let second = list(&app);
        assert_eq!(second[1], "↑ 7 more (F11)", "{second:?}");
        let second_page = ids(&second);
        assert_eq!(second_page.len(), 7, "{second:?}");
        assert_eq!(second_page[0], first_page[7], "{second:?}");
        assert_eq!(second[9], "and 26 more (F12)", "{second:?}");

        // To the end: every member seen, the last page full, nothing below.
        let mut seen: Vec<String> = first_page[..7].to_vec();
        seen.extend(second_page);
        for _ in 0..10 {
            key(&mut app, crossterm::event::KeyCode::F(12));
            seen.extend(ids(&list(&app)));
        }
        let last = list(&app);
        assert!(!last.iter().any(|row| row.starts_with("and ")), "{last:?}");
        assert_eq!(ids(&last).len(), 7, "{last:?}");
        assert_eq!(last[1], "↑ 33 more (F11)", "{last:?}");
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 40, "{seen:?}");

        // F11 goes back a page at a time, to the top.
        for _ in 0..10 {
            key(&mut app, crossterm::event::KeyCode::F(11));
        }
        assert_eq!(list(&app), top);
    }

    #[test]
    fn resizing_rewraps() {
        let mut app = app(
            70,
            6,
            &["Client #7: words that wrap differently at each width"],
        );
        let wide = format!("{}", draw(&app, 70, 6).backend());
        app.update(Event::Terminal(TerminalEvent::Resize(30, 6)));
        let narrow = format!("{}", draw(&app, 30, 6).backend());
        assert!(wide.contains("words that wrap differently at each width"));
        assert!(narrow.contains("wrap"));
        assert!(!narrow.contains("words that wrap differently at each width"));
    }
}
