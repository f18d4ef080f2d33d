//! Pipe mode: a line client for scripts. Each stdin line is sent; each message received
//! is printed as one sanitized line.

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::net::Target;
use crate::text::sanitize_line;

/// Runs until the server closes the connection, or stdin ends and the server has answered
/// our close. Fails when it cannot connect or the connection is lost.
pub async fn run(target: &Target) -> anyhow::Result<()> {
    let mut socket = target
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", target.url))?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            line = stdin.next_line(), if stdin_open => match line.context("reading stdin")? {
                Some(line) => socket.send(Message::text(line)).await.context("sending")?,
                None => {
                    // Messages already on their way are still printed until the server
                    // answers the close.
                    stdin_open = false;
                    socket.close(None).await.context("closing")?;
                }
            },
            frame = socket.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let line = format!("{}\n", sanitize_line(&text));
                    stdout.write_all(line.as_bytes()).await?;
                    stdout.flush().await?;
                }
                Some(Ok(Message::Close(frame))) => {
                    return match frame {
                        Some(frame) if !matches!(frame.code, CloseCode::Normal | CloseCode::Away) => {
                            bail!("the server closed the connection: {} {}", frame.code, sanitize_line(&frame.reason))
                        }
                        _ => Ok(()),
                    };
                }
                Some(Ok(_)) => {}
                // After our close, a server that just drops the connection is done.
                Some(Err(_)) if !stdin_open => return Ok(()),
                Some(Err(error)) => bail!("connection lost: {error}"),
                None if stdin_open => bail!("connection lost"),
                None => return Ok(()),
            },
        }
    }
}
