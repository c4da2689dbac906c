// The admin page: login with a digest of the instance password (never sent in clear), then
// the JSON API under api/. Every change carries the CSRF token from the login.
"use strict";

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
};
let csrf = sessionStorage.getItem("m365-csrf") || "";
let timer = null;
let logAfter = 0;

async function api(method, path, body) {
  const headers = { "accept": "application/json" };
  if (method !== "GET") headers["x-csrf-token"] = csrf;
  if (body !== undefined) headers["content-type"] = "application/json";
  const r = await fetch("api/" + path, { method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body) });
  let data = {};
  try { data = await r.json(); } catch (_) { /* not JSON */ }
  if (r.status === 401 && path !== "login") { showLogin("Your session ended; please log in again."); }
  return { status: r.status, data };
}

// ---- login ---------------------------------------------------------------------------------
function showLogin(message) {
  stopTimer();
  csrf = ""; sessionStorage.removeItem("m365-csrf");
  document.querySelectorAll(".tab").forEach((t) => (t.hidden = true));
  $("#tabs").hidden = true; $("#logout").hidden = true; $("#login").hidden = false;
  $("#login-error").textContent = message || "";
}

async function login(ev) {
  ev.preventDefault();
  const password = $("#password").value;
  $("#login-error").textContent = "";
  const ch = await api("POST", "challenge");
  // innovaphone's AppLogin digest without `info`: app:domain:sip:guid:dn:challenge:password.
  const digest = sha256Hex([ch.data.app, ch.data.domain, "", "", "", ch.data.challenge, password].join(":"));
  const r = await api("POST", "login", { challenge: ch.data.challenge, digest });
  if (r.status !== 200) { $("#login-error").textContent = r.data.error || "Login failed."; return; }
  $("#password").value = "";
  csrf = r.data.csrf; sessionStorage.setItem("m365-csrf", csrf);
  showApp();
}

function showApp() {
  $("#login").hidden = true; $("#tabs").hidden = false; $("#logout").hidden = false;
  showTab(location.hash.slice(1) || "status");
}

// ---- tabs ----------------------------------------------------------------------------------
const loaders = { status: loadStatus, settings: loadSettings, accounts: loadAccounts,
  matching: loadMatching, log: loadLog, trace: loadTrace, provisioning: loadProvisioning };
const refresh = { status: 3000, log: 2000, accounts: 3000, provisioning: 3000 };

function stopTimer() { if (timer) clearInterval(timer); timer = null; }

function showTab(name) {
  if (!loaders[name]) name = "status";
  stopTimer();
  document.querySelectorAll(".tab").forEach((t) => (t.hidden = t.id !== name));
  document.querySelectorAll("#tabs button").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
  history.replaceState(null, "", "#" + name);
  loaders[name]();
  if (refresh[name]) timer = setInterval(loaders[name], refresh[name]);
}

// ---- status --------------------------------------------------------------------------------
async function loadStatus() {
  const r = await api("GET", "overview");
  if (r.status !== 200) return;
  const d = r.data;
  const last = d.last_notification_s_ago == null ? "no notification received yet"
    : `last notification ${ago(d.last_notification_s_ago)}`;
  $("#status-meta").textContent = `${d.version} · up ${duration(d.uptime_s)} · ${last}`;
  const box = $("#lights"); box.replaceChildren();
  for (const l of d.lights) {
    box.append(el("div", { class: "light", "data-name": l.name, "data-color": l.color },
      el("span", { class: "dot " + l.color, title: l.color }),
      el("div", {}, el("div", { class: "group", text: l.group }), el("div", { class: "name", text: l.name }),
        el("div", { class: "reason", text: l.reason }))));
  }
  renderDeviceSignIns(d.device_sign_ins, $("#device-sign-ins"));
}

function renderDeviceSignIns(list, box) {
  box.replaceChildren();
  for (const w of list || []) {
    const link = el("a", { href: w.verification_uri, target: "_blank", rel: "noopener", text: w.verification_uri });
    box.append(el("div", { class: "notice device-code" },
      `Account ${w.account} waits for its sign-in: open `, link, " and enter the code ",
      el("code", { text: w.user_code }), "."));
  }
}

