//! URLs in the message pane as OSC 8 hyperlinks, for the terminals that make them
//! clickable (`--hyperlinks`). The text shown is the sanitized text already drawn; the
//! link's target is made from it again, and only when it is a well-formed `http`,
//! `https` or `mailto` URL, serialized by the `url` crate (percent-encoded, punycode
//! hosts) and then made only of printable ASCII: nothing from the network can end the
//! escape sequence early or start another.

use ratatui::buffer::{Buffer, CellDiffOption};
use ratatui::layout::Rect;

/// The schemes linked; anything else (`javascript:`, `file:`) stays text.
const SCHEMES: [&str; 3] = ["https://", "http://", "mailto:"];

/// The longest target linked: longer ones stay text.
const MOST_URL_BYTES: usize = 2048;

/// Punctuation that ends a sentence around a URL rather than the URL itself.
const TRAILING: &[char] = &['.', ',', ';', ':', '!', '?', ')', ']', '\'', '"', '>'];

/// The target for `text` (as drawn) if it is a URL to link: its visible part (without
/// trailing punctuation) and the URL as the escape sequence carries it.
pub fn target(text: &str) -> Option<(&str, String)> {
    let visible = text.trim_end_matches(TRAILING);
    if !SCHEMES
        .iter()
        .any(|scheme| visible.len() > scheme.len() && visible.starts_with(scheme))
    {
        return None;
    }
    let url = url::Url::parse(visible).ok()?;
    if !matches!(url.scheme(), "http" | "https" | "mailto") {
        return None;
    }
    let serialized = url.as_str();
    let printable = serialized.bytes().all(|byte| (0x21..=0x7e).contains(&byte));
    (printable && serialized.len() <= MOST_URL_BYTES).then(|| (visible, serialized.to_owned()))
}

/// Makes each URL drawn in `area` of `buffer` a hyperlink: its first cell carries the
/// whole link and stands for all its cells (ratatui's forced width). A URL too long
/// for its row goes on at the start of the next row's text (wrapping breaks a word
/// that long at the edge, and indents what follows): it is linked whole, each row's
/// part carrying the same link and `id`, which terminals take for one link.
pub fn link_cells(buffer: &mut Buffer, area: Rect) {
    for y in area.top()..area.bottom() {
        let mut x = area.left();
        while x < area.right() {
            let starts = SCHEMES.iter().any(|scheme| {
                scheme.chars().enumerate().all(|(at, c)| {
                    let column = x + at as u16;
                    column < area.right()
                        && buffer[(column, y)].symbol() == c.encode_utf8(&mut [0; 4])
                })
            });
            if !starts {
                x += 1;
                continue;
            }
            let (mut text, end) = run(buffer, area, x, y);
            let mut parts = vec![(x, y, end)];
            while let Some(&(_, row, end)) = parts.last() {
                let next = row + 1;
                // A row of its own text (a new message's starts with its time at the
                // edge) is no continuation; nor is a URL that ends before the edge.
                if end < area.right() || next >= area.bottom() || !blank(buffer, area.left(), next)
                {
                    break;
                }
                let Some(start) = (area.left()..area.right()).find(|&x| !blank(buffer, x, next))
                else {
                    break;
                };
                let (piece, piece_end) = run(buffer, area, start, next);
                if piece.is_empty() {
                    break;
                }
                text.push_str(&piece);
                parts.push((start, next, piece_end));
            }
            let Some((visible, url)) = target(&text) else {
                x = end.max(x + 1);
                continue;
            };
            let id = format!("chat-{x}-{y}");
            let mut left = visible.chars().count() as u16;
            for &(start, row, end) in &parts {
                let columns = (end - start).min(left);
                if columns == 0 {
                    break;
                }
                let shown: String = buffer_text(buffer, start, row, columns);
                let link = hyperlink_part(&url, &id, &shown);
                let first = &mut buffer[(start, row)];
                first.set_symbol(&link);
                if let Some(width) = std::num::NonZeroU16::new(columns) {
                    first.set_diff_option(CellDiffOption::ForcedWidth(width));
                }
                left -= columns;
            }
            x = end.max(x + 1);
        }
    }
}

