//! Text from the network made safe to draw, and wrapped by display width.
//!
//! Nothing a peer sends may reach the terminal as a control sequence, or make one message
//! look like two. Every character that could steer the terminal or reorder what is drawn
//! becomes a visible placeholder here, before any widget sees it.

use unicode_width::UnicodeWidthChar;

/// Replaces every control character with a visible stand-in.
///
/// - C0 controls and DEL become their Unicode control pictures (ESC shows as `␛`); tab
///   becomes a space so that columns stay predictable. Newlines are kept for the caller,
///   which turns them into continuation lines.
/// - C1 controls (U+0080..U+009F), which some terminals obey like ESC sequences, and the
///   bidi overrides and isolates, which can make text read backwards, become `�`.
pub fn sanitize(text: &str) -> String {
    let mut safe = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => safe.push('\n'),
            // A CRLF line ending is just a line ending.
            '\r' if chars.peek() == Some(&'\n') => {}
            c => safe.push(safe_char(c)),
        }
    }
    safe
}

/// One character made safe to draw on one line: a newline shows as `↵`, and controls
/// as described at [`sanitize`]. The mapping is one to one, so positions are kept.
pub fn safe_char(c: char) -> char {
    match c {
        '\n' => '↵',
        '\t' => ' ',
        '\u{0}'..='\u{1f}' => control_picture(c),
        '\u{7f}' => '␡',
        '\u{80}'..='\u{9f}' => '�',
        c if is_bidi_control(c) => '�',
        c => c,
    }
}

/// [`sanitize`], with newlines shown as `↵` too: for places that must stay on one line.
pub fn sanitize_line(text: &str) -> String {
    sanitize(text).replace('\n', "↵")
}

fn control_picture(c: char) -> char {
    char::from_u32(0x2400 + c as u32).unwrap_or('�')
}

fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

/// The number of terminal columns `text` takes, once sanitized.
pub fn width(text: &str) -> usize {
    text.chars().map(char_width).sum()
}

fn char_width(c: char) -> usize {
    c.width().unwrap_or(0)
}

/// Splits sanitized `text` into rows of at most `columns` display columns: at newlines,
/// then at the last place that fits where a line may break (after a space, or beside a
/// wide character, as CJK text breaks anywhere), or mid-word when a word is longer than
/// a row.
///
/// A wide character (CJK, most emoji) never straddles two rows.
pub fn wrap(text: &str, columns: usize) -> Vec<String> {
    let columns = columns.max(2);
    let mut rows = Vec::new();
    for paragraph in text.split('\n') {
        let mut row = String::new();
        let mut row_width = 0;
        // Where the row could be broken: a byte offset into `row`.
        let mut last_break: Option<usize> = None;
        for c in paragraph.chars() {
            let w = char_width(c);
            if w > 1 {
                last_break = Some(row.len());
            }
            if row_width + w > columns {
                let carried = match last_break {
                    Some(at) if at > 0 && at < row.len() => row.split_off(at),
                    _ => String::new(),
                };
                rows.push(std::mem::take(&mut row));
                row_width = width(&carried);
                row = carried;
                last_break = None;
            }
            row.push(c);
            row_width += w;
            if c == ' ' || w > 1 {
                last_break = Some(row.len());
            }
        }
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_controls_become_visible() {
        assert_eq!(sanitize("\u{1b}[2J\u{1b}]0;pwned\u{7}"), "␛[2J␛]0;pwned␇");
        assert_eq!(sanitize("a\u{0}b\u{8}c\u{7f}"), "a␀b␈c␡");
        assert_eq!(sanitize("bell\u{7} cr\r x"), "bell␇ cr␍ x");
        assert_eq!(sanitize("csi\u{9b}31m c1\u{85}"), "csi�31m c1�");
        assert_eq!(sanitize("tab\there"), "tab here");
    }

    #[test]
    fn bidi_overrides_cannot_reorder_text() {
        assert_eq!(sanitize("abc\u{202e}fed\u{202c}"), "abc�fed�");
        assert_eq!(sanitize("\u{2066}x\u{2069}\u{200f}"), "�x��");
    }

    #[test]
    fn nothing_printable_is_changed() {
        let text = "héllo 你好 🎉👍🏽 👩‍👩‍👧 <b>&amp;</b> ‘quotes’";
        assert_eq!(sanitize(text), text);
    }

    #[test]
    fn newlines_survive_sanitize_and_show_as_arrows_on_one_line() {
        assert_eq!(sanitize("one\r\ntwo\nthree"), "one\ntwo\nthree");
        assert_eq!(sanitize_line("one\ntwo"), "one↵two");
    }

    #[test]
    fn no_sanitized_text_contains_a_control_character() {
        let every_char: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let safe = sanitize(&every_char);
        assert!(
            safe.chars()
                .all(|c| c == '\n' || !(c.is_control() || is_bidi_control(c))),
        );
    }

    #[test]
    fn wrapping_breaks_at_spaces_and_splits_long_words() {
        assert_eq!(wrap("the quick brown fox", 10), ["the quick ", "brown fox"]);
        assert_eq!(wrap("abcdefghijkl", 5), ["abcde", "fghij", "kl"]);
        assert_eq!(wrap("one\ntwo", 10), ["one", "two"]);
        assert_eq!(wrap("", 10), [""]);
    }

    #[test]
    fn wide_characters_wrap_by_display_width() {
        // Each of these takes two columns.
        assert_eq!(wrap("你好世界再见", 5), ["你好", "世界", "再见"]);
        assert_eq!(wrap("🎉🎉🎉", 4), ["🎉🎉", "🎉"]);
        assert_eq!(wrap("hi 你好世界", 6), ["hi 你", "好世界"]);
        for row in wrap("混合 mixed 文字 text 🎉 and more", 7) {
            assert!(width(&row) <= 7, "{row:?}");
        }
    }
}
