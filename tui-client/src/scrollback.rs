//! The scrollback: the messages kept for the pane, at most a cap of them, each with a
//! number that stays its own as older ones are dropped (so a place in it survives).

use std::collections::VecDeque;

use crate::text::wrap;

/// Columns taken by the time (`HH:MM:SS `) before each message, by default and at
/// least; `--time-format` may make it wider ([`crate::time_format::time_width`]).
pub const TIME_WIDTH: usize = 9;

/// What a line in the message pane is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `Client #<id> has entered the chat` or `... has left the chat`.
    Presence,
    /// A coming or going of someone who had not spoken in the last
    /// [`crate::app::SMART_FILTER_MINUTES`] minutes: noise, `hidden` (no rows) while the
    /// smart filter is on.
    QuietPresence { hidden: bool },
    /// `Client #<id>: <text>` (or, over `chat.v1.json`, `<name>: <text>`); `prefix` is
    /// the byte length of the sender and its colon.
    Said {
        id: String,
        mine: bool,
        prefix: usize,
        /// Someone else's message that mentions our id (or our name).
        mentions_me: bool,
        /// One of ours that the server has not sent back yet.
        pending: bool,
    },
    /// Any other text from the server, shown as it came.
    Other,
    /// Something this client says about itself (connection lost, line kept…).
    Notice,
    /// Where you were when you last looked away (the window lost focus, or you
    /// scrolled up): what comes after it is new to you. Only the latest is drawn.
    ReadMarker { latest: bool },
    /// A line between parts of the conversation: the history before you came, what
    /// was missed while away, a gap that could not be recovered, a new day.
    Divider,
    /// A line quoted from another message: the parent above a reply, a message found
    /// by a search on the server.
    Quote,
}

/// One message in the scrollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Local receive time, `HH:MM:SS`.
    pub time: String,
    /// The text, sanitized: safe to draw, newlines kept.
    pub text: String,
    pub kind: Kind,
}

impl Entry {
    /// The text cut into rows for a pane `width` columns wide, after the time column.
    pub fn rows(&self, width: u16) -> Vec<String> {
        match self.kind {
            // An old marker takes no room, and keeps the entries' numbering.
            Kind::ReadMarker { latest: false } | Kind::QuietPresence { hidden: true } => Vec::new(),
            _ => wrap(
                &self.text,
                usize::from(width).saturating_sub(crate::time_format::time_width()),
            ),
        }
    }
}

/// The kept messages, oldest first. Entries are numbered from the first ever kept:
/// `number` below is that, `index` the place among those kept now.
#[derive(Debug, Clone)]
pub struct Scrollback {
    entries: VecDeque<Entry>,
    /// The number of `entries[0]`.
    first: u64,
    /// The most entries kept; the oldest goes when one more comes.
    cap: usize,
}

impl Scrollback {
    /// An empty scrollback keeping at most `cap` entries (at least one), numbered from 0.
    pub fn new(cap: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            first: 0,
            cap: cap.max(1),
        }
    }

    /// An empty scrollback whose first entry is numbered [`Scrollback::FIRST`], so that
    /// older ones fetched later ([`Scrollback::push_front`]) can go before it.
    pub fn with_room_before(cap: usize) -> Self {
        Self {
            first: Self::FIRST,
            ..Self::new(cap)
        }
    }

    /// Where [`Scrollback::with_room_before`] starts numbering: room below for more
    /// older pages than any scrollback can hold.
    pub const FIRST: u64 = 1 << 32;

    /// The most entries kept.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Keeps `entry` as the oldest (a page of older history), if there is room: its
    /// number, or `None` when the scrollback is full.
    pub fn push_front(&mut self, entry: Entry) -> Option<u64> {
        if self.entries.len() >= self.cap || self.first == 0 {
            return None;
        }
        self.first -= 1;
        self.entries.push_front(entry);
        Some(self.first)
    }

    /// Keeps `entry` as the newest; true when that dropped the oldest.
    pub fn push(&mut self, entry: Entry) -> bool {
        self.entries.push_back(entry);
        if self.entries.len() > self.cap {
            self.entries.pop_front();
            self.first += 1;
            return true;
        }
        false
    }

    /// Drops every entry; the numbering carries on after them.
    pub fn clear(&mut self) {
        self.first += self.entries.len() as u64;
        self.entries.clear();
    }

    /// How many entries are kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries kept, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Entry> {
        self.entries.iter()
    }

    /// The newest entry.
    pub fn back(&self) -> Option<&Entry> {
        self.entries.back()
    }

    /// The entry at `index` among those kept.
    pub fn get(&self, index: usize) -> Option<&Entry> {
        self.entries.get(index)
    }

    /// The number of the oldest entry kept (or of the next, when there is none).
    pub fn first_number(&self) -> u64 {
        self.first
    }

    /// The number the next entry pushed will have.
    pub fn next_number(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    /// The number of the entry at `index`.
    pub fn number_of(&self, index: usize) -> u64 {
        self.first + index as u64
    }

    /// Where entry `number` is among those kept; an entry already dropped counts as the
    /// oldest kept.
    pub fn index_of(&self, number: u64) -> usize {
        usize::try_from(number.saturating_sub(self.first)).unwrap_or(usize::MAX)
    }

    /// The entry numbered `number`, if it is still kept.
    pub fn by_number_mut(&mut self, number: u64) -> Option<&mut Entry> {
        let index = number.checked_sub(self.first)?;
        self.entries.get_mut(usize::try_from(index).ok()?)
    }

    /// The number of the newest message (not a notice, marker or divider) that
    /// contains `needle` in any case, among those numbered below `before` (all, without).
    /// Hides (`hide`) or shows again the comings and goings the smart filter hides.
    pub fn filter_quiet_presence(&mut self, hide: bool) {
        for entry in &mut self.entries {
            if let Kind::QuietPresence { hidden } = &mut entry.kind {
                *hidden = hide;
            }
        }
    }

    pub fn newest_containing(&self, needle: &str, before: Option<u64>) -> Option<u64> {
        let needle = needle.to_lowercase();
        let end = before.map_or(self.entries.len(), |number| {
            self.index_of(number).min(self.entries.len())
        });
        let found = self.entries.range(..end).rposition(|entry| {
            matches!(
                entry.kind,
                Kind::Said { .. } | Kind::Presence | Kind::QuietPresence { .. } | Kind::Other
            ) && entry.text.to_lowercase().contains(&needle)
        })?;
        Some(self.number_of(found))
    }
}

