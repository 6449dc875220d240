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
  function load() {
    const version = wanted();
    if (busy || !version || version === fetched) return;
    busy = true;
    fetched = version;
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
      .then((body) => {
        const note = document.getElementById("metric-error");
        if (note) note.hidden = true;
        draw(body.metrics || {});
        busy = false;
        load(); // the version may have moved on while this fetch was out
      })
      .catch(() => {
        const note = document.getElementById("metric-error");
        if (note) note.hidden = false;
        // Asked again in a poll's time, whether or not the version moves meanwhile.
        fetched = "";
        busy = false;
        setTimeout(load, 5000);
      });
  }
  // The live poll replaces #job-metrics-summary (an out-of-band swap) when anything changed;
  // htmx puts the new element in with the old attributes and sets the new ones a moment later
  // (its settle step), so the attribute's change is watched too.
  new MutationObserver(load).observe(box.parentElement, {
    childList: true, subtree: true, attributes: true, attributeFilter: ["data-curves"],
  });
  load();
})();
