// hive tracker: refreshes the page's live part (<main data-refresh>) every
// few seconds while the tab is visible. One request at a time: a slow
// answer delays the next refresh instead of piling requests up.
"use strict";
(function () {
  const main = document.querySelector("main[data-refresh]");
  if (!main) return;
  const every = Math.max(2, Number(main.dataset.refresh) || 5) * 1000;
  let busy = false;
  async function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const res = await fetch(location.href, { cache: "no-store" });
      if (res.ok) {
        const doc = new DOMParser().parseFromString(await res.text(), "text/html");
        const fresh = doc.querySelector("main[data-refresh]");
        if (fresh) main.replaceChildren(...fresh.childNodes);
      }
    } catch (_) {
      // The tracker is away: the next tick tries again.
    } finally {
      busy = false;
    }
  }
  setInterval(refresh, every);
  document.addEventListener("visibilitychange", refresh);
})();