// ---- settings ------------------------------------------------------------------------------
let notificationPath = "";
async function loadSettings() {
  const r = await api("GET", "settings");
  if (r.status !== 200) return;
  notificationPath = r.data.notification_path;
  const form = $("#settings-form"); form.replaceChildren();
  const groups = new Map();
  for (const f of r.data.fields) {
    if (!groups.has(f.group)) {
      const fs = el("fieldset", {}, el("legend", { text: f.group }), el("div", { class: "fields" }));
      groups.set(f.group, fs.querySelector(".fields")); form.append(fs);
    }
    groups.get(f.group).append(fieldControl(f));
  }
}

function fieldControl(f) {
  let input;
  if (f.kind === "bool" || f.kind === "choice") {
    input = el("select", { name: f.name });
    const options = f.kind === "bool" ? ["", "true", "false"] : ["", ...f.options];
    for (const o of options) input.append(el("option", { value: o, text: o === "" ? "(default)" : o }));
    input.value = f.value || "";
  } else if (f.kind === "secret") {
    input = el("input", { name: f.name, type: "password", autocomplete: "new-password",
      placeholder: f.set ? "•••••• set – type to replace" : "not set" });
  } else {
    input = el("input", { name: f.name, type: "text", value: f.value || "", spellcheck: "false" });
  }
  input.dataset.original = f.kind === "secret" ? "" : (f.value || "");
  const label = el("label", { class: "field", "data-field": f.name }, el("span", { text: f.label }));
  if (f.source === "saved") {
    label.firstChild.append(el("span", { class: "source", text: f.overrides_host ? "saved here, overrides apphost.toml" : "saved here" }));
    // Forget the saved value: the host's apphost.toml (or the default) applies again.
    const reset = el("button", { type: "button", class: "reset", title: "Forget the value saved here", text: "reset" });
    reset.addEventListener("click", async () => {
      const r = await api("PUT", "settings", { values: { [f.name]: null } });
      const msg = $("#settings-message");
      msg.className = "message " + (r.status === 200 ? "ok" : "bad");
      msg.textContent = r.status === 200 ? `${f.label} (${f.group}) is back to the host's value.` : (r.data.error || "Not reset.");
      loadSettings();
    });
    label.firstChild.append(reset);
  }
  if (f.source === "host") label.firstChild.append(el("span", { class: "source", text: "from apphost.toml" }));
  label.append(input, el("small", { text: f.help }));
  if (f.kind === "url") {
    const show = el("small", { class: "resulting" });
    const update = () => (show.textContent = input.value ? `Notifications: ${input.value.replace(/\/$/, "")}${notificationPath}` : "");
    input.addEventListener("input", update); update(); label.append(show);
  }
  label.append(el("span", { class: "err" }));
  return label;
}

async function saveSettings() {
  const values = {};
  for (const input of $("#settings-form").querySelectorAll("input, select")) {
    if (input.value !== input.dataset.original) values[input.name] = input.value;
  }
  const msg = $("#settings-message");
  document.querySelectorAll(".field").forEach((f) => { f.classList.remove("invalid"); f.querySelector(".err").textContent = ""; });
  if (Object.keys(values).length === 0) { msg.className = "message"; msg.textContent = "Nothing changed."; return; }
  const r = await api("PUT", "settings", { values });
  if (r.status === 200) {
    msg.className = "message ok"; msg.textContent = `Saved and applied: ${r.data.saved.join(", ")}.`;
    loadSettings();
  } else {
    msg.className = "message bad"; msg.textContent = r.data.error || "Not saved.";
    for (const [name, text] of Object.entries(r.data.errors || {})) {
      const f = document.querySelector(`.field[data-field="${CSS.escape(name)}"]`);
      if (f) { f.classList.add("invalid"); f.querySelector(".err").textContent = text; }
    }
  }
}

