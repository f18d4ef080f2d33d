//! How fast `chat-tui` takes in a busy room: messages applied to a full scrollback and
//! drawn as the event loop draws them (one frame per batch), on ratatui's `TestBackend`.
//!
//! `cargo run --release -p chat-tui --example ingest [SCROLLBACK] [MESSAGES]`

use std::time::Instant;

use chat_tui::app::App;
use chat_tui::event::{Event, NetEvent};
use chat_tui::ui;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).map(|arg| arg.parse::<usize>());
    let scrollback = args.next().transpose()?.unwrap_or(10_000);
    let messages = args.next().transpose()?.unwrap_or(100_000);
    // The event loop applies up to this many waiting events before one draw.
    const BATCH: usize = 64;

    let mut app = App::new("ws://bench".into(), "42".into(), scrollback, || {
        "12:00:00".to_owned()
    });
    let mut terminal = Terminal::new(TestBackend::new(100, 30))?;
    let received = |n: usize| {
        Event::Net(NetEvent::Received {
            text: format!("Client #7: message {n} with a few words to wrap and draw"),
        })
    };
    for n in 0..scrollback {
        app.update(received(n));
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
            "scrollback {scrollback} full, {}: {messages} messages in {seconds:.2} s, {:.0} messages/s",
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
