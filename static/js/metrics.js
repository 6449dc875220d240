// Metric curves on the job page: one small chart per metric. The page's own live poll
// (apps/core/live.py, every few seconds) carries a version of what the curves show, in
// #job-metrics-summary's data-curves ("" without an MLflow run); the history is fetched when
// the page opens and again only when that version changes, so an unchanged job costs one
// request per poll, not two.
(function () {
  const box = document.getElementById("metric-charts");
  if (!box || typeof Chart === "undefined") return;
  const url = box.dataset.url;
  const charts = {};

  function wanted() {
    const summary = document.getElementById("job-metrics-summary");
    return summary ? summary.dataset.curves || "" : "";
  }

  function draw(metrics) {
    const keys = Object.keys(metrics).sort();
    const empty = document.getElementById("metric-empty");
    if (empty) empty.hidden = keys.length > 0;
    box.dataset.points = String(keys.reduce((n, k) => n + metrics[k].length, 0));
    for (const key of keys) {
      const points = metrics[key].map((p) => ({ x: p.step, y: p.value }));
      if (charts[key]) {
        charts[key].data.datasets[0].data = points;
        charts[key].update("none");
        continue;
      }
      const figure = document.createElement("figure");
      figure.className = "metric";
      figure.dataset.metric = key;
      const caption = document.createElement("figcaption");
      caption.textContent = key;
      const canvas = document.createElement("canvas");
      figure.append(caption, canvas);
      box.append(figure);
      charts[key] = new Chart(canvas, {
        type: "line",
        data: { datasets: [{ label: key, data: points, borderColor: "#2754c5", pointRadius: 2, tension: 0.1 }] },
        options: {
          animation: false, parsing: true, responsive: true, maintainAspectRatio: false,
          scales: { x: { type: "linear", title: { display: true, text: "step" } } },
          plugins: { legend: { display: false } },
        },
      });
    }
  }

  let fetched = ""; // the curves version the last fetch was made for
  let busy = false;
  // After a failed fetch: one timer at a time, waiting longer after each failure (5 s, 10 s,
  // ... at most a minute), and given up after a dozen (the note stays; a reload asks again).
  // Meanwhile the live poll's swaps do not fetch: they would fail the same way, each at once.
  let retry = null;
  let failures = 0;
  function load(fromTimer) {
    const version = wanted();
    if (busy || (retry && !fromTimer) || !version || version === fetched) return;
    busy = true;
    fetched = version;
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
      .then((body) => {
        const note = document.getElementById("metric-error");
        if (note) note.hidden = true;
        failures = 0;
        draw(body.metrics || {});
        busy = false;
        load(); // the version may have moved on while this fetch was out
      })
      .catch(() => {
        const note = document.getElementById("metric-error");
        if (note) note.hidden = false;
        fetched = "";
        busy = false;
        failures += 1;
        if (failures > 12) return;
        retry = setTimeout(() => {
          retry = null;
          load(true);
        }, Math.min(5000 * 2 ** (failures - 1), 60000));
      });
  }
  // The live poll replaces #job-metrics-summary (an out-of-band swap) when anything changed;
  // htmx puts the new element in with the old attributes and sets the new ones a moment later
  // (its settle step), so the attribute's change is watched too.
  new MutationObserver(() => load()).observe(box.parentElement, {
    childList: true, subtree: true, attributes: true, attributeFilter: ["data-curves"],
  });
  load();
})();