// ---- accounts ------------------------------------------------------------------------------
async function loadAccounts() {
  const [r, o] = await Promise.all([api("GET", "accounts"), api("GET", "overview")]);
  if (r.status !== 200) return;
  const state = new Map((o.data.lights || []).filter((l) => l.name.startsWith("Teams account "))
    .map((l) => [l.name.slice("Teams account ".length), l]));
  const rows = $("#account-rows"); rows.replaceChildren();
  for (const a of r.data.accounts) {
    const s = state.get(a.name);
    const remove = el("button", { class: "danger", text: "Remove" });
    remove.addEventListener("click", async () => {
      if (!confirm(`Remove the Teams account ${a.name}?`)) return;
      await api("DELETE", "accounts/" + encodeURIComponent(a.name)); loadAccounts();
    });
    rows.append(el("tr", { "data-account": a.name },
      el("td", {}, s ? el("span", { class: "dot " + s.color, title: s.reason, style: "display:inline-block;margin-right:.4rem" }) : "", a.name),
      el("td", { text: a.username || "" }), el("td", { text: a.sign_in === "device-code" ? "Device code" : "Password" }),
      el("td", { text: a.password }), el("td", {}, remove)));
    if (s) rows.append(el("tr", {}, el("td", { colspan: "5", class: "muted", text: s.reason })));
  }
  renderDeviceSignIns(o.data.device_sign_ins, $("#account-device"));
}

async function addAccount(ev) {
  ev.preventDefault();
  const f = ev.target;
  const device = f.sign_in.value === "device-code";
  const body = { name: f.name.value, username: f.username.value };
  if (device) body["device-code"] = true; else body.password = f.password.value;
  const r = await api("POST", "accounts", body);
  const msg = $("#account-message");
  if (r.status === 200) { msg.className = "message ok"; msg.textContent = `Account ${body.name} added; it signs in now.`; f.reset(); f.password.disabled = false; }
  else { msg.className = "message bad"; msg.textContent = r.data.error || "Not added."; }
  loadAccounts();
}

// ---- matching ------------------------------------------------------------------------------
async function loadMatching() {
  const q = $("#match-search").value;
  $("#match-csv").href = "api/matching?format=csv&q=" + encodeURIComponent(q);
  const r = await api("GET", "matching?q=" + encodeURIComponent(q));
  if (r.status !== 200) return;
  const rows = $("#match-rows"); rows.replaceChildren();
  let matched = 0;
  for (const m of r.data.rows) {
    const ok = m.status === "matched"; if (ok) matched++;
    const who = el("td", {}, m.name || m.pbx_user);
    if (m.h323) who.append(el("div", { class: "muted small", text: m.h323 }));
    const entra = ok ? el("td", {}, m.entra_id, el("div", { class: "muted small", text: `matched on “${m.pbx_user}”` }))
      : el("td", { text: m.reason });
    rows.append(el("tr", {}, who, el("td", { text: m.pbx }),
      el("td", {}, el("span", { class: "tag " + (ok ? "matched" : "problem"), text: ok ? "matched" : m.status })), entra));
  }
  $("#match-summary").textContent = `${r.data.rows.length} users shown, ${matched} matched, ${r.data.rows.length - matched} not synced.`;
}

// ---- log -----------------------------------------------------------------------------------
async function loadLog() {
  const q = $("#audit-search").value;
  const r = await api("GET", `log?after=${logAfter}&q=${encodeURIComponent(q)}`);
  if (r.status !== 200) return;
  const list = $("#log-lines");
  // Follow new lines unless the administrator scrolled up to read.
  const atBottom = logAfter === 0 || list.scrollTop + list.clientHeight >= list.scrollHeight - 40;
  for (const l of r.data.lines) {
    logAfter = Math.max(logAfter, l.seq);
    list.append(el("li", { class: l.level, text: `${time(l.at_ms)} ${l.level.toUpperCase().padEnd(5)} ${l.target}: ${l.message}` }));
  }
  while (list.children.length > 1000) list.firstChild.remove();
  if (atBottom) list.scrollTop = list.scrollHeight;
  const rows = $("#audit-rows"); rows.replaceChildren();
  for (const a of r.data.audit) {
    rows.append(el("tr", {}, el("td", { text: time(a.at_ms) }), el("td", { text: a.direction }), el("td", { text: a.user }),
      el("td", { text: a.what }), el("td", { text: a.why }), el("td", { text: a.result })));
  }
}

