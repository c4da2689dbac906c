//! AADSTS error codes mapped to messages an administrator can act on (graph.md §1.6).
//! The text says what is wrong and what to change; it never contains a secret.

/// What the connector should do after a token error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Device code: the user has not finished signing in yet; poll again after the interval.
    KeepPolling,
    /// Device code: polling too fast; add 5 seconds to the interval.
    SlowDown,
    /// The credentials or app registration must be fixed by an administrator; retrying with
    /// the same input cannot succeed.
    FixConfiguration,
    /// The account needs an interactive (device-code) sign-in.
    SignInAgain,
    /// A transient problem; retry later with backoff.
    Retry,
}

/// The advice for one AADSTS code: a message and an action.
pub fn advice(code: u32) -> Option<(&'static str, Action)> {
    use Action::*;
    Some(match code {
        50126 => (
            "Wrong user name or password for the Teams account. Check both in the settings \
             (any special characters are fine: they are sent encoded).",
            FixConfiguration,
        ),
        50076 => (
            "The account requires multi-factor authentication, which password sign-in cannot \
             satisfy. Use device-code sign-in for this account.",
            SignInAgain,
        ),
        50079 => (
            "The account must register for multi-factor authentication first. Complete the \
             registration, then use device-code sign-in.",
            SignInAgain,
        ),
        53003 => (
            "Sign-in was blocked by a Conditional Access policy. Ask the Entra ID administrator \
             to allow this account and app (see the Entra sign-in logs).",
            FixConfiguration,
        ),
        50034 => (
            "The user does not exist in this tenant. Check the user name (UPN) and the tenant.",
            FixConfiguration,
        ),
        50053 => (
            "The account is locked, or sign-in was blocked after too many attempts. Wait or \
             unlock it in Entra ID, then check the password.",
            FixConfiguration,
        ),
        50055 => (
            "The account's password has expired. Set a new password and update the settings.",
            FixConfiguration,
        ),
        50057 => (
            "The account is disabled in Entra ID. Enable it or use another account.",
            FixConfiguration,
        ),
        65001 => (
            "The API permissions have not been consented. An administrator must grant admin \
             consent for the app registration in the Entra admin center.",
            FixConfiguration,
        ),
        70011 => (
            "The requested scope is invalid for this app. Check the API permissions of the app \
             registration and the Graph URL setting.",
            FixConfiguration,
        ),
        700016 => (
            "The Client ID was not found in this tenant. Check the Client ID and the Tenant \
             settings (and that the app registration was not deleted).",
            FixConfiguration,
        ),
        7000215 => (
            "The client secret is invalid. Paste the secret's Value, not its Secret ID.",
            FixConfiguration,
        ),
        7000218 => (
            "The app registration does not allow public client flows. Enable \"Allow public \
             client flows\" under Authentication in the app registration, or configure a \
             client secret.",
            FixConfiguration,
        ),
        7000222 => (
            "The client secret has expired. Create a new secret in the app registration and \
             update the settings.",
            FixConfiguration,
        ),
        90002 => (
            "The tenant was not found. Check the Tenant setting (tenant id or verified domain).",
            FixConfiguration,
        ),
        70016 => (
            "Waiting for the user to complete the device-code sign-in.",
            KeepPolling,
        ),
        70018 => (
            "The device code is invalid. Start the device-code sign-in again.",
            SignInAgain,
        ),
        70019 => (
            "The device code expired before sign-in was completed. Start the device-code \
             sign-in again.",
            SignInAgain,
        ),
        70008 => (
            "The stored sign-in expired or was revoked (password reset, sessions revoked or long \
             inactivity). Sign in again with the device code.",
            SignInAgain,
        ),
        50196 => (
            "Entra ID detected a sign-in loop. The connector backs off; if it repeats, check \
             the account.",
            Retry,
        ),
        _ => return None,
    })
}

/// The advice for an OAuth `error` value when no AADSTS code is known.
pub fn advice_for_error(error: &str) -> (&'static str, Action) {
    use Action::*;
    match error {
        "authorization_pending" => advice(70016).unwrap_or(("", KeepPolling)),
        "slow_down" => ("Polling too fast; slowing down.", SlowDown),
        "authorization_declined" => (
            "The user declined the device-code sign-in. Start it again if that was a mistake.",
            SignInAgain,
        ),
        "expired_token" => advice(70019).unwrap_or(("", SignInAgain)),
        "bad_verification_code" => advice(70018).unwrap_or(("", SignInAgain)),
        "invalid_client" => (
            "The app registration rejected the client credentials. Check the Client ID and \
             client secret.",
            FixConfiguration,
        ),
        "interaction_required" => advice(50076).unwrap_or(("", SignInAgain)),
        "temporarily_unavailable" | "server_error" => (
            "Entra ID is temporarily unavailable; retrying later.",
            Retry,
        ),
        _ => ("Sign-in failed; see the error details.", FixConfiguration),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_code_has_advice() {
        for code in [
            50126, 50076, 50079, 53003, 50034, 50053, 50055, 50057, 65001, 70011, 700016, 7000215,
            7000218, 7000222, 90002, 70016, 70018, 70019, 70008,
        ] {
            let (msg, _) = advice(code).unwrap_or_else(|| panic!("no advice for {code}"));
            assert!(msg.len() > 20, "{code}");
        }
        assert_eq!(advice(1), None);
    }

    #[test]
    fn actions_fit_the_situation() {
        assert_eq!(advice(70016).unwrap().1, Action::KeepPolling);
        assert_eq!(advice(50076).unwrap().1, Action::SignInAgain);
        assert_eq!(advice(7000215).unwrap().1, Action::FixConfiguration);
        assert!(advice(7000215).unwrap().0.contains("Value"));
        assert_eq!(advice_for_error("slow_down").1, Action::SlowDown);
        assert_eq!(advice_for_error("server_error").1, Action::Retry);
    }
}
