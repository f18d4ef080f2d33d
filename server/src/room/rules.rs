//! A room's moderation state: the roles granted in it, its bans and mutes, its topic,
//! slow mode and whether it is read-only. Kept as named fields, each set or cleared by
//! one moderation event ([`change`]), so that memory, the journal (its `rules` table)
//! and Redis (a hash per room) keep the same fields and apply the same changes in log
//! order; the bans outlive the history that recorded them.

use std::collections::BTreeMap;

use chat::v1::{self, EventKind, Role};
use chat::v2;
use serde::{Deserialize, Serialize};

/// What one moderation event does to the rules: `field` takes `value`, or is cleared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub field: String,
    pub value: Option<String>,
}

/// A ban or a mute as the rules keep it: until when (Unix milliseconds; `None`: until
/// lifted), and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sanction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Sanction {
    fn new(ts: u64, seconds: Option<u64>, reason: Option<&String>) -> Self {
        Self {
            until: seconds.map(|seconds| ts.saturating_add(seconds.saturating_mul(1000))),
            reason: reason.cloned(),
        }
    }

    /// Whether it still holds at `now` (Unix milliseconds).
    pub fn holds(&self, now: u64) -> bool {
        self.until.is_none_or(|until| now < until)
    }

    /// Until when, in words: `until lifted`, or the UTC time.
    pub fn until_text(&self) -> String {
        match self.until {
            None => "until lifted".to_owned(),
            Some(until) => format!("until {}", utc(until)),
        }
    }

    /// What a refusal says of this ban of `id`: from `room`, or (`None`) from the
    /// server, until when and why — `#3 is banned from room main until lifted: spam`.
    pub fn banned_words(&self, id: &chat::ClientId, room: Option<&v1::RoomName>) -> String {
        let from = match room {
            Some(room) => format!("room {room}"),
            None => "this server".to_owned(),
        };
        let reason = self
            .reason
            .as_deref()
            .map_or(String::new(), |reason| format!(": {reason}"));
        format!("#{id} is banned from {from} {}{reason}", self.until_text())
    }
}

/// A Unix time in milliseconds as an RFC 3339 UTC time, to the second.
pub fn utc(millis: u64) -> String {
    let seconds = millis / 1000;
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    // Howard Hinnant's days-from-civil, inverted: the date of a day count.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// What `event` changes in the rules, if it is a moderation event that changes any
/// (a kick changes nothing).
pub fn change(event: &v1::Event) -> Option<Change> {
    let set = |field: String, value: String| Change {
        field,
        value: Some(value),
    };
    let clear = |field: String| Change { field, value: None };
    let json = |sanction: Sanction| serde_json::to_string(&sanction).expect("serializes");
    Some(match &event.kind {
        EventKind::Ban {
            member,
            seconds,
            reason,
            ..
        } => set(
            format!("ban:{member}"),
            json(Sanction::new(event.ts, *seconds, reason.as_ref())),
        ),
        EventKind::Unban { member, .. } => clear(format!("ban:{member}")),
        EventKind::Mute {
            member, seconds, ..
        } => set(
            format!("mute:{member}"),
            json(Sanction::new(event.ts, *seconds, None)),
        ),
        EventKind::Unmute { member, .. } => clear(format!("mute:{member}")),
        EventKind::Role { member, role, .. } if *role == Role::Member => {
            clear(format!("role:{member}"))
        }
        EventKind::Role { member, role, .. } => {
            set(format!("role:{member}"), role.as_str().to_owned())
        }
        EventKind::Topic { text, .. } if text.is_empty() => clear("topic".to_owned()),
        EventKind::Topic { text, .. } => set("topic".to_owned(), text.clone()),
        EventKind::Slow { seconds: 0, .. } => clear("slow".to_owned()),
        EventKind::Slow { seconds, .. } => set("slow".to_owned(), seconds.to_string()),
        EventKind::ReadOnly { on: false, .. } => clear("read_only".to_owned()),
        EventKind::ReadOnly { on: true, .. } => set("read_only".to_owned(), "1".to_owned()),
        _ => return None,
    })
}

/// A room's (or the server's) rules: its fields, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    fields: BTreeMap<String, String>,
}

