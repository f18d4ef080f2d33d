//! How fast `chat-tui` takes in a busy room: messages applied to a full scrollback and
//! drawn as the event loop draws them (one frame per batch), on ratatui's `TestBackend`.
//! With `v1` or `v2`, each message is a `chat.v1.json` (`chat.v2.json`) frame, read as
//! the network task reads it; over v2 each message is also kept in its latest state for
//! the edits and reactions to come.
//!
//! With a fourth argument BUFFERS (v1 or v2), that many rooms are open, each with a
//! full scrollback; the resident memory they add is printed, and a third run spreads
//! the messages over all of them (each applied to its buffer, parked or not).
//!
//! `cargo run --release -p chat-tui --example ingest [SCROLLBACK] [MESSAGES] [plain|v1|v2] [BUFFERS]`

use std::time::Instant;

use chat::v1::ServerFrame;
use chat_tui::app::App;
use chat_tui::event::{Event, NetEvent, Protocol};
use chat_tui::ui;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |index: usize, default: usize| -> anyhow::Result<usize> {
        Ok(args
            .get(index)
            .map(|arg| arg.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let scrollback = number(0, 10_000)?;
    let messages = number(1, 100_000)?;
    let protocol = match args.get(2).map(String::as_str) {
        Some("v1") => Protocol::V1,
        Some("v2") => Protocol::V2,
        _ => Protocol::Plain,
    };
    let v1 = protocol > Protocol::Plain;
    let buffers = number(3, 1)?.max(1);
    // The event loop applies up to this many waiting events before one draw.
    const BATCH: usize = 64;

    let mut app = App::new("ws://bench".into(), "42".into(), scrollback, || {
        "12:00:00".to_owned()
    });
    let mut terminal = Terminal::new(TestBackend::new(100, 30))?;
    let mut offset = 1;
    if v1 {
        let welcome = r#"{"type":"welcome","id":"42","room":"main","epoch":"e","offset":0,"members":[],"recovered":false,"verified":false,"limits":{"max_message_bytes":65536,"max_nonce_chars":64,"history":1000}}"#;
        app.update(Event::Net(NetEvent::Connected { protocol }));
        app.update(Event::Net(NetEvent::Frame(ServerFrame::parse(welcome)?)));
    }
    let mut received = |n: usize| {
        let text = format!("message {n} with a few words to wrap and draw");
        if !v1 {
            return Event::Net(NetEvent::Received {
                text: format!("Client #7: {text}"),
            });
        }
        offset += 1;
        let frame = format!(
            r#"{{"offset":{offset},"ts":1795762988896,"id":"7","name":"Grace","type":"message","text":"{text}"}}"#
        );
        Event::Net(NetEvent::Frame(
            ServerFrame::parse(&frame).expect("a frame"),
        ))
    };
    let before = resident_bytes();
    for n in 0..scrollback {
        app.update(received(n));
    }
    // The other rooms, each connected, welcomed and filled as the first.
    let mut rooms = vec![app.active_buffer()];
    for index in 1..buffers {
        let room = chat::v1::RoomName::parse(&format!("r{index}"))?;
        let Some(chat_tui::app::Command::Open { buffer, .. }) = app.open_beside(room) else {
            anyhow::bail!("room r{index} opened twice");
        };
        rooms.push(buffer);
        let welcome = format!(
            r#"{{"type":"welcome","id":"42","room":"r{index}","epoch":"e","offset":0,"members":[],"recovered":false,"verified":false,"limits":{{"max_message_bytes":65536,"max_nonce_chars":64,"history":1000}}}}"#
        );
        app.update(Event::Room(buffer, NetEvent::Connected { protocol }));
        app.update(Event::Room(
            buffer,
            NetEvent::Frame(ServerFrame::parse(&welcome)?),
        ));
        for n in 0..scrollback {
            let Event::Net(news) = received(n) else {
                unreachable!("a frame")
            };
            app.update(Event::Room(buffer, news));
        }
    }
    if let (Some(before), Some(after)) = (before, resident_bytes()) {
        let per_buffer = after.saturating_sub(before) / buffers as u64;
        println!(
            "{buffers} buffers of {scrollback} messages: {} MiB resident more, {} kiB a buffer",
            after.saturating_sub(before) >> 20,
            per_buffer >> 10
        );
    }
    if buffers > 1 {
        let started = Instant::now();
        for n in 0..messages {
            let Event::Net(news) = received(n) else {
                unreachable!("a frame")
            };
            app.update(Event::Room(rooms[n % rooms.len()], news));
            if n % BATCH == BATCH - 1 {
                terminal.draw(|frame| ui::render(&app, frame))?;
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "spread over {buffers} buffers: {messages} messages in {seconds:.2} s, {:.0} messages/s",
            messages as f64 / seconds
        );
    }
    for scrolled_up in [false, true] {
        if scrolled_up {
            // PageUp: new messages must not move the view, which costs more bookkeeping.
            use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
            let page_up = KeyEvent::new(KeyCode::PageUp, KeyModifiers::NONE);
            app.update(Event::Terminal(crossterm::event::Event::Key(page_up)));
        }
        let started = Instant::now();
        for n in 0..messages {
            app.update(received(n));
            if n % BATCH == BATCH - 1 {
                terminal.draw(|frame| ui::render(&app, frame))?;
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{}, scrollback {scrollback} full, {}: {messages} messages in {seconds:.2} s, {:.0} messages/s",
            match protocol {
                Protocol::Plain => "plain",
                Protocol::V1 => "chat.v1.json",
                Protocol::V2 => "chat.v2.json",
            },
            if scrolled_up {
                "scrolled up"
            } else {
                "at the bottom"
            },
            messages as f64 / seconds
        );
    }
    Ok(())
}

/// The process's resident memory, from /proc (Linux); `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