/// The run of one-column, non-blank cells from `x` on row `y`, and where it ends.
fn run(buffer: &Buffer, area: Rect, x: u16, y: u16) -> (String, u16) {
    let mut text = String::new();
    let mut end = x;
    while end < area.right() {
        let symbol = buffer[(end, y)].symbol();
        let one_column = symbol.chars().count() == 1
            && crate::text::width(symbol) == 1
            && !symbol.chars().all(char::is_whitespace);
        if !one_column {
            break;
        }
        text.push_str(symbol);
        end += 1;
    }
    (text, end)
}

fn blank(buffer: &Buffer, x: u16, y: u16) -> bool {
    buffer[(x, y)].symbol().chars().all(char::is_whitespace)
}

/// The text of `columns` one-column cells from `x` on row `y`.
fn buffer_text(buffer: &Buffer, x: u16, y: u16, columns: u16) -> String {
    (x..x + columns).map(|x| buffer[(x, y)].symbol()).collect()
}

/// The OSC 8 sequence that shows `visible` as (a row's part of) a link to `url`
/// (already [`target`]ed): the same `id` on each part of one link.
fn hyperlink_part(url: &str, id: &str, visible: &str) -> String {
    format!("\x1b]8;id={id};{url}\x1b\\{visible}\x1b]8;;\x1b\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_https_and_mailto_urls_are_linked_and_never_raw() {
        assert_eq!(
            target("https://example.com/a?b=c."),
            Some((
                "https://example.com/a?b=c",
                "https://example.com/a?b=c".into()
            ))
        );
        assert_eq!(
            target("mailto:ada@example.com").map(|(_, url)| url),
            Some("mailto:ada@example.com".into())
        );
        for refused in [
            "javascript:alert(1)",
            "file:///etc/passwd",
            "https://",
            "http:x y",
        ] {
            assert_eq!(target(refused), None, "{refused}");
        }
        // What the network sent is drawn sanitized (␛, ␇); a link made of it is
        // percent-encoded printable ASCII.
        let (_, url) = target("https://evil.example/␛]8;;x␇ü").unwrap();
        assert!(
            url.bytes().all(|byte| (0x21..=0x7e).contains(&byte)),
            "{url}"
        );
        assert_eq!(url, "https://evil.example/%E2%90%9B]8;;x%E2%90%87%C3%BC");
        let (_, url) = target("https://bücher.example/").unwrap();
        assert_eq!(url, "https://xn--bcher-kva.example/");
    }

    #[test]
    fn a_url_in_the_pane_becomes_one_cell_carrying_the_link() {
        let area = Rect::new(0, 0, 40, 1);
        let mut buffer = Buffer::empty(area);
        buffer.set_string(
            0,
            0,
            "see https://example.com/x, ok",
            ratatui::style::Style::new(),
        );
        link_cells(&mut buffer, area);
        assert_eq!(
            buffer[(4, 0)].symbol(),
            "\x1b]8;id=chat-4-0;https://example.com/x\x1b\\https://example.com/x\x1b]8;;\x1b\\"
        );
        assert_eq!(buffer[(3, 0)].symbol(), " ");
        assert_eq!(buffer[(25, 0)].symbol(), ",", "the comma is not part of it");
    }

    #[test]
    fn a_url_wrapped_onto_the_next_row_is_one_link_not_a_cut_one() {
        let area = Rect::new(0, 0, 24, 3);
        let mut buffer = Buffer::empty(area);
        let style = ratatui::style::Style::new();
        buffer.set_string(0, 0, "12:00 Ada: https://examp", style);
        buffer.set_string(0, 1, "           le.com/a/b. ok", style);
        buffer.set_string(0, 2, "12:01 https://x.org/ends", style);
        link_cells(&mut buffer, area);
        let url = "https://example.com/a/b";
        assert_eq!(
            buffer[(11, 0)].symbol(),
            format!("\x1b]8;id=chat-11-0;{url}\x1b\\https://examp\x1b]8;;\x1b\\")
        );
        assert_eq!(
            buffer[(11, 1)].symbol(),
            format!("\x1b]8;id=chat-11-0;{url}\x1b\\le.com/a/b\x1b]8;;\x1b\\"),
            "the rest, without the full stop"
        );
        // A URL that ends at the edge, and a next row of its own: linked as it is.
        assert_eq!(
            buffer[(6, 2)].symbol(),
            "\x1b]8;id=chat-6-2;https://x.org/ends\x1b\\https://x.org/ends\x1b]8;;\x1b\\"
        );
    }
}
