// cairn console: the little that needs a script. Everything works without it: links and
// forms do the rest. Values are put in the page with textContent, never as HTML.
"use strict";

function csrfToken() {
  const m = document.querySelector('meta[name="csrf"]');
  return m ? m.content : "";
}

// Forms marked data-confirm ask first.
document.addEventListener("submit", (e) => {
  const msg = e.target.getAttribute("data-confirm");
  if (msg && !window.confirm(msg)) { e.preventDefault(); }
});

// A collection in progress refreshes itself until it is finished.
(function refreshWhileRunning() {
  const el = document.querySelector("[data-refresh-while]");
  if (!el) return;
  const status = el.getAttribute("data-refresh-while");
  if (["requested", "queued", "running", "paused"].includes(status)) {
    setTimeout(() => window.location.reload(), 1500);
  }
})();

// Event rows open their drawer (every field) below the table.
document.addEventListener("click", async (e) => {
  const row = e.target.closest("tr[data-event]");
  if (!row || e.target.closest("a, button, form")) return;
  const drawer = document.getElementById("drawer");
  if (!drawer) return;
  const r = await fetch(row.getAttribute("data-event"), { credentials: "same-origin" });
  const pre = drawer.querySelector("pre");
  pre.textContent = r.ok ? JSON.stringify(await r.json(), null, 2) : "could not load the event (" + r.status + ")";
  drawer.hidden = false;
  const ctx = drawer.querySelector("a.context");
  if (ctx) ctx.href = row.getAttribute("data-context") || "#";
  const open = drawer.querySelector("a.open");
  if (open) open.href = row.getAttribute("data-open") || "#";
  drawer.scrollIntoView({ behavior: "smooth", block: "nearest" });
});

// Alt-click on a facet value excludes it instead of including it.
document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-exclude]");
  if (a && e.altKey) { e.preventDefault(); window.location = a.getAttribute("data-exclude"); }
});
