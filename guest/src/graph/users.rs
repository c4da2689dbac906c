//! Entra ID users (graph.md §2): the paged `GET /users` with the properties the matching
//! options need, and which users are Teams-enabled.

use serde::Deserialize;
use serde_json::Value;

use super::api;
use crate::event::{HttpRequest, HttpResponse};

/// Service plan id of Teams (`TEAMS1`, service `TeamspaceAPI`), graph.md §2.3.
pub const TEAMS_PLAN: &str = "57ff2da0-773e-42df-b2af-ffb7a2317929";

/// Properties requested: every matching field of product.md F1, plus licensing and state.
pub const SELECT: &str = "id,displayName,mail,mailNickname,userPrincipalName,\
onPremisesSamAccountName,onPremisesUserPrincipalName,onPremisesDistinguishedName,\
assignedPlans,accountEnabled";

/// One Entra user, with the fields used for matching.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntraUser {
    /// Object id (the key of presence APIs).
    pub id: String,
    /// `displayName`.
    pub display_name: String,
    /// `mail`.
    pub mail: String,
    /// `mailNickname`.
    pub mail_nickname: String,
    /// `userPrincipalName`.
    pub user_principal_name: String,
    /// `onPremisesSamAccountName`.
    pub on_premises_sam_account_name: String,
    /// `onPremisesUserPrincipalName`.
    pub on_premises_user_principal_name: String,
    /// `onPremisesDistinguishedName`.
    pub on_premises_distinguished_name: String,
    /// Account enabled (absent counts as enabled).
    pub enabled: bool,
    /// Teams service plan assigned and enabled.
    pub teams: bool,
}

/// The first page of users (`$top=999`, the maximum).
pub fn list_request(graph_url: &str, token: &str) -> HttpRequest {
    api::request(
        "GET",
        format!("{}/users?$select={SELECT}&$top=999", api::root(graph_url)),
        token,
        None,
    )
}

/// The next page: `@odata.nextLink` is followed verbatim, never rebuilt (graph.md §2.5).
pub fn next_request(next_link: &str, token: &str) -> HttpRequest {
    api::request("GET", next_link.to_string(), token, None)
}

/// One page of users.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// The users on this page.
    pub users: Vec<EntraUser>,
    /// Link to the next page; `None` on the last one.
    pub next_link: Option<String>,
}

#[derive(Deserialize)]
struct RawPage {
    #[serde(default)]
    value: Vec<Value>,
    #[serde(default, rename = "@odata.nextLink")]
    next_link: Option<String>,
}

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

/// Reads one user object; one without an id is skipped.
pub fn user_from_json(v: &Value) -> Option<EntraUser> {
    let id = text(v, "id");
    if id.is_empty() {
        return None;
    }
    let teams = v
        .get("assignedPlans")
        .and_then(Value::as_array)
        .is_some_and(|plans| {
            plans.iter().any(|p| {
                p.get("servicePlanId")
                    .and_then(Value::as_str)
                    .is_some_and(|s| s.eq_ignore_ascii_case(TEAMS_PLAN))
                    && p.get("capabilityStatus").and_then(Value::as_str) == Some("Enabled")
            })
        });
    Some(EntraUser {
        id,
        display_name: text(v, "displayName"),
        mail: text(v, "mail"),
        mail_nickname: text(v, "mailNickname"),
        user_principal_name: text(v, "userPrincipalName"),
        on_premises_sam_account_name: text(v, "onPremisesSamAccountName"),
        on_premises_user_principal_name: text(v, "onPremisesUserPrincipalName"),
        on_premises_distinguished_name: text(v, "onPremisesDistinguishedName"),
        enabled: v
            .get("accountEnabled")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        teams,
    })
}

/// Parses a users page (or the error).
pub fn parse_page(resp: &HttpResponse) -> Result<Page, api::GraphError> {
    let resp = api::check(resp)?;
    let raw: RawPage = serde_json::from_slice(&resp.body).map_err(|e| api::GraphError {
        status: resp.status,
        code: "invalid_response".into(),
        message: e.to_string(),
        retry_after_ms: None,
    })?;
    Ok(Page {
        users: raw.value.iter().filter_map(user_from_json).collect(),
        next_link: raw.next_link.filter(|l| !l.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_parsed_with_teams_flag_and_next_link() {
        let body = r#"{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#users(id)",
 "@odata.nextLink": "https://graph.microsoft.com/v1.0/users?$select=id&$top=999&$skiptoken=RFNwdAIAAQAAAB",
 "value": [{"id": "fa8bf3dc-eca7-46b7-bad1-db199b62afc3", "displayName": "Adele Vance",
            "mail": "AdeleV@contoso.com", "userPrincipalName": "AdeleV@contoso.com",
            "assignedPlans": [{"assignedDateTime": "2024-03-01T10:00:00Z", "capabilityStatus": "Enabled",
                               "service": "TeamspaceAPI", "servicePlanId": "57ff2da0-773e-42df-b2af-ffb7a2317929"}]},
           {"id": "66825e03", "displayName": "No Teams", "mail": null, "accountEnabled": false,
            "assignedPlans": [{"capabilityStatus": "Deleted", "servicePlanId": "57ff2da0-773e-42df-b2af-ffb7a2317929"}]},
           {"displayName": "no id"}]}"#;
        let page = parse_page(&HttpResponse::text(200, body)).unwrap();
        assert_eq!(page.users.len(), 2);
        assert!(page.users[0].teams && page.users[0].enabled);
        assert_eq!(page.users[0].mail, "AdeleV@contoso.com");
        assert!(!page.users[1].teams && !page.users[1].enabled);
        assert_eq!(page.users[1].mail, "");
        let next = page.next_link.unwrap();
        assert!(next.ends_with("$skiptoken=RFNwdAIAAQAAAB"));
        assert_eq!(next_request(&next, "t").url, next);
        let last = parse_page(&HttpResponse::text(200, r#"{"value":[]}"#)).unwrap();
        assert_eq!(last.next_link, None);
    }

    #[test]
    fn first_request_selects_matching_fields() {
        let r = list_request("https://graph.microsoft.us", "t");
        assert!(
            r.url
                .starts_with("https://graph.microsoft.us/v1.0/users?$select=id,displayName,")
        );
        assert!(
            r.url
                .contains("onPremisesDistinguishedName,assignedPlans,accountEnabled&$top=999")
        );
        assert_eq!(r.method, "GET");
    }

    #[test]
    fn errors_and_garbage_are_errors() {
        let e = parse_page(&HttpResponse::text(
            403,
            r#"{"error":{"code":"Authorization_RequestDenied","message":"Insufficient privileges to complete the operation."}}"#,
        ))
        .unwrap_err();
        assert_eq!(e.code, "Authorization_RequestDenied");
        assert_eq!(
            parse_page(&HttpResponse::text(200, "[")).unwrap_err().code,
            "invalid_response"
        );
    }
}