// ---- trace ---------------------------------------------------------------------------------
async function loadTrace(data) {
  const r = data || (await api("GET", "trace"));
  if (r.status !== 200) return;
  const box = $("#switches"); box.replaceChildren();
  for (const s of r.data.switches) {
    const input = el("input", { type: "checkbox", "data-target": s.target });
    input.checked = s.on;
    if (s.host_only) {
      // The guest cannot switch the host's own tracing; say where it is done.
      input.disabled = true;
      box.append(el("label", { class: "switch host", title: "Set on the host: control listener PUT /log" },
        el("span", {}, s.label, el("small", { class: "muted", text: " (host: PUT /log on the control listener)" })), input));
      continue;
    }
    input.addEventListener("change", async () => loadTrace(await api("PUT", "trace", { target: s.target, on: input.checked })));
    box.append(el("label", { class: "switch" }, el("span", { text: s.label }), input));
  }
}

// ---- provisioning --------------------------------------------------------------------------
async function loadProvisioning() {
  const r = await api("GET", "provisioning");
  if (r.status !== 200) return;
  const d = r.data;
  const box = $("#app-objects"); box.replaceChildren();
  for (const o of d.objects || []) {
    const flags = Object.entries(o.flags || {}).filter(([, on]) => on).map(([k]) => k).join(", ");
    const rows = [["Name", o.name], ["SIP", o.sip], ["URL", o.url], ["Password", o.password],
      ["Checkmarks", flags || "none"], ["By hand", o.by_hand || ""]];
    const table = el("table", { class: "grid" }, el("tbody", {}, ...rows.map(([k, v]) =>
      el("tr", {}, el("th", { text: k }), el("td", {}, k === "By hand" ? v : el("code", { text: v }))))));
    box.append(el("div", { class: "card object" }, el("h2", { text: o.role }), table));
  }
  $("#provision").disabled = !d.can_apply;
  $("#provision").title = d.why_not || "";
  const last = d.last;
  const msg = $("#provision-state");
  msg.className = "message" + (last && last.state === "done" ? " ok" : last && last.state === "failed" ? " bad" : "");
  msg.textContent = last ? `Last run: ${last.state}${last.action ? " (" + last.action + ")" : ""} – ${last.detail}`
    : (d.why_not ? `The button needs: ${d.why_not}` : "");
}

async function provision() {
  const r = await api("POST", "provisioning", {});
  if (r.status >= 400) { $("#provision-state").className = "message bad"; $("#provision-state").textContent = r.data.error; }
  loadProvisioning();
}

// ---- helpers -------------------------------------------------------------------------------
function time(ms) { return new Date(ms).toLocaleTimeString(); }
function ago(s) { return s < 60 ? `${s} s ago` : s < 3600 ? `${Math.floor(s / 60)} min ago` : `${Math.floor(s / 3600)} h ago`; }
function duration(s) { return s < 120 ? `${s} s` : s < 7200 ? `${Math.floor(s / 60)} min` : `${Math.floor(s / 3600)} h`; }

document.addEventListener("DOMContentLoaded", async () => {
  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", async () => { await api("POST", "logout", {}); showLogin("Logged out."); });
  document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));
  $("#save-settings").addEventListener("click", saveSettings);
  $("#provision").addEventListener("click", provision);
  $("#account-form").addEventListener("submit", addAccount);
  $("#account-form").sign_in.addEventListener("change", (e) =>
    document.querySelectorAll("#account-form .pw input[type=password]").forEach((i) => (i.disabled = e.target.value === "device-code")));
  let searchTimer = null;
  $("#match-search").addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(loadMatching, 250); });
  $("#audit-search").addEventListener("input", () => loadLog());
  if (csrf && (await fetch("api/overview", { credentials: "same-origin" })).status === 200) showApp();
  else showLogin();
});
