//! The viewport: where the message pane is in the scrollback and how it moves (pages,
//! the wheel, the ends, a resize), what arrived below it, the read marker's place and
//! the search's. It reads a [`Scrollback`] it is given and never changes it.

use std::ops::Range;

use crate::scrollback::{Entry, Scrollback};

/// Rows under the message pane: the status bar and the input line.
pub const CHROME_ROWS: u16 = 2;

/// Rows the mouse wheel scrolls per notch.
pub const WHEEL_ROWS: usize = 3;

/// Where the message pane is anchored in the scrollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// Following the newest message.
    Bottom,
    /// Scrolled up: the top row shown is row `row` of the entry numbered `entry`.
    /// Entries are numbered from the first ever received, so the place survives the
    /// scrollback dropping old entries and a resize re-wrapping them: the view stays on
    /// the same message, and costs nothing as new ones arrive.
    At { entry: u64, row: usize },
}

/// A search in the scrollback: what is looked for, and the message found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    pub query: String,
    /// The number of the entry found (see [`Anchor::At`]).
    pub found: u64,
}

/// The pane's place and size, and what it knows about what is below it.
#[derive(Debug, Clone)]
pub struct Viewport {
    anchor: Anchor,
    /// Messages that arrived while scrolled up.
    unseen: usize,
    /// The terminal's columns and rows.
    size: (u16, u16),
    /// The number of the latest read marker entry, if any.
    marker: Option<u64>,
    /// A search in the scrollback, while one is on (`/search`, Ctrl-R).
    search: Option<Search>,
}

impl Default for Viewport {
    fn default() -> Self {
        Self {
            anchor: Anchor::Bottom,
            unseen: 0,
            size: (80, 24),
            marker: None,
            search: None,
        }
    }
}

impl Viewport {
    /// Where the pane is anchored.
    pub fn anchor(&self) -> Anchor {
        self.anchor
    }

    /// Whether scrolled up, with more below.
    pub fn is_scrolled_up(&self) -> bool {
        matches!(self.anchor, Anchor::At { .. })
    }

    /// Messages that arrived while scrolled up.
    pub fn unseen(&self) -> usize {
        self.unseen
    }

    /// The search on, if any.
    pub fn search(&self) -> Option<&Search> {
        self.search.as_ref()
    }

    /// Ends the search (Esc, `/clear`, another search, `/join`).
    pub fn end_search(&mut self) {
        self.search = None;
    }

    /// The number of the latest read marker entry, if any.
    pub fn marker(&self) -> Option<u64> {
        self.marker
    }

    /// The read marker is now the entry numbered `number`.
    pub fn set_marker(&mut self, number: u64) {
        self.marker = Some(number);
    }

    /// The terminal is now this big; the same message stays on top, within its rows.
    pub fn resize(&mut self, scrollback: &Scrollback, columns: u16, rows: u16) {
        self.size = (columns, rows);
        if let Anchor::At { entry, row } = self.anchor {
            let index = scrollback.index_of(entry);
            let row = row.min(self.rows_of(scrollback, index).saturating_sub(1));
            self.anchor = Anchor::At { entry, row };
        }
    }

    /// An entry was just pushed onto `scrollback`: counted as unseen while scrolled up,
    /// and if the one on top was dropped for it, the oldest one left takes its place.
    pub fn pushed(&mut self, scrollback: &Scrollback) {
        if let Anchor::At { entry, .. } = self.anchor {
            self.unseen += 1;
            if entry < scrollback.first_number() {
                self.anchor = Anchor::At {
                    entry: scrollback.first_number(),
                    row: 0,
                };
            }
        }
    }

    /// The message pane's height in rows.
    pub fn pane_height(&self) -> usize {
        usize::from(self.size.1.saturating_sub(CHROME_ROWS))
    }

    /// What PageUp and PageDown move: the pane less a row, kept in sight.
    pub fn page(&self) -> usize {
        self.pane_height().saturating_sub(1).max(1)
    }

    /// How many rows the entry at `index` takes at the current width.
    fn rows_of(&self, scrollback: &Scrollback, index: usize) -> usize {
        scrollback
            .get(index)
            .map_or(0, |entry| entry.rows(self.size.0).len())
    }

    /// The entry index and row of the pane's top row: walks back from the newest entry
    /// at the bottom, or starts where the view is anchored. Costs a screenful of
    /// wrapping, whatever the scrollback holds.
    fn top(&self, scrollback: &Scrollback) -> (usize, usize) {
        match self.anchor {
            Anchor::At { entry, row } => (scrollback.index_of(entry), row),
            Anchor::Bottom => {
                let mut rows = 0;
                for index in (0..scrollback.len()).rev() {
                    rows += self.rows_of(scrollback, index);
                    if rows >= self.pane_height() {
                        return (index, rows - self.pane_height());
                    }
                }
                (0, 0)
            }
        }
    }

