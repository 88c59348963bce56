"use strict";
// Approvals: the pending list refreshes itself every POLL_MS (no reload), each showing the
// request, requester, rule, countdown and quorum; the detail decides with a reason.
(function () {
  const POLL_MS = 2000;
  let current = null;
  let polling = null;

  function quorum(a) {
    const n = a.decisions.filter((d) => d.decision === "approve").length;
    return n + " of " + a.approvers.required + " from " + a.approvers.groups.join(", ");
  }

  async function loadList() {
    try {
      const data = await Airlock.api("/v1/approvals?status=pending");
      const list = $("list");
      const selected = current ? current.id : null;
      list.replaceChildren();
      for (const a of data.approvals) {
        const li = Airlock.el("li");
        li.dataset.id = a.id;
        li.dataset.expires = a.expires_at_ms;
        li.classList.toggle("selected", a.id === selected);
        const meta = Airlock.el("div", "", "meta");
        meta.append(
          Airlock.el("span", a.subject + " · rule " + a.rule + " · " + quorum(a) + " · "),
          Airlock.el("span", Airlock.countdown(a.expires_at_ms), "countdown"));
        li.append(Airlock.el("div", a.method + " " + a.path), meta);
        li.addEventListener("click", () => {
          const target = "#/approvals/" + a.id;
          if (location.hash === target) show(a.id); else location.hash = target;
        });
        list.append(li);
      }
      $("empty").hidden = data.approvals.length !== 0;
      $("empty").textContent = "Nothing is waiting for you.";
      $("who").textContent = data.approvals.length + " pending";
      $("live").textContent = "live · updated " + new Date().toLocaleTimeString();
    } catch (e) {
      $("who").textContent = "";
      $("empty").hidden = false;
      $("empty").textContent = "Could not load: " + e.message;
    }
  }

  function tick() {
    for (const li of $("list").children) {
      const c = li.querySelector(".countdown");
      if (c) c.textContent = Airlock.countdown(Number(li.dataset.expires));
    }
    if (current && current.status === "pending") {
      $("d-deadline").textContent = current.expires_at + " (" + Airlock.countdown(current.expires_at_ms) + ")";
    }
  }

  function setMessage(text, isError) {
    $("message").textContent = text;
    $("message").className = isError ? "error" : "";
  }

  async function show(id) {
    try {
      const a = await Airlock.api("/v1/approvals/" + encodeURIComponent(id));
      current = a;
      for (const li of $("list").children) li.classList.toggle("selected", li.dataset.id === id);
      $("detail").hidden = false;
      $("d-title").textContent = "Approval " + a.id;
      $("d-status").textContent = a.status;
      $("d-subject").textContent = a.subject + (a.groups.length ? " (" + a.groups.join(", ") + ")" : "");
      $("d-rule").textContent = a.rule;
      $("d-reason").textContent = a.reason || "(none given)";
      $("d-deadline").textContent = a.expires_at;
      $("d-quorum").textContent = quorum(a);
      $("d-session").textContent = a.session_id || "(none)";
      $("d-request").textContent = a.method + " " + a.path + "\n\n" + a.body;
      const ul = $("d-decisions");
      ul.replaceChildren();
      for (const d of a.decisions) {
        ul.append(Airlock.el("li", d.at + " " + d.approver + ": " + d.decision + " (" + d.reason + ")"));
      }
      const open = a.status === "pending";
      $("approve").disabled = !open;
      $("deny").disabled = !open;
      setMessage(open ? "" : "This request is " + a.status + ".", false);
      tick();
    } catch (e) {
      $("detail").hidden = false;
      setMessage("Could not load the approval: " + e.message, true);
    }
  }

  async function decide(decision) {
    if (!current) return;
    const reason = $("reason").value.trim();
    if (!reason) { setMessage("Give a reason: it is recorded with your decision.", true); return; }
    try {
      const a = await Airlock.api("/v1/approvals/" + encodeURIComponent(current.id) + "/decision", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ decision, reason }),
      });
      $("reason").value = "";
      await show(a.id);
      setMessage("Recorded: " + decision + ". Status is now " + a.status + ".", false);
      await loadList();
    } catch (e) {
      setMessage("Not recorded: " + e.message, true);
    }
  }

  async function history() {
    const status = $("h-status").value;
    const subject = $("h-subject").value.trim();
    const rule = $("h-rule").value.trim();
    const ul = $("history");
    try {
      const query = "/v1/approvals?limit=200" + (status ? "&status=" + encodeURIComponent(status) : "");
      const data = await Airlock.api(query);
      ul.replaceChildren();
      const shown = data.approvals.filter((a) => a.status !== "pending"
        && (!subject || a.subject.includes(subject)) && (!rule || a.rule === rule));
      for (const a of shown) {
        const who = a.decisions.map((d) => d.approver + " " + d.decision + " (" + d.reason + ")").join("; ");
        const li = Airlock.el("li");
        li.append(Airlock.el("div", a.status + ": " + a.method + " " + a.path),
          Airlock.el("div", a.created_at + " · " + a.subject + " · rule " + a.rule + (who ? " · " + who : ""),
            "meta"));
        ul.append(li);
      }
      if (!shown.length) ul.append(Airlock.el("li", "No decided approvals match.", "meta"));
    } catch (e) {
      ul.replaceChildren(Airlock.el("li", "Could not load: " + e.message, "error"));
    }
  }

  Airlock.views.approvals = {
    open(id) {
      if (!polling) {
        loadList();
        polling = setInterval(loadList, POLL_MS);
        setInterval(tick, 1000);
      }
      if (id) show(id);
    },
  };

  document.addEventListener("DOMContentLoaded", () => {
    $("approve").addEventListener("click", () => decide("approve"));
    $("deny").addEventListener("click", () => decide("deny"));
    $("h-load").addEventListener("click", history);
  });
})();
