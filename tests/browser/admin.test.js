// The admin page in headless Chromium against a running stack (started by
// tests/e2e/tests/admin.rs, which passes everything through the environment).
// Each step asserts what an administrator would notice on the page; waits are generous and
// nothing asserts speed. Screenshots of the main screens go to $SCREENSHOTS.
"use strict";
const { chromium } = require("playwright-core");
const fs = require("fs");
const path = require("path");

const need = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`environment variable ${name} is missing`);
  return v;
};
const cfg = {
  url: need("ADMIN_URL"),
  password: need("ADMIN_PASSWORD"),
  clientId: need("CLIENT_ID"),
  accountUser: need("ACCOUNT_USER"),
  accountPassword: need("ACCOUNT_PASSWORD"),
  m365Control: need("M365_CONTROL"),
  personEmail: need("PERSON_EMAIL"),
  personName: need("PERSON_NAME"),
  deviceUser: need("DEVICE_USER"),
  unmatchedName: need("UNMATCHED_NAME"),
  clientSecret: need("CLIENT_SECRET"),
  screenshots: need("SCREENSHOTS"),
  chromium: process.env.CHROMIUM || "/usr/bin/chromium",
};
const WAIT_MS = 90_000;

function step(text) { console.log(`[admin.test] ${text}`); }

async function shot(page, name) {
  fs.mkdirSync(cfg.screenshots, { recursive: true });
  await page.screenshot({ path: path.join(cfg.screenshots, `admin-${name}.png`), fullPage: true });
}

async function lightColor(page, name) {
  return page.evaluate((n) => {
    const l = [...document.querySelectorAll(".light")].find((x) => x.dataset.name === n);
    return l ? `${l.dataset.color}: ${l.querySelector(".reason").textContent}` : "missing";
  }, name);
}