impl std::ops::Index<usize> for Scrollback {
    type Output = Entry;

    fn index(&self, index: usize) -> &Entry {
        &self.entries[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str, kind: Kind) -> Entry {
        Entry {
            time: String::new(),
            text: text.to_owned(),
            kind,
        }
    }

    fn said(text: &str) -> Entry {
        entry(text, Kind::Other)
    }

    #[test]
    fn the_cap_drops_the_oldest_and_numbers_stay() {
        let mut scrollback = Scrollback::new(3);
        let dropped: Vec<bool> = (0..5)
            .map(|n| scrollback.push(said(&n.to_string())))
            .collect();
        assert_eq!(dropped, [false, false, false, true, true]);
        assert_eq!(scrollback.len(), 3);
        assert_eq!(scrollback[0].text, "2");
        assert_eq!(
            (scrollback.first_number(), scrollback.next_number()),
            (2, 5)
        );
        assert_eq!(scrollback.index_of(4), 2);
        assert_eq!(
            scrollback.index_of(0),
            0,
            "a dropped one counts as the oldest"
        );
        assert!(scrollback.by_number_mut(1).is_none());
        assert_eq!(
            scrollback.by_number_mut(3).map(|e| e.text.as_str()),
            Some("3")
        );
    }

    #[test]
    fn a_cap_of_zero_keeps_one() {
        let mut scrollback = Scrollback::new(0);
        scrollback.push(said("a"));
        scrollback.push(said("b"));
        assert_eq!(
            scrollback
                .iter()
                .map(|e| e.text.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );
    }

    #[test]
    fn clearing_keeps_the_numbering_going() {
        let mut scrollback = Scrollback::new(10);
        scrollback.push(said("a"));
        scrollback.push(said("b"));
        scrollback.clear();
        assert!(scrollback.is_empty());
        assert_eq!(scrollback.next_number(), 2);
        scrollback.push(said("c"));
        assert_eq!(scrollback.number_of(0), 2);
    }

    #[test]
    fn the_newest_match_is_found_before_a_number_in_messages_only() {
        let mut scrollback = Scrollback::new(10);
        scrollback.push(said("an Apple"));
        scrollback.push(entry("* apple notice", Kind::Notice));
        scrollback.push(said("APPLE pie"));
        scrollback.push(said("pear"));
        assert_eq!(scrollback.newest_containing("apple", None), Some(2));
        assert_eq!(scrollback.newest_containing("apple", Some(2)), Some(0));
        assert_eq!(scrollback.newest_containing("apple", Some(0)), None);
        assert_eq!(scrollback.newest_containing("plum", None), None);
    }

    #[test]
    fn an_old_read_marker_takes_no_rows() {
        let old = entry("── new ──", Kind::ReadMarker { latest: false });
        let latest = entry("── new ──", Kind::ReadMarker { latest: true });
        assert!(old.rows(40).is_empty());
        assert_eq!(latest.rows(40).len(), 1);
        let long = said(&"word ".repeat(20));
        assert_eq!(long.rows(40).len(), 4, "31 columns after the time");
    }
}
