//! Teams -> PBX presence (product.md F1): what a Teams presence becomes in the PBX.
//!
//! The mapping table's left column is Graph's `activity` vocabulary, so the activity decides
//! (case-insensitively: Graph spells `OffWork`, the table `Offwork`); the availability is used
//! only when the activity is missing or unknown. "online" means: unset the connector's own
//! presence item in the PBX.

pub mod sync;

/// What to do with the connector's presence item of a user in the PBX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PbxPresence {
    /// Unset the item (Teams says the user is available, offline or unknown).
    Unset,
    /// Set the item to this PBX activity.
    Set(&'static str),
}

fn map_one(value: &str) -> Option<PbxPresence> {
    use PbxPresence::*;
    let v = value.trim().to_ascii_lowercase();
    Some(match v.as_str() {
        "away" | "berightback" | "outofoffice" => Set("away"),
        "busy" => Set("busy"),
        "donotdisturb" | "urgentinterruptionsonly" => Set("dnd"),
        "inacall" | "inaconferencecall" | "presenting" => Set("on-the-phone"),
        "inameeting" => Set("meeting"),
        "inactive" | "presenceunknown" | "available" | "offline" | "offwork" => Unset,
        _ => return None,
    })
}

/// Availability values that are not activity names (graph.md §4.1), mapped like their base.
fn map_availability(value: &str) -> Option<PbxPresence> {
    match value.trim().to_ascii_lowercase().as_str() {
        "availableidle" => Some(PbxPresence::Unset),
        "busyidle" => Some(PbxPresence::Set("busy")),
        _ => map_one(value),
    }
}

/// Maps a Teams presence to the PBX. `None`: neither value is known; change nothing (the
/// caller logs it once).
pub fn map(activity: &str, availability: &str) -> Option<PbxPresence> {
    map_one(activity).or_else(|| map_availability(availability))
}

#[cfg(test)]
mod tests {
    use super::PbxPresence::*;
    use super::*;

    #[test]
    fn the_product_table_exactly() {
        let table = [
            ("Away", Set("away")),
            ("BeRightBack", Set("away")),
            ("Busy", Set("busy")),
            ("DoNotDisturb", Set("dnd")),
            ("InACall", Set("on-the-phone")),
            ("InAMeeting", Set("meeting")),
            ("UrgentInterruptionsOnly", Set("dnd")),
            ("InAConferenceCall", Set("on-the-phone")),
            ("Inactive", Unset),
            ("PresenceUnknown", Unset),
            ("Available", Unset),
            ("Offline", Unset),
            ("Offwork", Unset),
            ("OutOfOffice", Set("away")),
            ("Presenting", Set("on-the-phone")),
        ];
        for (activity, expected) in table {
            // The availability must not matter when the activity is known.
            assert_eq!(map(activity, "Busy"), Some(expected), "{activity}");
        }
    }

    #[test]
    fn case_insensitive_with_availability_fallback() {
        assert_eq!(map("OffWork", "Offline"), Some(Unset));
        assert_eq!(map("inAMeeting", ""), Some(Set("meeting")));
        assert_eq!(map("Focusing", "Busy"), Some(Set("busy")));
        assert_eq!(map("", "DoNotDisturb"), Some(Set("dnd")));
        assert_eq!(map("AvailableInactive", "AvailableIdle"), Some(Unset));
        assert_eq!(map("", "BusyIdle"), Some(Set("busy")));
        assert_eq!(map("Gardening", "Sleeping"), None);
        assert_eq!(map("", ""), None);
    }
}
