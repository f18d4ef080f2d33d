//! Tab completion of the names and ids of people in the input line: the word before the
//! cursor (after an `@`, if it starts with one) becomes the first of them it starts,
//! and Tab again goes on to the next, round. At the start of the line a completion is
//! followed by `: `, as IRC clients do; elsewhere by a space.

/// A completion in progress: Tab again replaces it with the next candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// Where the completed word starts in the line (after its `@`), in bytes.
    start: usize,
    candidates: Vec<String>,
    /// The candidate in the line now.
    index: usize,
    /// The line as the completion left it, to know that nothing else changed it.
    line: String,
}

/// What `word` (the text before the cursor since the last space) could become: each of
/// `known` (names and ids) that starts with it, in any case, sorted and once each.
pub fn candidates<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let word = word.to_lowercase();
    let mut found: Vec<String> = known
        .into_iter()
        .filter(|known| !known.is_empty() && known.to_lowercase().starts_with(&word))
        .map(str::to_owned)
        .collect();
    found.sort_by_key(|known| known.to_lowercase());
    found.dedup();
    found
}

/// Where the word before the cursor starts in `before` (the text before the cursor),
/// after an `@` if it starts with one, and the word.
pub fn word_before(before: &str) -> (usize, &str) {
    let start = before
        .char_indices()
        .rev()
        .find(|(_, c)| c.is_whitespace())
        .map_or(0, |(at, c)| at + c.len_utf8());
    let start = if before[start..].starts_with('@') {
        start + 1
    } else {
        start
    };
    (start, &before[start..])
}

/// What follows a completed word at byte `start` of the line.
fn suffix(start: usize) -> &'static str {
    if start == 0 { ": " } else { " " }
}

impl Completion {
    /// Starts completing the word before the cursor among `known`; with what to put
    /// in place of it (from `start` to the cursor). `None` when nothing fits.
    pub fn start<'a>(
        before: &str,
        known: impl IntoIterator<Item = &'a str>,
    ) -> Option<(Self, usize, String)> {
        let (start, word) = word_before(before);
        let candidates = candidates(word, known);
        let first = candidates.first()?.clone();
        let replacement = format!("{first}{}", suffix(start));
        Some((
            Self {
                start,
                candidates,
                index: 0,
                line: String::new(),
            },
            start,
            replacement,
        ))
    }

    /// Notes the line as this completion left it.
    pub fn left(&mut self, line: &str) {
        self.line = line.to_owned();
    }

    /// Whether the line is still as this completion left it.
    pub fn is_current(&self, line: &str) -> bool {
        self.line == line
    }

    /// The next candidate, round: where it goes and what it is.
    pub fn advance(&mut self) -> (usize, String) {
        self.index = (self.index + 1) % self.candidates.len();
        let candidate = &self.candidates[self.index];
        (self.start, format!("{candidate}{}", suffix(self.start)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_before_the_cursor_is_completed_in_any_case() {
        let known = ["Ada", "adam", "7", "70", "Bob"];
        assert_eq!(candidates("ad", known), ["Ada", "adam"]);
        assert_eq!(candidates("7", known), ["7", "70"]);
        assert!(candidates("z", known).is_empty());
        assert_eq!(word_before("hi @ad"), (4, "ad"));
        assert_eq!(word_before("ad"), (0, "ad"));
        let (mut completion, start, first) = Completion::start("ad", known).unwrap();
        assert_eq!((start, first.as_str()), (0, "Ada: "));
        assert_eq!(completion.advance(), (0, "adam: ".to_owned()));
        assert_eq!(completion.advance(), (0, "Ada: ".to_owned()), "round");
        let (_, start, first) = Completion::start("thanks b", known).unwrap();
        assert_eq!((start, first.as_str()), (7, "Bob "));
    }
}