    /// The rows the message pane shows, oldest first: each entry, with its number (see
    /// [`Anchor::At`]) and the range of its rows in view.
    pub fn visible<'a>(&self, scrollback: &'a Scrollback) -> Vec<(u64, &'a Entry, Range<usize>)> {
        let (mut index, mut row) = self.top(scrollback);
        let mut left = self.pane_height();
        let mut shown = Vec::new();
        while left > 0 && index < scrollback.len() {
            let rows = self.rows_of(scrollback, index);
            let take = rows.saturating_sub(row).min(left);
            shown.push((
                scrollback.number_of(index),
                &scrollback[index],
                row..row + take,
            ));
            left -= take;
            index += 1;
            row = 0;
        }
        shown
    }

    /// Whether everything is on the screen at the bottom: nothing to scroll up to.
    pub fn all_fits(&self, scrollback: &Scrollback) -> bool {
        self.anchor == Anchor::Bottom && self.top(scrollback) == (0, 0)
    }

    /// Moves `rows` rows towards the oldest message, no further than its first row.
    pub fn scroll_up(&mut self, scrollback: &Scrollback, rows: usize) {
        if self.all_fits(scrollback) {
            return;
        }
        let (mut index, mut row) = self.top(scrollback);
        let mut left = rows;
        while left > 0 {
            if row >= left {
                row -= left;
                left = 0;
            } else if index > 0 {
                left -= row + 1;
                index -= 1;
                row = self.rows_of(scrollback, index).saturating_sub(1);
            } else {
                row = 0;
                left = 0;
            }
        }
        if (index, row) != self.top(scrollback) || self.is_scrolled_up() {
            self.anchor = Anchor::At {
                entry: scrollback.number_of(index),
                row,
            };
        }
    }

    /// Moves `rows` rows towards the newest message; once the rest fits on the screen,
    /// the view follows the newest message again.
    pub fn scroll_down(&mut self, scrollback: &Scrollback, rows: usize) {
        let Anchor::At { entry, row } = self.anchor else {
            return;
        };
        let (mut index, mut row) = (scrollback.index_of(entry), row);
        for _ in 0..rows {
            row += 1;
            if row >= self.rows_of(scrollback, index) {
                index += 1;
                row = 0;
            }
        }
        let mut below = self.rows_of(scrollback, index).saturating_sub(row);
        let mut next = index + 1;
        while below <= self.pane_height() && next < scrollback.len() {
            below += self.rows_of(scrollback, next);
            next += 1;
        }
        if below <= self.pane_height() {
            self.scroll_to_bottom();
        } else {
            self.anchor = Anchor::At {
                entry: scrollback.number_of(index),
                row,
            };
        }
    }

    /// The oldest message on top; a scrollback that fits on the screen has no top to
    /// scroll to.
    pub fn scroll_to_top(&mut self, scrollback: &Scrollback) {
        self.anchor = Anchor::At {
            entry: scrollback.first_number(),
            row: 0,
        };
        self.scroll_down(scrollback, 0);
    }

    /// Brings entry `entry` into view, on top unless it is on the last screen.
    pub fn show(&mut self, scrollback: &Scrollback, entry: u64) {
        if self
            .visible(scrollback)
            .iter()
            .any(|(number, ..)| *number == entry)
        {
            return;
        }
        self.anchor = Anchor::At { entry, row: 0 };
        self.scroll_down(scrollback, 0);
    }

    /// Follows the newest message again; nothing is unseen any more.
    pub fn scroll_to_bottom(&mut self) {
        self.anchor = Anchor::Bottom;
        self.unseen = 0;
    }

    /// Where a search for `query` looks: before the message it found last, if the
    /// search on is for the same text; otherwise everywhere (`None`).
    pub fn search_before(&self, query: &str) -> Option<u64> {
        self.search
            .as_ref()
            .filter(|search| search.query == query)
            .map(|search| search.found)
    }

    /// A search for `query` found entry `found`: it goes on top, unless it is on the
    /// last screen, where the view follows the newest messages again.
    pub fn found(&mut self, scrollback: &Scrollback, query: &str, found: u64) {
        self.search = Some(Search {
            query: query.to_owned(),
            found,
        });
        self.anchor = Anchor::At {
            entry: found,
            row: 0,
        };
        self.scroll_down(scrollback, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrollback::Kind;

    fn filled(messages: usize) -> Scrollback {
        let mut scrollback = Scrollback::new(1000);
        for n in 0..messages {
            scrollback.push(Entry {
                time: String::new(),
                text: format!("message {n}"),
                kind: Kind::Other,
            });
        }
        scrollback
    }

    /// A viewport on a terminal 40 by 12: a pane of 10 rows.
    fn viewport(scrollback: &Scrollback) -> Viewport {
        let mut viewport = Viewport::default();
        viewport.resize(scrollback, 40, 12);
        viewport
    }

    fn top_text(viewport: &Viewport, scrollback: &Scrollback) -> String {
        let visible = viewport.visible(scrollback);
        visible
            .first()
            .map(|(_, entry, _)| entry.text.clone())
            .unwrap_or_default()
    }

    #[test]
    fn at_the_bottom_the_newest_fill_the_pane() {
        let scrollback = filled(30);
        let viewport = viewport(&scrollback);
        let visible = viewport.visible(&scrollback);
        assert_eq!(visible.len(), 10);
        assert_eq!(visible[0].0, 20);
        assert_eq!(visible[9].1.text, "message 29");
    }

    #[test]
    fn pages_move_by_the_pane_less_a_row_and_the_bottom_follows_again() {
        let scrollback = filled(30);
        let mut viewport = viewport(&scrollback);
        viewport.scroll_up(&scrollback, viewport.page());
        assert_eq!(top_text(&viewport, &scrollback), "message 11");
        assert!(viewport.is_scrolled_up());
        viewport.scroll_down(&scrollback, viewport.page());
        assert_eq!(
            viewport.anchor(),
            Anchor::Bottom,
            "the rest fits: following"
        );
    }

    #[test]
    fn nothing_to_scroll_when_everything_fits() {
        let scrollback = filled(5);
        let mut viewport = viewport(&scrollback);
        assert!(viewport.all_fits(&scrollback));
        viewport.scroll_up(&scrollback, 3);
        viewport.scroll_to_top(&scrollback);
        assert_eq!(viewport.anchor(), Anchor::Bottom);
    }

    #[test]
    fn scrolled_up_new_entries_are_unseen_until_the_bottom() {
        let mut scrollback = filled(30);
        let mut viewport = viewport(&scrollback);
        viewport.scroll_up(&scrollback, 3);
        for n in 0..2 {
            scrollback.push(Entry {
                time: String::new(),
                text: format!("new {n}"),
                kind: Kind::Other,
            });
            viewport.pushed(&scrollback);
        }
        assert_eq!(viewport.unseen(), 2);
        assert_eq!(
            top_text(&viewport, &scrollback),
            "message 17",
            "did not move"
        );
        viewport.scroll_to_bottom();
        assert_eq!((viewport.anchor(), viewport.unseen()), (Anchor::Bottom, 0));
    }

    #[test]
    fn the_top_moves_on_when_the_scrollback_drops_it() {
        let mut scrollback = Scrollback::new(20);
        for n in 0..20 {
            scrollback.push(Entry {
                time: String::new(),
                text: format!("message {n}"),
                kind: Kind::Other,
            });
        }
        let mut viewport = viewport(&scrollback);
        viewport.scroll_to_top(&scrollback);
        scrollback.push(Entry {
            time: String::new(),
            text: "newest".into(),
            kind: Kind::Other,
        });
        viewport.pushed(&scrollback);
        assert_eq!(viewport.anchor(), Anchor::At { entry: 1, row: 0 });
    }

    #[test]
    fn a_resize_keeps_the_row_within_the_top_message() {
        let mut scrollback = Scrollback::new(100);
        scrollback.push(Entry {
            time: String::new(),
            text: "word ".repeat(30),
            kind: Kind::Other,
        });
        for n in 0..30 {
            scrollback.push(Entry {
                time: String::new(),
                text: format!("message {n}"),
                kind: Kind::Other,
            });
        }
        let mut viewport = viewport(&scrollback);
        viewport.scroll_to_top(&scrollback);
        viewport.scroll_down(&scrollback, 3);
        assert_eq!(
            viewport.anchor(),
            Anchor::At { entry: 0, row: 3 },
            "inside the long message"
        );
        viewport.resize(&scrollback, 200, 12);
        assert_eq!(
            viewport.anchor(),
            Anchor::At { entry: 0, row: 0 },
            "one row now"
        );
    }

    #[test]
    fn a_search_found_near_the_bottom_follows_the_newest() {
        let scrollback = filled(30);
        let mut viewport = viewport(&scrollback);
        viewport.found(&scrollback, "message 5", 5);
        assert_eq!(viewport.anchor(), Anchor::At { entry: 5, row: 0 });
        assert_eq!(viewport.search_before("message 5"), Some(5));
        assert_eq!(viewport.search_before("other"), None);
        viewport.found(&scrollback, "message 28", 28);
        assert_eq!(viewport.anchor(), Anchor::Bottom);
        viewport.end_search();
        assert_eq!(viewport.search(), None);
    }
}
