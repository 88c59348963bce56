"use strict";
// Shared by the console's views: credentials, the API helper, text-only rendering, routing.
// Signed in with the IdP, calls carry the HttpOnly session cookie and, on changes, the
// session's CSRF token; a pasted token (kept in this tab's sessionStorage only) is sent as
// a bearer header instead. Data is only ever rendered with textContent, never as HTML.
const $ = (id) => document.getElementById(id);
const Airlock = { csrf: null, me: null, views: {}, timers: [] };

Airlock.token = () => $("token").value.trim();

Airlock.api = async function (path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  const token = Airlock.token();
  if (token) headers["authorization"] = "Bearer " + token;
  else if (Airlock.csrf && options.method && options.method !== "GET") headers["x-airlock-csrf"] = Airlock.csrf;
  const resp = await fetch(path, Object.assign({}, options, { headers, credentials: "same-origin" }));
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const msg = body.error ? body.error.message + " (" + body.error.code + ")" : "HTTP " + resp.status;
    throw new Error(msg);
  }
  return body;
};

/// An element with text content (never HTML) and an optional class.
Airlock.el = function (tag, text, className) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (className) e.className = className;
  return e;
};

Airlock.ready = () => Boolean(Airlock.me || Airlock.token());

Airlock.countdown = function (untilMs) {
  const s = Math.round((untilMs - Date.now()) / 1000);
  if (s <= 0) return "deadline passed";
  const m = Math.floor(s / 60);
  return (m ? m + "m " : "") + (s % 60) + "s left";
};

async function whoAmI() {
  try {
    const resp = await fetch("/auth/me", { credentials: "same-origin" });
    if (resp.status === 404) return; // sign-in not configured: tokens only
    $("signin").hidden = false;
    if (!resp.ok) return;
    const me = await resp.json();
    Airlock.me = me;
    Airlock.csrf = me.csrf;
    $("who-name").textContent = me.name + (me.groups.length ? " (" + me.groups.join(", ") + ")" : "");
    $("signed-in").hidden = false;
    $("signed-out").hidden = true;
  } catch (e) {
    $("who").textContent = "Could not ask who is signed in: " + e.message;
  }
}

async function logout() {
  try {
    await Airlock.api("/auth/logout", { method: "POST" });
  } finally {
    Airlock.me = null;
    Airlock.csrf = null;
    location.hash = "";
    location.reload();
  }
}

function route() {
  const hash = location.hash || "#/approvals";
  const [, view, id] = hash.match(/^#\/([a-z]+)(?:\/([A-Za-z0-9_.:-]+))?$/) || [null, "approvals", null];
  for (const name of ["approvals", "sessions", "integrity"]) {
    $("view-" + name).hidden = name !== view;
    $("nav-" + name).classList.toggle("active", name === view);
  }
  const v = Airlock.views[view];
  if (v && Airlock.ready()) v.open(id ? decodeURIComponent(id) : null);
}

Airlock.route = route;

document.addEventListener("DOMContentLoaded", async () => {
  $("token").value = sessionStorage.getItem("airlock-token") || "";
  $("token").addEventListener("change", () => sessionStorage.setItem("airlock-token", Airlock.token()));
  $("load").addEventListener("click", () => { sessionStorage.setItem("airlock-token", Airlock.token()); route(); });
  $("logout").addEventListener("click", logout);
  window.addEventListener("hashchange", route);
  await whoAmI();
  route();
});
