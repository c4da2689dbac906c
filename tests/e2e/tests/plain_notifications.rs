//! Plain presence notifications (`presence.notifications = "plain"`): every Teams change that
//! Graph notifies becomes exactly one `SetPresence` at the PBX, once the connector's own
//! start-up reads are over (the sequence the Teams -> PBX bench runs, issue 10).
//! Real processes on loopback; every wait has a generous deadline and nothing asserts speed.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::Stack;
use e2e::people::{Person, one_account, people, synced_stack};
use e2e::stack::{presence_subscriptions, teams_activity};
use serde_json::{Value, json};

/// `SetPresence` frames the fake PBX received since its log was last cleared.
fn set_presence_frames(stack: &Stack) -> Result<Vec<Value>> {
    let log = stack.pbx().call("GET", "/log", None)?;
    Ok(log
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|e| e["dir"] == "in")
        .filter_map(|e| serde_json::from_str::<Value>(e["text"].as_str()?).ok())
        .filter(|f| f["mt"] == "SetPresence")
        .collect())
}

/// A plain notification collection for `ids`, as Graph posts it for `sub`.
fn plain_collection(sub: &Value, tenant: &str, ids: &[String]) -> Value {
    let items: Vec<Value> = ids
        .iter()
        .map(|uid| {
            json!({"subscriptionId": sub["id"], "subscriptionExpirationDateTime": format!("{}", sub["expirationMs"]),
                "clientState": sub["clientState"], "changeType": "updated",
                "resource": format!("communications/presences/{uid}"),
                "tenantId": tenant, "organizationId": tenant,
                "resourceData": {"@odata.type": "#microsoft.graph.presence",
                    "@odata.id": format!("users/{uid}/presence"), "id": uid}})
        })
        .collect();
    json!({ "value": items })
}

/// Entra ids of `persons`, in order.
fn entra_ids(stack: &Stack, persons: &[Person]) -> Result<Vec<String>> {
    let users = stack.m365().users()?;
    persons
        .iter()
        .map(|p| {
            users
                .iter()
                .find(|u| u["mail"].as_str() == Some(p.email.as_str()))
                .and_then(|u| u["id"].as_str().map(str::to_string))
                .with_context(|| format!("{} not in the fake tenant", p.email))
        })
        .collect()
}

/// The bench's sequence, with Teams changes spread over the connector's start-up
/// reconciliation (a settle time after the subscription exists): once the connector says no
/// read is due, every change posted afterwards costs exactly one frame and ends right.
#[test]
fn every_plain_notification_becomes_one_set_presence_after_the_start_up_reads() -> Result<()> {
    let persons = people(30, 71);
    let mut o = synced_stack(&persons, one_account());
    o.settings
        .push(("presence.notifications".into(), "\"plain\"".into()));
    Stack::run(o, |stack| {
        stack.wait_for_pbx_logins()?;
        let sub = stack.wait_until("a presence subscription of every user", |s| {
            Ok(presence_subscriptions(s)?
                .into_iter()
                .find(|x| x["includeResourceData"] == false))
        })?;
        let sub_id = sub["id"].as_str().context("subscription id")?.to_string();
        // Only the notifications posted below arrive (as in the bench).
        stack.m365().subscription_outage(&sub_id, true)?;
        // Without this wait the reconciliation that follows the subscription's creation may
        // read (and write to the PBX) the changes made below before their notifications: the
        // bench then waited for frames that had come and gone.
        stack.wait_for_presence_reads()?;
        let ids = entra_ids(stack, &persons)?;
        // Changes spread over more than the 2 s settle time.
        for p in &persons {
            stack
                .m365()
                .set_teams_presence(&p.email, "DoNotDisturb", "DoNotDisturb")?;
            std::thread::sleep(Duration::from_millis(100));
        }
        stack.pbx().call("DELETE", "/log", None)?;
        let url = sub["notificationUrl"]
            .as_str()
            .context("notification URL")?;
        let tenant = stack.m365().tenant_id.clone();
        for chunk in ids.chunks(7) {
            let body = plain_collection(&sub, &tenant, chunk);
            let reply = e2e::http::request("POST", url, Some(&body))?;
            ensure!(
                reply.status == 202,
                "notification answered {}",
                reply.status
            );
        }
        let frames = stack.wait_until("a SetPresence frame per change", |s| {
            let f = set_presence_frames(s)?;
            Ok((f.len() >= persons.len()).then_some(f))
        })?;
        // A duplicate would follow right behind.
        std::thread::sleep(Duration::from_millis(500));
        let frames_now = set_presence_frames(stack)?;
        ensure!(
            frames.len() == persons.len() && frames_now.len() == persons.len(),
            "{} changes, {} SetPresence frames: {frames_now:?}",
            persons.len(),
            frames_now.len()
        );
        for p in &persons {
            let shown = teams_activity(stack, &p.guid)?;
            ensure!(shown == "dnd", "{} shows {shown:?}", p.email);
        }
        Ok(())
    })
}
