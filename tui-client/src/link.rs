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

/// The OSC 8 sequence that shows `visible` as a link to `url` (already [`target`]ed).
pub fn hyperlink(url: &str, visible: &str) -> String {
    format!("\x1b]8;;{url}\x1b\\{visible}\x1b]8;;\x1b\\")
}

/// Makes each URL drawn in `area` of `buffer` a hyperlink: its first cell carries the
/// whole link and stands for all its cells (ratatui's forced width), one row at a time
/// (a URL wrapped onto the next row is linked as two parts).
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
            // The URL runs to the first blank (or wide, or empty) cell.
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
            if let Some((visible, url)) = target(&text) {
                let columns = visible.chars().count() as u16;
                let link = hyperlink(&url, visible);
                let first = &mut buffer[(x, y)];
                first.set_symbol(&link);
                if let Some(width) = std::num::NonZeroU16::new(columns) {
                    first.set_diff_option(CellDiffOption::ForcedWidth(width));
                }
                x += columns.max(1);
            } else {
                x = end.max(x + 1);
            }
        }
    }
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
            "\x1b]8;;https://example.com/x\x1b\\https://example.com/x\x1b]8;;\x1b\\"
        );
        assert_eq!(buffer[(3, 0)].symbol(), " ");
        assert_eq!(buffer[(25, 0)].symbol(), ",", "the comma is not part of it");
    }
}