async function waitForGreen(page, names) {
  const deadline = Date.now() + WAIT_MS;
  let last = {};
  while (Date.now() < deadline) {
    last = {};
    for (const n of names) last[n] = await lightColor(page, n);
    if (Object.values(last).every((v) => v.startsWith("green"))) return;
    await page.waitForTimeout(500);
  }
  throw new Error(`lights not green: ${JSON.stringify(last, null, 1)}`);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: cfg.chromium,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  // The page's CSP forbids eval, which Playwright's waitForFunction needs; the test's own
  // scripts are exempted, the page's are not.
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, bypassCSP: true });
  const page = await context.newPage();
  const bodies = [];
  page.on("response", async (r) => {
    try { bodies.push({ url: r.url(), text: await r.text(), headers: JSON.stringify(r.headers()) }); } catch (_) { /* redirects */ }
  });
  // Every request the page sends: the password must never be among them.
  const sent = [];
  page.on("request", (r) => sent.push(`${r.url()} ${r.postData() || ""}`));

  step("login page");
  await page.goto(cfg.url);
  await page.waitForSelector("#login-form");
  await shot(page, "1-login");

  step("a wrong password is rejected");
  await page.fill("#password", "not-the-password");
  await page.click("#login-form button[type=submit]");
  await page.waitForFunction(() => document.querySelector("#login-error").textContent.includes("Wrong password"), null, { timeout: WAIT_MS });
  if (!(await page.isHidden("#tabs"))) throw new Error("the tabs show after a wrong password");
  await shot(page, "2-login-refused");

  step("the right password logs in");
  await page.fill("#password", cfg.password);
  await page.click("#login-form button[type=submit]");
  await page.waitForSelector("#status:not([hidden]) .light", { timeout: WAIT_MS });
  await waitForGreen(page, ["Master PBX master"]);
  await shot(page, "3-status-before");

  step("configuration: a bad client id is refused with a clear message, then a good one saved");
  await page.click("#tabs button[data-tab=settings]");
  const clientId = 'input[name="presence.client-id"]';
  await page.waitForSelector(clientId);
  await page.fill(clientId, "not-a-guid");
  await page.click("#save-settings");
  await page.waitForFunction(() => {
    const f = document.querySelector('.field[data-field="presence.client-id"] .err');
    return f && f.textContent.includes("GUID");
  }, null, { timeout: WAIT_MS });
  await shot(page, "4-config-invalid");
  await page.fill(clientId, cfg.clientId);
  // A secret typed here is stored sealed and never shown again: only "set".
  await page.fill('input[name="calendar.client-secret"]', cfg.clientSecret);
  await page.click("#save-settings");
  await page.waitForFunction(() => document.querySelector("#settings-message").textContent.startsWith("Saved"), null, { timeout: WAIT_MS });
  // The form is drawn again from the server: the secret shows as set, its field stays empty.
  const secretField = 'input[name="calendar.client-secret"]';
  await page.waitForFunction((sel) => {
    const f = document.querySelector(sel);
    return f && f.placeholder.startsWith("••") && f.value === "";
  }, secretField, { timeout: WAIT_MS });
  if ((await page.inputValue(clientId)) !== cfg.clientId) throw new Error("saved client id not shown after reload");
  await shot(page, "5-config-saved");

  step("Teams account added with a password");
  await page.click("#tabs button[data-tab=accounts]");
  await page.fill("#account-form input[name=name]", "teams1");
  await page.fill("#account-form input[name=username]", cfg.accountUser);
  await page.fill("#account-form input[name=password]", cfg.accountPassword);
  await page.click("#account-form button[type=submit]");
  await page.waitForSelector('tr[data-account="teams1"]', { timeout: WAIT_MS });
  const row = await page.textContent('tr[data-account="teams1"]');
  if (!row.includes(cfg.accountUser) || !row.includes("set")) throw new Error(`account row: ${row}`);
  await shot(page, "6-accounts");

  step("the lights go green");
  await page.click("#tabs button[data-tab=status]");
  await waitForGreen(page, ["Master PBX master", "Slave PBX slave", "Teams account teams1",
    "App registration F1 (Teams → PBX)", "Presence subscription teams1", "Matching"]);
  await shot(page, "7-status-green");

  step("matching preview, search and CSV");
  await page.click("#tabs button[data-tab=matching]");
  await page.waitForFunction((n) => [...document.querySelectorAll("#match-rows tr")].some((r) => r.textContent.includes(n) && r.textContent.includes("matched")), cfg.personName, { timeout: WAIT_MS });
  await page.waitForFunction((n) => [...document.querySelectorAll("#match-rows tr")].some((r) => r.textContent.includes(n) && r.textContent.includes("No Entra user has this name")), cfg.unmatchedName, { timeout: WAIT_MS });
  await shot(page, "8-matching");
  await page.fill("#match-search", cfg.personName);
  await page.waitForFunction(() => document.querySelectorAll("#match-rows tr").length === 1, null, { timeout: WAIT_MS });
  const csv = await page.evaluate(async () => (await fetch(document.querySelector("#match-csv").href)).text());
  if (!csv.startsWith("name,h323,") || !csv.includes(cfg.personName)) throw new Error(`CSV export: ${csv.slice(0, 300)}`);

  step("a Teams presence change appears in the live log and audit trail");
  await page.click("#tabs button[data-tab=log]");
  const r = await fetch(`${cfg.m365Control}/control/presence/teams`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ user: cfg.personEmail, availability: "Busy", activity: "InAMeeting" }),
  });
  if (!r.ok) throw new Error(`fake M365 presence change: ${r.status}`);
  await page.waitForFunction((n) => [...document.querySelectorAll("#audit-rows tr")].some((r) => r.textContent.includes(n) && r.textContent.includes("meeting")), cfg.personName, { timeout: WAIT_MS });
  await shot(page, "9-log");

  step("trace switch changed at run time");
  await page.click("#tabs button[data-tab=trace]");
  await page.waitForSelector('input[data-target="config"]');
  await page.check('input[data-target="config"]');
  await page.waitForFunction(() => document.querySelector('input[data-target="config"]').checked, null, { timeout: WAIT_MS });
  await page.reload();
  await page.click("#tabs button[data-tab=trace]");
  await page.waitForSelector('input[data-target="config"]');
  if (!(await page.isChecked('input[data-target="config"]'))) throw new Error("trace switch not kept");
  await shot(page, "10-trace");

  step("a device-code account shows its user code on the page and signs in once approved");
  await page.click("#tabs button[data-tab=accounts]");
  await page.fill("#account-form input[name=name]", "teams2");
  await page.selectOption("#account-form select[name=sign_in]", "device-code");
  await page.fill("#account-form input[name=username]", cfg.deviceUser);
  await page.click("#account-form button[type=submit]");
  await page.waitForSelector("#account-device .device-code code", { timeout: WAIT_MS });
  const userCode = (await page.textContent("#account-device .device-code code")).trim();
  await shot(page, "11-device-code");
  const approve = await fetch(`${cfg.m365Control}/control/device/approve`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ userCode, user: cfg.deviceUser }),
  });
  if (!approve.ok) throw new Error(`approving ${userCode}: ${approve.status}`);
  await page.waitForSelector('tr[data-account="teams2"] .dot.green', { timeout: WAIT_MS });
  if (await page.isVisible("#account-device .device-code")) throw new Error("the user code still shows after sign-in");

  step("provisioning shows the two App objects and creates microsoft365-api");
  await page.click("#tabs button[data-tab=provisioning]");
  await page.waitForFunction(() => document.querySelectorAll("#app-objects .object").length === 2, null, { timeout: WAIT_MS });
  const objects = await page.textContent("#app-objects");
  if (!objects.includes("microsoft365-api")) throw new Error(`App objects: ${objects}`);
  await page.click("#provision");
  await page.waitForFunction(() => /done/.test(document.querySelector("#provision-state").textContent), null, { timeout: WAIT_MS });
  await shot(page, "12-provisioning");

  step("secrets are absent from every response and no request carries the password");
  for (const secret of [cfg.password, cfg.accountPassword, cfg.clientSecret]) {
    const leak = bodies.find((b) => b.text.includes(secret) || b.headers.includes(secret));
    if (leak) throw new Error(`a secret appears in the response of ${leak.url}`);
  }
  // Account passwords and client secrets must reach the connector once; the instance password
  // never leaves the browser (only a digest of it does).
  if (sent.some((s) => s.includes(cfg.password))) throw new Error("the instance password was sent in a request");
  if (!bodies.some((b) => b.url.endsWith("/api/settings"))) throw new Error("no settings response was checked");

  step("the status page on a phone-sized screen");
  await page.setViewportSize({ width: 390, height: 844 });
  await page.click("#tabs button[data-tab=status]");
  await page.waitForSelector("#status:not([hidden]) .light");
  await shot(page, "13-status-phone");
  await page.setViewportSize({ width: 1280, height: 860 });

  step("a change without the CSRF token is refused, even with the session cookie");
  const forged = await page.evaluate(async () => (await fetch("api/settings", {
    method: "PUT", headers: { "content-type": "application/json" },
    body: JSON.stringify({ values: { "matching.strip-domain": "false" } }),
  })).status);
  if (forged !== 401) throw new Error(`a change without the CSRF token got ${forged}`);

  step("logout ends the session");
  await page.click("#logout");
  await page.waitForSelector("#login:not([hidden])");
  const after = await page.evaluate(async () => (await fetch("api/overview")).status);
  if (after !== 401) throw new Error(`API answered ${after} after logout`);
  await browser.close();
  step(`ok (${bodies.length} responses checked)`);
}

main().catch((e) => {
  console.error(`[admin.test] FAILED: ${e.stack || e}`);
  process.exit(1);
});
