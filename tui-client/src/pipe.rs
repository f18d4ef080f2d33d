//! Pipe mode: a line client for scripts. Each non-empty stdin line is sent; each
//! message received is printed as one sanitized line.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use anyhow::{Context, bail};
use chat::{Announcement, ClientId};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::net::Target;
use crate::text::sanitize_line;

/// How long, once stdin has ended, to wait for the next echo of the lines sent before
/// closing: a server may drop messages that arrive just before a close (the tutorial's
/// uvicorn does), and its echo is how we know one was taken. Counted again from each
/// echo, as a server that limits the rate takes a long burst slowly, but takes it.
const ECHO_PATIENCE: Duration = Duration::from_secs(5);

/// Runs until stdin ends, the echoes of what was sent are back (or none has come for
/// 5 s, `ECHO_PATIENCE`) and the server has answered our close; or until stdout is
/// closed (`| head -1`), noticed at once, not at the next message. Fails when it cannot connect, when the connection is
/// lost, and when the server closes it first (a shutdown included).
pub async fn run(target: &Target, id: &ClientId, max_message_bytes: usize) -> anyhow::Result<()> {
    // The plain protocol: a line in, a line out, as the tutorial's clients see it.
    let (mut socket, _) = target
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", target.shown()))?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    let mut stdin_open = true;
    // The echoes still to come of the lines sent, as the server words them.
    let mut unconfirmed: VecDeque<String> = VecDeque::new();
    let mut echo_deadline: Option<Instant> = None;
    let mut closed = false;
    let reader_gone = stdout_reader_gone();
    tokio::pin!(reader_gone);
    loop {
        if !stdin_open && !closed && unconfirmed.is_empty() {
            socket.close(None).await.context("closing")?;
            closed = true;
        }
        let patience = echo_deadline.unwrap_or_else(Instant::now);
        tokio::select! {
            line = stdin.next_line(), if stdin_open => match line.context("reading stdin")? {
                // As in the full-screen client, an empty line is not a message.
                Some(line) if line.is_empty() => {}
                // The server would close the connection for it: say so, and go on.
                Some(line) if line.len() > max_message_bytes => eprintln!(
                    "chat-tui: a line of {} bytes was not sent: the server takes at most {max_message_bytes}",
                    line.len()
                ),
                Some(line) => {
                    let id = id.as_str();
                    unconfirmed.push_back(Announcement::Said { id, text: &line }.to_string());
                    socket.send(Message::text(line)).await.context("sending")?;
                }
                None => {
                    stdin_open = false;
                    echo_deadline = Some(Instant::now() + ECHO_PATIENCE);
                }
            },
            () = &mut reader_gone => {
                let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
                return Ok(());
            }
            () = tokio::time::sleep_until(patience), if echo_deadline.is_some() && !closed => {
                eprintln!(
                    "chat-tui: {} of the lines sent were not echoed (none for {} s); closing anyway",
                    unconfirmed.len(),
                    ECHO_PATIENCE.as_secs()
                );
                unconfirmed.clear();
            }
            frame = socket.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    if unconfirmed.front().is_some_and(|echo| *echo == *text) {
                        unconfirmed.pop_front();
                        if echo_deadline.is_some() {
                            echo_deadline = Some(Instant::now() + ECHO_PATIENCE);
                        }
                    }
                    let line = format!("{}\n", sanitize_line(&text));
                    match write_line(&mut stdout, &line).await {
                        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
                        written => written.context("writing stdout")?,
                    }
                }
                Some(Ok(Message::Close(frame))) if !closed => {
                    // Answer the close, so that the server is not left waiting for it.
                    let _ = socket.close(None).await;
                    let reason = frame.map_or_else(String::new, |frame| {
                        format!(": {} {}", frame.code, sanitize_line(&frame.reason))
                    });
                    bail!("the server closed the connection{reason}");
                }
                Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Ok(_)) => {}
                // After our close, a server that just drops the connection is done.
                Some(Err(_)) | None if closed => return Ok(()),
                Some(Err(error)) => bail!("connection lost: {error}"),
                None => bail!("connection lost"),
            },
        }
    }
}

/// Resolves when whoever reads our stdout has gone (`| head -1` has exited): the pipe's
/// write end then reports an error, before anything is written to it. Never, where that
/// cannot be watched (a file, or not Unix).
async fn stdout_reader_gone() {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        use tokio::io::Interest;
        // Watched through a copy of the descriptor, registered as it is: left blocking,
        // for the writes that go through the original.
        let watched = io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .and_then(tokio::net::unix::pipe::Sender::from_owned_fd_unchecked);
        // Not a pipe (a file, a terminal): nothing to watch.
        if let Ok(pipe) = watched {
            while let Ok(ready) = pipe.ready(Interest::ERROR).await {
                if ready.is_error() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    std::future::pending::<()>().await;
}

async fn write_line(stdout: &mut tokio::io::Stdout, line: &str) -> io::Result<()> {
    stdout.write_all(line.as_bytes()).await?;
    stdout.flush().await
}
