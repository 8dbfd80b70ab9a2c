// obs viewer: refreshes the parts of a page marked data-refresh every second (the server
// renders them), and takes CPU profiles. No build step, no dependency.
"use strict";
(function () {
  const live = document.getElementById("live");
  const parts = Array.from(document.querySelectorAll("[data-refresh]"));
  async function refresh() {
    if (document.hidden || (live && !live.checked)) return;
    for (const el of parts) {
      try {
        const r = await fetch(el.dataset.refresh, { credentials: "same-origin" });
        if (!r.ok) continue;
        el.innerHTML = await r.text();
      } catch (e) { /* the service restarting: try again at the next tick */ }
    }
    try {
      const u = await fetch("/debug/obs/usage", { credentials: "same-origin" });
      if (u.ok) document.getElementById("usage").textContent = await u.text();
    } catch (e) { /* as above */ }
  }
  if (parts.length) setInterval(refresh, 1000);

  const take = document.getElementById("take-profile");
  if (take) {
    const status = document.getElementById("profile-status");
    const frame = document.getElementById("flamegraph");
    take.addEventListener("click", async () => {
      const seconds = document.getElementById("seconds").value;
      take.disabled = true;
      status.textContent = "sampling for " + seconds + " s…";
      try {
        const r = await fetch("/debug/obs/api/profile.svg?seconds=" + encodeURIComponent(seconds), { credentials: "same-origin" });
        if (!r.ok) {
          status.textContent = "no profile: " + (await r.text());
          return;
        }
        const svg = await r.blob();
        frame.src = URL.createObjectURL(new Blob([svg], { type: "image/svg+xml" }));
        frame.hidden = false;
        status.textContent = "taken " + new Date().toLocaleTimeString();
      } catch (e) {
        status.textContent = "no profile: " + e;
      } finally {
        take.disabled = false;
      }
    });
  }
})();
