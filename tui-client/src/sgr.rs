//! The escape sequences the terminal receives, written the way every terminal reads
//! them: crossterm writes the 16 basic colours as 256-colour codes (`ESC[38;5;1m`),
//! which the Linux console and some others do not know, and which make a terminal's
//! palette choices for "256-colour index 1" apply instead of its red. Here they become
//! SGR 30–37 and 90–97 (40–47 and 100–107 for backgrounds).

use std::io::{self, Write};

/// A writer that holds each frame's output until it is flushed, then passes it on
/// with the basic colours rewritten. Holding the whole frame means an escape sequence
/// is never seen in halves, however the formatter split its writes.
pub struct BasicColours<W: Write> {
    inner: W,
    frame: Vec<u8>,
}

impl<W: Write> BasicColours<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            frame: Vec::new(),
        }
    }
}

impl<W: Write> Write for BasicColours<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.frame.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let frame = rewrite(&self.frame);
        self.frame.clear();
        self.inner.write_all(&frame)?;
        self.inner.flush()
    }
}

/// `bytes` with every 256-colour code for N below 16 (`38;5;N`, `48;5;N`) rewritten as
/// the basic SGR code, wherever it is in an SGR sequence: alone (`ESC[38;5;1m`) or with
/// others, as crossterm writes a foreground and a background together
/// (`ESC[38;5;1;48;5;8m`). Everything else as it was.
pub fn rewrite(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(start) = rest.iter().position(|&byte| byte == 0x1b) {
        out.extend_from_slice(&rest[..start]);
        rest = &rest[start..];
        match basic_colours(rest) {
            Some((sequence, length)) => {
                out.extend_from_slice(sequence.as_bytes());
                rest = &rest[length..];
            }
            None => {
                out.push(0x1b);
                rest = &rest[1..];
            }
        }
    }
    out.extend_from_slice(rest);
    out
}

/// The SGR sequence at the start of `bytes` (`ESC[` digits and `;` `m`) with its
/// 256-colour codes below 16 made basic, and the sequence's length; `None` when there is
/// no such sequence there.
fn basic_colours(bytes: &[u8]) -> Option<(String, usize)> {
    let rest = bytes.strip_prefix(b"\x1b[")?;
    let length = rest
        .iter()
        .take_while(|byte| byte.is_ascii_digit() || **byte == b';')
        .count();
    if rest.get(length) != Some(&b'm') {
        return None;
    }
    let parameters: Vec<&str> = std::str::from_utf8(&rest[..length])
        .ok()?
        .split(';')
        .collect();
    let mut codes: Vec<String> = Vec::with_capacity(parameters.len());
    let mut index = 0;
    while index < parameters.len() {
        let here = &parameters[index..];
        match here {
            [ground @ ("38" | "48"), "5", colour, ..] => {
                let ground: u8 = if *ground == "38" { 30 } else { 40 };
                match colour.parse::<u8>() {
                    Ok(colour @ 0..=7) => codes.push((ground + colour).to_string()),
                    Ok(colour @ 8..=15) => codes.push((ground + 60 + colour - 8).to_string()),
                    _ => codes.extend(here[..3].iter().map(|code| (*code).to_owned())),
                }
                index += 3;
            }
            // A true colour's three values are not codes of their own.
            ["38" | "48", "2", _, _, _, ..] => {
                codes.extend(here[..5].iter().map(|code| (*code).to_owned()));
                index += 5;
            }
            [code, ..] => {
                codes.push((*code).to_owned());
                index += 1;
            }
            [] => break,
        }
    }
    Some((format!("\x1b[{}m", codes.join(";")), 2 + length + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_basic_colours_become_basic_codes_and_nothing_else_changes() {
        let cases: [(&[u8], &[u8]); 12] = [
            // Foreground and background in one, as crossterm's SetColors writes them.
            (b"\x1b[38;5;1;48;5;8mx", b"\x1b[31;100mx"),
            (b"\x1b[39;48;5;12m", b"\x1b[39;104m"),
            (b"\x1b[1;38;5;14m", b"\x1b[1;96m"),
            (b"\x1b[38;2;1;5;3;48;5;2m", b"\x1b[38;2;1;5;3;42m"),
            (b"\x1b[38;5;200;48;5;0m", b"\x1b[38;5;200;40m"),
            (b"\x1b[38;5;1mred", b"\x1b[31mred"),
            (b"\x1b[38;5;9mx\x1b[48;5;8my", b"\x1b[91mx\x1b[100my"),
            (b"\x1b[48;5;0m\x1b[38;5;15m", b"\x1b[40m\x1b[97m"),
            (b"\x1b[38;5;200mpink", b"\x1b[38;5;200mpink"),
            (b"\x1b[1m\x1b[7mbold", b"\x1b[1m\x1b[7mbold"),
            (b"\x1b[38;2;1;2;3m", b"\x1b[38;2;1;2;3m"),
            (b"caf\xc3\xa9 \x1b[38;5;", b"caf\xc3\xa9 \x1b[38;5;"),
        ];
        for (written, sent) in cases {
            assert_eq!(
                rewrite(written),
                sent,
                "{:?}",
                String::from_utf8_lossy(written)
            );
        }
    }

    #[test]
    fn a_sequence_split_across_writes_is_rewritten_at_the_flush() {
        let mut terminal = BasicColours::new(Vec::new());
        terminal.write_all(b"\x1b[38;").unwrap();
        terminal.write_all(b"5;2mgreen").unwrap();
        terminal.flush().unwrap();
        assert_eq!(terminal.inner, b"\x1b[32mgreen");
    }
}
