//! What a PBX presence becomes in Teams (product.md F2), and which PBX item counts.
//!
//! The PBX presence that counts is the newest item of the user's list that the connector did
//! not write itself: items of its own contacts (`teams:` and the calendar contact) and the
//! PBX's `im:` item (myApps online state) are skipped, so nothing the connector wrote into the
//! PBX travels back to Teams.

use crate::pbx::PresenceItem;

/// The PBX's on-the-phone activity.
pub const ON_THE_PHONE: &str = "on-the-phone";

/// A Teams `(availability, activity)` pair.
pub type Pair = (&'static str, &'static str);

/// What a call session shows (`setPresence`, graph.md 4.5).
pub const IN_A_CALL: Pair = ("Busy", "InACall");

/// The preferred presence that stops Teams ringing during PBX calls (option).
pub const DO_NOT_DISTURB: Pair = ("DoNotDisturb", "DoNotDisturb");

/// What a PBX activity asks of Teams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// On the phone: the app's call session (Busy/InACall).
    Call,
    /// A preferred presence (one of the documented valid pairs, graph.md 4.7).
    Preferred(Pair),
    /// Available: clear what the connector set.
    Clear,
}

/// Maps a PBX activity; `None` for activities the table does not know (they change nothing).
pub fn target(activity: &str) -> Option<Target> {
    Some(match activity.trim().to_ascii_lowercase().as_str() {
        "" => Target::Clear,
        ON_THE_PHONE => Target::Call,
        "busy" | "meeting" => Target::Preferred(("Busy", "Busy")),
        "dnd" => Target::Preferred(DO_NOT_DISTURB),
        "away" | "vacation" => Target::Preferred(("Away", "Away")),
        "lunch" => Target::Preferred(("BeRightBack", "BeRightBack")),
        _ => return None,
    })
}

/// How long a preferred presence lasts: 7 days for away, 1 day for the rest (product.md F2).
pub fn preferred_lifetime(pair: Pair) -> &'static str {
    if pair.0 == "Away" { "P7D" } else { "P1D" }
}

/// [`preferred_lifetime`] in milliseconds, by the pair's availability.
pub fn preferred_lifetime_ms(availability: &str) -> u64 {
    const DAY_MS: u64 = 24 * 3600 * 1000;
    if availability == "Away" {
        7 * DAY_MS
    } else {
        DAY_MS
    }
}

/// The activity of the item that counts (`""` = available when no item counts).
pub fn counted_activity<'a>(items: &'a [PresenceItem], excluded: &[String]) -> &'a str {
    items
        .iter()
        .find(|i| !excluded.iter().any(|c| c.eq_ignore_ascii_case(&i.contact)))
        .map(|i| i.activity.as_str())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(contact: &str, activity: &str) -> PresenceItem {
        PresenceItem {
            contact: contact.into(),
            status: "open".into(),
            activity: activity.into(),
            note: String::new(),
        }
    }

    #[test]
    fn the_product_table_exactly() {
        let table = [
            ("on-the-phone", Target::Call),
            ("busy", Target::Preferred(("Busy", "Busy"))),
            ("dnd", Target::Preferred(("DoNotDisturb", "DoNotDisturb"))),
            ("meeting", Target::Preferred(("Busy", "Busy"))),
            ("away", Target::Preferred(("Away", "Away"))),
            ("lunch", Target::Preferred(("BeRightBack", "BeRightBack"))),
            ("vacation", Target::Preferred(("Away", "Away"))),
            ("", Target::Clear),
        ];
        for (activity, expected) in table {
            assert_eq!(target(activity), Some(expected), "{activity}");
        }
        assert_eq!(target("Away"), Some(Target::Preferred(("Away", "Away"))));
        assert_eq!(target("juggling"), None);
    }

    #[test]
    fn only_documented_preferred_pairs_are_used() {
        // graph.md 4.7: the six valid pairs of setUserPreferredPresence.
        let valid = [
            ("Available", "Available"),
            ("Busy", "Busy"),
            ("DoNotDisturb", "DoNotDisturb"),
            ("BeRightBack", "BeRightBack"),
            ("Away", "Away"),
            ("Offline", "OffWork"),
        ];
        for a in ["busy", "dnd", "meeting", "away", "lunch", "vacation"] {
            let Some(Target::Preferred(p)) = target(a) else {
                panic!("{a}")
            };
            assert!(valid.contains(&p), "{a} -> {p:?}");
        }
        assert_eq!(preferred_lifetime(("Away", "Away")), "P7D");
        assert_eq!(preferred_lifetime(("Busy", "Busy")), "P1D");
    }

    #[test]
    fn own_items_and_im_never_count() {
        let excluded = vec!["teams:".to_string(), "calendar:".into(), "im:".into()];
        let items = [
            item("teams:", "on-the-phone"),
            item("calendar:", "meeting"),
            item("im:", ""),
            item("tel:", "away"),
        ];
        assert_eq!(counted_activity(&items, &excluded), "away");
        assert_eq!(counted_activity(&items[..3], &excluded), "");
        assert_eq!(counted_activity(&[item("tel:", "dnd")], &excluded), "dnd");
    }
}
