"use strict";
// Audit integrity: the result of walking the hash chain, with the first bad record if any.
(function () {
  async function verify() {
    $("i-result").textContent = "Verifying…";
    $("i-result").className = "";
    try {
      const r = await Airlock.api("/v1/audit/verify");
      $("i-result").textContent = r.ok ? "Chain intact" : "Chain broken";
      $("i-result").className = r.ok ? "ok" : "bad";
      $("i-records").textContent = String(r.records);
      $("i-first-bad").textContent = r.first_bad_seq == null ? "none" : "#" + r.first_bad_seq;
      $("i-problem").textContent = r.problem || "none";
      $("i-at").textContent = new Date().toISOString();
    } catch (e) {
      $("i-result").textContent = "Could not verify: " + e.message;
      $("i-result").className = "error";
    }
  }

  Airlock.views.integrity = { open: verify };
  document.addEventListener("DOMContentLoaded", () => $("verify").addEventListener("click", verify));
})();
