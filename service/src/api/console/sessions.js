"use strict";
// Sessions: search by subject, time range, decision, rule and path (the search API,
// `GET /v1/sessions`, the same one `airlock sessions search` uses); a session's timeline
// request by request, bodies as masked.
(function () {
  const LIMIT = 50;

  function instant(id) {
    const v = $(id).value;
    return v ? new Date(v) : null;
  }

  async function search(ev) {
    if (ev) ev.preventDefault();
    const q = new URLSearchParams({ limit: String(LIMIT) });
    const subject = $("s-subject").value.trim();
    const decision = $("s-decision").value.trim();
    const rule = $("s-rule").value.trim();
    const path = $("s-path").value.trim();
    const since = instant("s-since");
    const until = instant("s-until");
    if (subject) q.set("subject", subject);
    if (decision) q.set("decision", decision);
    if (rule) q.set("rule", rule);
    if (path) q.set("path", path);
    if (since) q.set("since", since.toISOString());
    if (until) q.set("until", until.toISOString());
    const ul = $("s-list");
    try {
      const data = await Airlock.api("/v1/sessions?" + q.toString());
      const sessions = data.sessions;
      ul.replaceChildren();
      for (const s of sessions) {
        const li = Airlock.el("li");
        li.dataset.id = s.session_id;
        const decisions = Object.entries(s.decisions || {}).map(([d, n]) => d + " " + n).join(", ");
        li.append(Airlock.el("div", s.session_id + " · " + s.subject),
          Airlock.el("div", s.first_at + " → " + s.last_at + " · " + s.count + " requests · " + decisions, "meta"));
        li.addEventListener("click", () => { location.hash = "#/sessions/" + encodeURIComponent(s.session_id); });
        ul.append(li);
      }
      $("s-empty").hidden = sessions.length !== 0;
      $("s-empty").textContent = "No session matches.";
    } catch (e) {
      ul.replaceChildren();
      $("s-empty").hidden = false;
      $("s-empty").textContent = "Could not search: " + e.message;
    }
  }

  function showRecord(r, tr) {
    for (const row of $("t-rows").children) row.classList.toggle("selected", row === tr);
    $("t-which").textContent = "#" + r.seq + " " + r.method + " " + r.path;
    $("t-request").textContent = r.request_body == null ? "(no body recorded)" : r.request_body;
    $("t-response").textContent = r.response_body == null ? "(no body recorded)" : r.response_body;
  }

  async function timeline(id) {
    shown = id;
    $("t-replay-result").replaceChildren();
    $("t-replay-summary").textContent = "";
    $("timeline").hidden = false;
    $("t-title").textContent = "Session " + id;
    const tbody = $("t-rows");
    try {
      const data = await Airlock.api("/v1/sessions/" + encodeURIComponent(id));
      tbody.replaceChildren();
      for (const r of data.records) {
        const tr = Airlock.el("tr");
        const cells = [r.seq, new Date(r.time_ms).toISOString(), r.method + " " + r.path, r.status, r.decision,
          r.rule || "", r.approval_id || "", r.latency_ms + " ms"];
        for (const c of cells) tr.append(Airlock.el("td", c));
        tr.addEventListener("click", () => showRecord(r, tr));
        tbody.append(tr);
      }
      if (data.records.length) showRecord(data.records[0], tbody.firstChild);
    } catch (e) {
      tbody.replaceChildren();
      $("t-title").textContent = "Could not load session " + id + ": " + e.message;
    }
  }

  let shown = null;

  async function replay() {
    if (!shown) return;
    const ul = $("t-replay-result");
    $("t-replay-summary").textContent = "Replaying…";
    try {
      const r = await Airlock.api("/v1/sessions/" + encodeURIComponent(shown) + "/replay", { method: "POST" });
      ul.replaceChildren();
      for (const { line, differs } of r.replayed) {
        const got = line.replayed == null ? "unreachable (" + (line.error || "error") + ")" : String(line.replayed);
        ul.append(Airlock.el("li", "#" + line.seq + " " + line.method + " " + line.path + ": recorded " + line.recorded
          + ", replay " + got + (differs ? " · DIFFERS" : " · same"), differs ? "bad" : ""));
      }
      $("t-replay-summary").textContent = r.replayed.length + " replayed against " + r.target + ": " + r.differing
        + " differ, " + r.skipped_denied + " denied not replayed";
    } catch (e) {
      ul.replaceChildren();
      $("t-replay-summary").textContent = "Could not replay: " + e.message;
    }
  }

  let searched = false;
  Airlock.views.sessions = {
    open(id) {
      if (!searched) { searched = true; search(); }
      if (id) timeline(id);
    },
  };

  document.addEventListener("DOMContentLoaded", () => {
    $("s-form").addEventListener("submit", search);
    $("t-replay").addEventListener("click", replay);
  });
})();
