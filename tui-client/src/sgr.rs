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

/// `bytes` with every `ESC[38;5;Nm` and `ESC[48;5;Nm` for N below 16 rewritten as the
/// basic SGR code; everything else as it was.
pub fn rewrite(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(start) = rest.iter().position(|&byte| byte == 0x1b) {
        out.extend_from_slice(&rest[..start]);
        rest = &rest[start..];
        match basic_colour(rest) {
            Some((code, length)) => {
                out.extend_from_slice(format!("\x1b[{code}m").as_bytes());
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

/// The basic SGR code for a 256-colour sequence at the start of `bytes` with an index
/// below 16, and the sequence's length.
fn basic_colour(bytes: &[u8]) -> Option<(u8, usize)> {
    let (ground, rest) = if let Some(rest) = bytes.strip_prefix(b"\x1b[38;5;") {
        (30, rest)
    } else {
        (40, bytes.strip_prefix(b"\x1b[48;5;")?)
    };
    let digits = rest.iter().take_while(|byte| byte.is_ascii_digit()).count();
    if !(1..=2).contains(&digits) || rest.get(digits) != Some(&b'm') {
        return None;
    }
    let index: u8 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let code = match index {
        0..=7 => ground + index,
        8..=15 => ground + 60 + index - 8,
        _ => return None,
    };
    Some((code, bytes.len() - rest.len() + digits + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_basic_colours_become_basic_codes_and_nothing_else_changes() {
        let cases: [(&[u8], &[u8]); 7] = [
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
