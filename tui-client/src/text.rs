//! Text from the network made safe to draw, and wrapped by display width.
//!
//! Nothing a peer sends may reach the terminal as a control sequence, or make one message
//! look like two. Every character that could steer the terminal or reorder what is drawn
//! becomes a visible placeholder here, before any widget sees it.

use std::borrow::Cow;
use std::sync::OnceLock;

use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

/// Emoji sequences that a terminal may draw at another width than the one Unicode gives
/// them (and ratatui counts): each `true` here is one this terminal was measured to draw
/// differently. Drawn as they are, they would shift the rest of their row and leave
/// stray glyphs behind; so they are drawn in a simpler form both agree on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quirks {
    /// A character with the emoji presentation selector (U+FE0F), `❤️`: drawn without it.
    pub presentation: bool,
    /// Emoji joined by zero-width joiners, `👨‍👩‍👧`: drawn as the emoji side by side.
    pub joined: bool,
    /// Flags, pairs of regional indicators, `🇫🇷`: drawn as their letters, `FR`.
    pub flags: bool,
    /// Keycaps, `1️⃣`: drawn as the key's character.
    pub keycaps: bool,
}

/// One sample of each kind of sequence in [`Quirks`], to draw and measure.
pub const PROBES: [&str; 4] = [
    "\u{2764}\u{fe0f}",
    "\u{1f468}\u{200d}\u{1f469}\u{200d}\u{1f467}",
    "\u{1f1eb}\u{1f1f7}",
    "1\u{fe0f}\u{20e3}",
];

impl Quirks {
    /// From the columns this terminal took to draw each of [`PROBES`], in order.
    pub fn measured(columns: [usize; 4]) -> Self {
        let differs = |index: usize| columns[index] != width(PROBES[index]);
        Self {
            presentation: differs(0),
            joined: differs(1),
            flags: differs(2),
            keycaps: differs(3),
        }
    }

    fn any(self) -> bool {
        self != Self::default()
    }
}

static QUIRKS: OnceLock<Quirks> = OnceLock::new();

/// Says how this terminal draws the sequences in [`Quirks`]; once, at start.
pub fn set_quirks(quirks: Quirks) {
    let _ = QUIRKS.set(quirks);
}

/// `text` with the sequences this terminal draws differently in their simpler form.
pub fn for_this_terminal(text: &str) -> Cow<'_, str> {
    flatten(text, QUIRKS.get().copied().unwrap_or_default())
}

/// `text` with each kind of sequence `quirks` names drawn in its simpler form.
pub fn flatten(text: &str, quirks: Quirks) -> Cow<'_, str> {
    if !quirks.any() || text.is_ascii() {
        return Cow::Borrowed(text);
    }
    let mut flat = String::with_capacity(text.len());
    for grapheme in text.graphemes(true) {
        let mut chars = grapheme.chars();
        let first = chars.next().unwrap_or(' ');
        if quirks.keycaps && grapheme.ends_with('\u{20e3}') {
            flat.push(first);
        } else if quirks.flags && grapheme.chars().count() == 2 && grapheme.chars().all(is_regional)
        {
            for indicator in grapheme.chars() {
                let letter = u32::from(indicator) - 0x1f1e6 + u32::from('A');
                flat.push(char::from_u32(letter).unwrap_or('?'));
            }
        } else {
            for c in grapheme.chars() {
                let dropped =
                    (quirks.joined && c == '\u{200d}') || (quirks.presentation && c == '\u{fe0f}');
                if !dropped {
                    flat.push(c);
                }
            }
        }
    }
    Cow::Owned(flat)
}

fn is_regional(c: char) -> bool {
    ('\u{1f1e6}'..='\u{1f1ff}').contains(&c)
}

/// Replaces every control character with a visible stand-in.
///
/// - C0 controls and DEL become their Unicode control pictures (ESC shows as `␛`); tab
///   becomes a space so that columns stay predictable. Newlines are kept for the caller,
///   which turns them into continuation lines.
/// - C1 controls (U+0080..U+009F), which some terminals obey like ESC sequences, and the
///   bidi overrides and isolates, which can make text read backwards, become `�`.
///
/// The result is also drawn in the form this terminal draws at the width it is counted
/// at (see [`Quirks`]).
pub fn sanitize(text: &str) -> String {
    let text = for_this_terminal(text);
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
        c if is_bidi_control(c) || is_noncharacter(c) => '�',
        c => c,
    }
}

/// The 66 code points Unicode promises never to assign (U+FDD0..U+FDEF, and the last
/// two of every plane): terminals disagree on their width (tmux gives U+10FFFF none,
/// after an emoji), and a cell counted but not drawn leaves the rest of the line in the
/// wrong columns, with stray characters from earlier frames.
fn is_noncharacter(c: char) -> bool {
    let code = u32::from(c);
    (0xfdd0..=0xfdef).contains(&code) || code & 0xfffe == 0xfffe
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

/// The number of terminal columns `text` takes, once sanitized: character by
/// character as the user sees them (grapheme clusters), as ratatui draws them.
pub fn width(text: &str) -> usize {
    text.graphemes(true).map(UnicodeWidthStr::width).sum()
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
        for c in paragraph.graphemes(true) {
            let w = c.width();
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
            row.push_str(c);
            row_width += w;
            if c == " " || w > 1 {
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

    /// A user review: an emoji then U+10FFFF, which tmux draws in no column, left
    /// stray characters on screen in every buffer until Ctrl-L.
    #[test]
    fn noncharacters_become_the_replacement_character() {
        assert_eq!(sanitize("E \u{1f600}\u{10ffff} P"), "E \u{1f600}� P");
        assert_eq!(sanitize("\u{fdd0}\u{fffe}\u{1ffff}"), "���");
        assert_eq!(
            sanitize("\u{e000}\u{fffd}"),
            "\u{e000}\u{fffd}",
            "assigned, kept"
        );
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
    fn sequences_a_terminal_draws_differently_are_drawn_simply() {
        let text = "a❤️ b👨‍👩‍👧 c🇫🇷 d1️⃣ e";
        assert_eq!(flatten(text, Quirks::default()), text);
        let all = Quirks {
            presentation: true,
            joined: true,
            flags: true,
            keycaps: true,
        };
        assert_eq!(flatten(text, all), "a❤ b👨👩👧 cFR d1 e");
        let joined_only = Quirks {
            joined: true,
            ..Quirks::default()
        };
        assert_eq!(flatten(text, joined_only), "a❤️ b👨👩👧 c🇫🇷 d1️⃣ e");
        // Measured against what each is counted as: a terminal that draws the family as
        // three emoji and the rest as counted.
        assert_eq!(Quirks::measured([2, 6, 2, 2]), joined_only);
        assert_eq!(Quirks::measured([2, 2, 2, 2]), Quirks::default());
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
        // A family is one two-column character, never cut in its middle.
        assert_eq!(wrap("ab👨‍👩‍👧cd", 3), ["ab", "👨‍👩‍👧", "cd"]);
    }
}
