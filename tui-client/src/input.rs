//! The input line: a one-line editor with shell-style keys and a history of sent lines.

/// The text being typed and the cursor in it, as a char index.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InputLine {
    text: String,
    cursor: usize,
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

    /// The cursor position, in chars from the start.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    fn byte_at(&self, char_index: usize) -> usize {
        self.text
            .char_indices()
            .nth(char_index)
            .map_or(self.text.len(), |(byte, _)| byte)
    }

    fn len(&self) -> usize {
        self.text.chars().count()
    }

    pub fn insert(&mut self, text: &str) {
        let at = self.byte_at(self.cursor);
        self.text.insert_str(at, text);
        self.cursor += text.chars().count();
    }

    pub fn left(&mut self) {
        self.cursor = self.cursor.saturating_sub(1);
    }

    pub fn right(&mut self) {
        self.cursor = (self.cursor + 1).min(self.len());
    }

    pub fn home(&mut self) {
        self.cursor = 0;
    }

    pub fn end(&mut self) {
        self.cursor = self.len();
    }

    pub fn backspace(&mut self) {
        if self.cursor > 0 {
            self.cursor -= 1;
            let at = self.byte_at(self.cursor);
            self.text.remove(at);
        }
    }

    pub fn delete(&mut self) {
        if self.cursor < self.len() {
            let at = self.byte_at(self.cursor);
            self.text.remove(at);
        }
    }

    /// Ctrl-W: deletes the word before the cursor and the spaces after it, as a shell does.
    pub fn delete_word_before(&mut self) {
        let chars: Vec<char> = self.text.chars().collect();
        let mut start = self.cursor;
        while start > 0 && chars[start - 1].is_whitespace() {
            start -= 1;
        }
        while start > 0 && !chars[start - 1].is_whitespace() {
            start -= 1;
        }
        let (from, to) = (self.byte_at(start), self.byte_at(self.cursor));
        self.text.replace_range(from..to, "");
        self.cursor = start;
    }

    /// Ctrl-U: deletes everything before the cursor.
    pub fn delete_to_start(&mut self) {
        let to = self.byte_at(self.cursor);
        self.text.replace_range(..to, "");
        self.cursor = 0;
    }

    /// Takes the line out for sending, remembering it for Up.
    pub fn submit(&mut self) -> String {
        let line = std::mem::take(&mut self.text);
        self.cursor = 0;
        self.browsing = None;
        if self.history.last() != Some(&line) {
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
        self.cursor = self.len();
    }
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
        assert_eq!(input.cursor(), 8);
        input.left();
        input.left();
        input.insert("🎉");
        assert_eq!(input.text(), "héllo 🎉你好");
        input.home();
        input.delete();
        input.end();
        input.backspace();
        assert_eq!(input.text(), "éllo 🎉你");
        input.right();
        assert_eq!(input.cursor(), 7);
        input.home();
        input.left();
        input.backspace();
        assert_eq!(input.cursor(), 0);
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