impl Rules {
    /// The rules of these fields, as a store or Redis keeps them.
    pub fn from_fields(fields: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            fields: fields.into_iter().collect(),
        }
    }

    /// Makes a change.
    pub fn apply(&mut self, change: Change) {
        match change.value {
            Some(value) => self.fields.insert(change.field, value),
            None => self.fields.remove(&change.field),
        };
    }

    fn sanction(&self, kind: &str, id: &str, now: u64) -> Option<Sanction> {
        let value = self.fields.get(&format!("{kind}:{id}"))?;
        let sanction: Sanction = serde_json::from_str(value).ok()?;
        sanction.holds(now).then_some(sanction)
    }

    /// `id`'s ban, if it is banned at `now`.
    pub fn ban(&self, id: &str, now: u64) -> Option<Sanction> {
        self.sanction("ban", id, now)
    }

    /// The bans that hold at `now`, by id.
    pub fn bans(&self, now: u64) -> Vec<(&str, Sanction)> {
        self.fields
            .iter()
            .filter_map(|(field, value)| {
                let id = field.strip_prefix("ban:")?;
                let ban: Sanction = serde_json::from_str(value).ok()?;
                ban.holds(now).then_some((id, ban))
            })
            .collect()
    }

    /// Whether `id` is muted at `now`.
    pub fn muted(&self, id: &str, now: u64) -> bool {
        self.sanction("mute", id, now).is_some()
    }

    /// The role granted to `id` in the room.
    pub fn role(&self, id: &str) -> Role {
        self.fields
            .get(&format!("role:{id}"))
            .and_then(|role| serde_json::from_value(role.as_str().into()).ok())
            .unwrap_or_default()
    }

    /// Every role granted in the room, by id.
    pub fn roles(&self) -> BTreeMap<&str, Role> {
        self.fields
            .iter()
            .filter_map(|(field, role)| {
                let id = field.strip_prefix("role:")?;
                Some((id, serde_json::from_value(role.as_str().into()).ok()?))
            })
            .collect()
    }

    /// The room's topic, if it has one.
    pub fn topic(&self) -> Option<&str> {
        self.fields.get("topic").map(String::as_str)
    }

    /// Slow mode: the seconds between a member's messages; 0 when off.
    pub fn slow(&self) -> u64 {
        self.fields
            .get("slow")
            .and_then(|seconds| seconds.parse().ok())
            .unwrap_or(0)
    }

    /// Whether only moderators may speak.
    pub fn read_only(&self) -> bool {
        self.fields.contains_key("read_only")
    }

    /// Why `request` would change nothing in these rules at `now`, if it would not:
    /// lifting a ban or mute that does not hold, granting a role already held, setting
    /// the topic, slow mode or read-only to what it is. Such a request is answered
    /// with this, not logged: the audit trail records changes only.
    pub fn unchanged(&self, request: &v2::Request, now: u64) -> Option<String> {
        match request {
            v2::Request::Unban { member, .. } if self.ban(member, now).is_none() => {
                Some(format!("#{member} is not banned here"))
            }
            v2::Request::Unmute { member, .. } if !self.muted(member, now) => {
                Some(format!("#{member} is not muted here"))
            }
            v2::Request::Role { member, role, .. } if self.role(member) == *role => {
                Some(format!("#{member} is a {} here already", role.as_str()))
            }
            v2::Request::Topic { text, .. } if self.topic().unwrap_or("") == text => {
                Some(match text.is_empty() {
                    true => "the room has no topic already".to_owned(),
                    false => "that is the topic already".to_owned(),
                })
            }
            v2::Request::Slow { seconds, .. } if self.slow() == *seconds => Some(match seconds {
                0 => "slow mode is off already".to_owned(),
                _ => format!("slow mode is {seconds} s already"),
            }),
            v2::Request::ReadOnly { on, .. } if self.read_only() == *on => Some(match on {
                true => "the room is read-only already".to_owned(),
                false => "the room is not read-only".to_owned(),
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ts: u64, kind: EventKind) -> v1::Event {
        v1::Event {
            offset: 1,
            ts,
            id: "1".into(),
            name: None,
            kind,
        }
    }

    #[test]
    fn moderation_events_set_and_clear_the_fields() {
        let mut rules = Rules::default();
        let ban = EventKind::Ban {
            member: "7".into(),
            seconds: Some(60),
            reason: Some("spam".into()),
            nonce: None,
        };
        rules.apply(change(&event(1_000, ban)).unwrap());
        let banned = rules.ban("7", 2_000).unwrap();
        assert_eq!(banned.until, Some(61_000));
        assert_eq!(banned.reason.as_deref(), Some("spam"));
        assert_eq!(rules.ban("7", 61_000), None, "expired");
        let role = EventKind::Role {
            member: "8".into(),
            role: Role::Moderator,
            nonce: None,
        };
        rules.apply(change(&event(0, role)).unwrap());
        assert_eq!(rules.role("8"), Role::Moderator);
        assert_eq!(
            rules.roles().into_iter().collect::<Vec<_>>(),
            [("8", Role::Moderator)]
        );
        let slow = EventKind::Slow {
            seconds: 5,
            nonce: None,
        };
        rules.apply(change(&event(0, slow)).unwrap());
        assert_eq!(rules.slow(), 5);
        let unban = EventKind::Unban {
            member: "7".into(),
            nonce: None,
        };
        rules.apply(change(&event(0, unban)).unwrap());
        assert_eq!(rules.ban("7", 2_000), None);
        let kick = EventKind::Kick {
            member: "7".into(),
            reason: None,
            nonce: None,
        };
        assert_eq!(change(&event(0, kick)), None);
    }

    #[test]
    fn a_request_that_changes_nothing_is_said_to() {
        let mut rules = Rules::default();
        let unban = v2::Request::Unban {
            member: "7".into(),
            nonce: None,
        };
        assert_eq!(
            rules.unchanged(&unban, 0).as_deref(),
            Some("#7 is not banned here")
        );
        let ban = EventKind::Ban {
            member: "7".into(),
            seconds: Some(60),
            reason: None,
            nonce: None,
        };
        rules.apply(change(&event(1_000, ban)).unwrap());
        assert_eq!(
            rules.unchanged(&unban, 2_000),
            None,
            "banned: lifting changes it"
        );
        assert!(rules.unchanged(&unban, 61_000).is_some(), "expired");
        let topic = |text: &str| v2::Request::Topic {
            text: text.into(),
            nonce: None,
        };
        assert!(rules.unchanged(&topic(""), 0).is_some());
        assert_eq!(rules.unchanged(&topic("Launch"), 0), None);
        let member = v2::Request::Role {
            member: "8".into(),
            role: Role::Member,
            nonce: None,
        };
        assert!(rules.unchanged(&member, 0).is_some());
        let slow = v2::Request::Slow {
            seconds: 0,
            nonce: None,
        };
        assert_eq!(
            rules.unchanged(&slow, 0).as_deref(),
            Some("slow mode is off already")
        );
        let kick = v2::Request::Kick {
            member: "7".into(),
            reason: None,
            nonce: None,
        };
        assert_eq!(
            rules.unchanged(&kick, 0),
            None,
            "a kick always does something"
        );
    }

    #[test]
    fn times_read_as_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_733_331_600_000), "2024-12-04T17:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
