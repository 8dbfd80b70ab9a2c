// obs viewer: re-renders the parts of a page marked data-refresh (the server renders them)
// when a span or a log line was kept since (polled four times a second) and every two seconds
// anyway (metrics move on their own); takes CPU profiles. No build step, no dependency.
"use strict";
(function () {
  const live = document.getElementById("live");
  const parts = Array.from(document.querySelectorAll("[data-refresh]"));
  // A request that hangs is given up after 5 s, so that polling goes on.
  const get = (url, ms = 5000) => fetch(url, { credentials: "same-origin", signal: AbortSignal.timeout(ms) });
  let seen = null;
  let last = Date.now();
  let busy = false;
  async function tick() {
    if (busy || document.hidden || (live && !live.checked)) return;
    busy = true;
    try {
      const v = await get("/debug/obs/version");
      const version = v.ok ? await v.text() : null;
      if (version === seen && Date.now() - last < 2000) return;
      let all = true;
      for (const el of parts) {
        const r = await get(el.dataset.refresh);
        if (r.ok) el.innerHTML = await r.text();
        else all = false;
      }
      // Seen only once every part shows it: a failed fetch is tried again at the next tick.
      if (all) seen = version;
      last = Date.now();
      const u = await get("/debug/obs/usage");
      if (u.ok) document.getElementById("usage").textContent = await u.text();
    } catch (e) {
      // The service restarting: try again at the next tick.
    } finally {
      busy = false;
    }
  }
  if (parts.length) setInterval(tick, 250);

  const take = document.getElementById("take-profile");
  if (take) {
    const status = document.getElementById("profile-status");
    const frame = document.getElementById("flamegraph");
    take.addEventListener("click", async () => {
      const seconds = document.getElementById("seconds").value;
      take.disabled = true;
      status.textContent = "sampling for " + seconds + " s…";
      try {
        const r = await get("/debug/obs/api/profile.svg?seconds=" + encodeURIComponent(seconds), 120000);
        if (!r.ok) {
          status.textContent = "no profile: " + (await r.text());
          return;
        }
        await r.blob();
        // The profile just taken, kept by the server: in its frame the flamegraph's own script
        // (zoom, search) runs.
        frame.src = "/debug/obs/api/profile/last.svg?at=" + Date.now();
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
