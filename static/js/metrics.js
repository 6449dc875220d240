// Metric curves on the job page: one small chart per metric, refreshed while the job's live
// poller (apps/core/live.py) says its state is not final, and once more when it becomes final.
(function () {
  const box = document.getElementById("metric-charts");
  if (!box || typeof Chart === "undefined") return;
  const url = box.dataset.url;
  const charts = {};

  function isFinal() {
    const poller = document.getElementById("live-job");
    return poller ? poller.dataset.liveFinal === "true" : true;
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

  let lastRound = false;
  function load() {
    const finalNow = isFinal();
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
      .then((body) => {
        const note = document.getElementById("metric-error");
        if (note) note.hidden = true;
        draw(body.metrics || {});
      })
      .catch(() => {
        const note = document.getElementById("metric-error");
        if (note) note.hidden = false;
      })
      .finally(() => {
        if (finalNow && lastRound) return;
        lastRound = finalNow;
        setTimeout(load, finalNow ? 0 : 4000);
      });
  }
  load();
})();
