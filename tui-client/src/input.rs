//! The input line: an editor with readline's keys, moving by grapheme cluster (what
//! the terminal draws as one character: `❤️`, a flag, a ZWJ family), a kill ring of
//! one, and a history of sent lines.

use unicode_segmentation::UnicodeSegmentation;

/// The text being typed and the cursor in it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InputLine {
    text: String,
    /// A byte offset into `text`, always on a grapheme cluster boundary.
    cursor: usize,
    /// What the last kill (Ctrl-K, Ctrl-U, Ctrl-W, Alt-D) took, for Ctrl-Y.
    killed: String,
    history: Vec<String>,
    /// While browsing history: the entry shown, and what was being typed before.
    browsing: Option<(usize, String)>,
}

/// The most sent lines remembered for Up and Down.
const HISTORY_LIMIT: usize = 1000;

impl InputLine {
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The cursor position, as a byte offset on a grapheme cluster boundary.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// The text before the cursor.
    pub fn before_cursor(&self) -> &str {
        &self.text[..self.cursor]
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// The boundary of the grapheme cluster before the cursor.
    fn previous(&self) -> usize {
        self.text[..self.cursor]
            .grapheme_indices(true)
            .next_back()
            .map_or(0, |(at, _)| at)
    }

    /// The boundary of the grapheme cluster after the cursor.
    fn next(&self) -> usize {
        self.text[self.cursor..]
            .graphemes(true)
            .next()
            .map_or(self.cursor, |grapheme| self.cursor + grapheme.len())
    }

    /// Where the word before the cursor starts: back over spaces, then over the word.
    fn word_start(&self) -> usize {
        let mut at = self.cursor;
        let mut in_word = false;
        for (start, grapheme) in self.text[..self.cursor].grapheme_indices(true).rev() {
            let space = is_space(grapheme);
            if in_word && space {
                break;
            }
            in_word |= !space;
            at = start;
        }
        at
    }

    /// Where the word after the cursor ends: on over spaces, then over the word.
    fn word_end(&self) -> usize {
        let mut at = self.cursor;
        let mut in_word = false;
        for grapheme in self.text[self.cursor..].graphemes(true) {
            let space = is_space(grapheme);
            if in_word && space {
                break;
            }
            in_word |= !space;
            at += grapheme.len();
        }
        at
    }

    pub fn insert(&mut self, text: &str) {
        self.text.insert_str(self.cursor, text);
        // An insert can join what is around it into one cluster (a combining mark
        // after a letter): the cursor stays on a boundary.
        self.cursor = self.boundary_at_or_after(self.cursor + text.len());
    }

    /// The first cluster boundary at or after the byte offset `at`.
    fn boundary_at_or_after(&self, at: usize) -> usize {
        if at == 0 {
            return 0;
        }
        self.text
            .grapheme_indices(true)
            .map(|(start, grapheme)| start + grapheme.len())
            .find(|&end| end >= at)
            .unwrap_or(self.text.len())
    }

    pub fn left(&mut self) {
        self.cursor = self.previous();
    }

    pub fn right(&mut self) {
        self.cursor = self.next();
    }

    /// Alt-B, Ctrl-Left: to the start of the word before.
    pub fn word_left(&mut self) {
        self.cursor = self.word_start();
    }

    /// Alt-F, Ctrl-Right: to the end of the word after.
    pub fn word_right(&mut self) {
        self.cursor = self.word_end();
    }

    pub fn home(&mut self) {
        self.cursor = 0;
    }

    pub fn end(&mut self) {
        self.cursor = self.text.len();
    }

    /// Puts `text` in place of what is between byte `from` and the cursor (a word
    /// completed), the cursor after it.
    pub fn replace_before_cursor(&mut self, from: usize, text: &str) {
        let from = from.min(self.cursor);
        self.text.replace_range(from..self.cursor, text);
        self.cursor = from + text.len();
    }

    pub fn backspace(&mut self) {
        let from = self.previous();
        self.text.replace_range(from..self.cursor, "");
        self.cursor = from;
    }

    pub fn delete(&mut self) {
        let to = self.next();
        self.text.replace_range(self.cursor..to, "");
    }

    /// Removes `from..to` into the kill ring, leaving the cursor at `from`.
    fn kill(&mut self, from: usize, to: usize) {
        if from < to {
            self.killed = self.text[from..to].to_owned();
            self.text.replace_range(from..to, "");
        }
        self.cursor = from;
    }

    /// Ctrl-W: deletes the word before the cursor and the spaces after it, as a shell does.
    pub fn delete_word_before(&mut self) {
        self.kill(self.word_start(), self.cursor);
    }

    /// Alt-D: deletes from the cursor to the end of the word after it.
    pub fn delete_word_after(&mut self) {
        let end = self.word_end();
        let cursor = self.cursor;
        self.kill(cursor, end);
    }

    /// Ctrl-U: deletes everything before the cursor.
    pub fn delete_to_start(&mut self) {
        self.kill(0, self.cursor);
    }

    /// Ctrl-K: deletes everything after the cursor.
    pub fn delete_to_end(&mut self) {
        let cursor = self.cursor;
        self.kill(cursor, self.text.len());
    }

    /// Ctrl-Y: puts back what the last kill took.
    pub fn yank(&mut self) {
        let killed = self.killed.clone();
        self.insert(&killed);
    }

    /// Empties the line without remembering it (an edit given up with Esc).
    pub fn clear(&mut self) {
        self.text.clear();
        self.cursor = 0;
        self.browsing = None;
    }

    /// Takes the line out for sending, remembering it for Up.
    pub fn submit(&mut self) -> String {
        let line = std::mem::take(&mut self.text);
        self.cursor = 0;
        self.browsing = None;
        // A line said for the user (`/msg ID TEXT`) takes an empty one: not worth recalling.
        if !line.is_empty() && self.history.last() != Some(&line) {
            if self.history.len() == HISTORY_LIMIT {
                self.history.remove(0);
            }
            self.history.push(line.clone());
        }
        line
    }

    /// Up: shows the previous sent line, keeping what was being typed for Down.
    pub fn history_back(&mut self) {
        let index = match &self.browsing {
            None if self.history.is_empty() => return,
            None => {
                self.browsing = Some((self.history.len(), self.text.clone()));
                self.history.len() - 1
            }
            Some((0, _)) => return,
            Some((index, _)) => index - 1,
        };
        if let Some((shown, _)) = &mut self.browsing {
            *shown = index;
        }
        self.show(self.history[index].clone());
    }

    /// Down: shows the next sent line, and past the newest, what was being typed.
    pub fn history_forward(&mut self) {
        let Some((index, draft)) = self.browsing.take() else {
            return;
        };
        if index + 1 < self.history.len() {
            self.browsing = Some((index + 1, draft));
            self.show(self.history[index + 1].clone());
        } else {
            self.show(draft);
        }
    }

    fn show(&mut self, text: String) {
        self.text = text;
        self.cursor = self.text.len();
    }
}

fn is_space(grapheme: &str) -> bool {
    grapheme.chars().all(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(text: &str) -> InputLine {
        let mut input = InputLine::default();
        input.insert(text);
        input
    }

    #[test]
    fn typing_moves_the_cursor_over_multibyte_text() {
        let mut input = typed("héllo 你好");
        assert_eq!(input.before_cursor(), "héllo 你好");
        input.left();
        input.left();
        input.insert("🎉");
        assert_eq!(input.text(), "héllo 🎉你好");
        input.home();
        input.delete();
        input.end();
        input.backspace();
        assert_eq!(input.text(), "éllo 🎉你");
        input.home();
        input.right();
        assert_eq!(input.before_cursor(), "é");
        input.left();
        input.left();
        input.backspace();
        assert_eq!(input.cursor(), 0);
    }

    #[test]
    fn the_cursor_moves_and_deletes_whole_grapheme_clusters() {
        // A heart with its emoji presentation selector, a family joined by ZWJs, a flag,
        // a keycap and an e with a combining accent: one character each on screen.
        let clusters = ["❤️", "👨‍👩‍👧", "🇫🇷", "1️⃣", "e\u{301}"];
        let mut input = typed(&format!("x{}y", clusters.concat()));
        input.left();
        for cluster in clusters.iter().rev() {
            let before = input.before_cursor().to_owned();
            input.left();
            assert_eq!(&before[input.cursor()..], *cluster);
        }
        assert_eq!(input.before_cursor(), "x");
        input.right();
        assert_eq!(input.before_cursor(), "x❤️");
        input.delete();
        assert_eq!(input.text(), format!("x❤️{}y", clusters[2..].concat()));
        input.backspace();
        assert_eq!(input.text(), format!("x{}y", clusters[2..].concat()));
        // A combining mark typed after a letter joins it: the cursor stays after both.
        let mut accent = typed("e");
        accent.insert("\u{301}");
        accent.left();
        assert_eq!(accent.cursor(), 0);
    }

    #[test]
    fn words_move_and_kill_and_yank_puts_back() {
        let mut input = typed("say  hello wide 世界");
        input.word_left();
        assert_eq!(input.before_cursor(), "say  hello wide ");
        input.word_left();
        input.word_left();
        assert_eq!(input.before_cursor(), "say  ");
        input.word_right();
        assert_eq!(input.before_cursor(), "say  hello");
        input.delete_word_after();
        assert_eq!(input.text(), "say  hello 世界");
        input.yank();
        assert_eq!(input.text(), "say  hello wide 世界");
        input.home();
        input.word_right();
        input.delete_to_end();
        assert_eq!(input.text(), "say");
        input.home();
        input.yank();
        assert_eq!(input.text(), "  hello wide 世界say");
    }

    #[test]
    fn ctrl_w_deletes_the_word_before_the_cursor() {
        let mut input = typed("git commit  -m");
        input.left();
        input.left();
        input.left();
        input.delete_word_before();
        assert_eq!(input.text(), "git  -m");
        assert_eq!(input.cursor(), 4);
        input.delete_word_before();
        assert_eq!(input.text(), " -m");
        input.delete_word_before();
        assert_eq!(input.text(), " -m");
    }

    #[test]
    fn ctrl_u_deletes_before_the_cursor() {
        let mut input = typed("hello world");
        for _ in 0..5 {
            input.left();
        }
        input.delete_to_start();
        assert_eq!(input.text(), "world");
        assert_eq!(input.cursor(), 0);
    }

    #[test]
    fn up_and_down_walk_the_history_and_keep_the_draft() {
        let mut input = InputLine::default();
        for line in ["first", "second", "second"] {
            input.insert(line);
            assert_eq!(input.submit(), line);
        }
        input.insert("draft");
        input.history_back();
        assert_eq!(input.text(), "second");
        input.history_back();
        assert_eq!(input.text(), "first");
        input.history_back();
        assert_eq!(input.text(), "first");
        input.history_forward();
        assert_eq!(input.text(), "second");
        input.history_forward();
        assert_eq!(input.text(), "draft");
        assert_eq!(input.cursor(), 5);
        input.history_forward();
        assert_eq!(input.text(), "draft");
    }
}
