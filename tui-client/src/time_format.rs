//! The format of the time column (`--time-format`): a strftime pattern, checked once at
//! the start, and the column's width, which the pane's wrapping leaves room for.

use std::sync::OnceLock;

use chrono::format::{Item, StrftimeItems};

use crate::scrollback::TIME_WIDTH;

/// The default: `13:05:09`.
pub const DEFAULT: &str = "%H:%M:%S";

/// The widest time column a format may make, its space included.
const MOST_COLUMNS: usize = 32;

/// A checked strftime pattern and the columns its times take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeFormat {
    pattern: String,
    /// The column's width, the space after the time included: at least
    /// [`TIME_WIDTH`], for `sending…` and `not sent`.
    width: usize,
}

impl TimeFormat {
    /// Checks `pattern` (chrono's strftime), and measures it on times whose fields are
    /// at their widest (two-digit days and hours, the longest month and day names).
    pub fn new(pattern: &str) -> Result<Self, String> {
        if StrftimeItems::new(pattern).any(|item| matches!(item, Item::Error)) {
            return Err(format!(
                "{pattern:?} is not a strftime format (%H:%M:%S is one)"
            ));
        }
        let samples = [
            "2026-09-30T23:59:59",
            "2026-12-27T12:00:00",
            "2026-05-03T08:07:06",
        ];
        let widest = samples
            .iter()
            .filter_map(|sample| {
                chrono::NaiveDateTime::parse_from_str(sample, "%Y-%m-%dT%H:%M:%S").ok()
            })
            .map(|time| crate::text::width(&time.format(pattern).to_string()))
            .max()
            .unwrap_or(0);
        if widest + 1 > MOST_COLUMNS {
            return Err(format!(
                "{pattern:?} makes times of {widest} columns; at most {} fit",
                MOST_COLUMNS - 1
            ));
        }
        if pattern.contains('\n') || pattern.chars().any(char::is_control) {
            return Err(format!("{pattern:?} has a control character"));
        }
        Ok(Self {
            pattern: pattern.to_owned(),
            width: (widest + 1).max(TIME_WIDTH),
        })
    }

    /// A time (Unix milliseconds) in this format, local.
    pub fn local(&self, millis: u64) -> String {
        i64::try_from(millis)
            .ok()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|time| {
                time.with_timezone(&chrono::Local)
                    .format(&self.pattern)
                    .to_string()
            })
            .unwrap_or_default()
    }

    /// The columns of the time column, its space included.
    pub fn width(&self) -> usize {
        self.width
    }
}

static CHOSEN: OnceLock<TimeFormat> = OnceLock::new();

/// Sets the format of the time column for the whole run; once, at the start.
pub fn choose(format: TimeFormat) {
    let _ = CHOSEN.set(format);
}

/// The format chosen, or the default.
pub fn chosen() -> &'static TimeFormat {
    CHOSEN.get_or_init(|| TimeFormat::new(DEFAULT).expect("the default is a format"))
}

/// The columns of the time column, its space included.
pub fn time_width() -> usize {
    chosen().width()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_format_is_checked_and_measured_at_its_widest() {
        assert_eq!(TimeFormat::new(DEFAULT).unwrap().width(), TIME_WIDTH);
        assert_eq!(
            TimeFormat::new("%H:%M").unwrap().width(),
            TIME_WIDTH,
            "at least"
        );
        let long = TimeFormat::new("%a %d %b %H:%M:%S").unwrap();
        assert_eq!(long.width(), "Wed 30 Sep 23:59:59 ".len());
        let dated = TimeFormat::new("%Y-%m-%d %H:%M").unwrap();
        assert_eq!(dated.local(0).len(), "1970-01-01 00:00".len());
        assert!(
            TimeFormat::new("%Q")
                .unwrap_err()
                .contains("not a strftime format")
        );
        assert!(
            TimeFormat::new(&"%A ".repeat(5))
                .unwrap_err()
                .contains("at most")
        );
        assert!(TimeFormat::new("%H\u{1b}[2J").is_err());
    }
}
