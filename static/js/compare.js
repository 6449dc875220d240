// The compare page: one chart per metric with every selected job's curve overlaid.
(function () {
  const source = document.getElementById("compare-curves");
  const box = document.getElementById("compare-charts");
  if (!source || !box || typeof Chart === "undefined") return;
  const runs = JSON.parse(source.textContent);
  const colours = ["#2754c5", "#c0362c", "#1a7f37", "#9a6700", "#7b3fc4", "#0f7c8c", "#d1571c", "#5d6b82", "#b8327a", "#3d8c1a"];
  Promise.all(
    runs.map((run) =>
      fetch(run.url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
        .then((body) => ({ run, metrics: body.metrics || {} }))
        .catch(() => {
          document.getElementById("compare-error").hidden = false;
          return { run, metrics: {} };
        })
    )
  ).then((answers) => {
    const names = [...new Set(answers.flatMap((a) => Object.keys(a.metrics)))].sort();
    document.getElementById("compare-empty").hidden = names.length > 0;
    for (const name of names) {
      const figure = document.createElement("figure");
      figure.className = "metric";
      figure.dataset.metric = name;
      const caption = document.createElement("figcaption");
      caption.textContent = name;
      const canvas = document.createElement("canvas");
      figure.append(caption, canvas);
      box.append(figure);
      const datasets = answers
        .map((a, i) => ({ a, i }))
        .filter(({ a }) => a.metrics[name])
        .map(({ a, i }) => ({
          label: a.run.label,
          data: a.metrics[name].map((p) => ({ x: p.step, y: p.value })),
          borderColor: colours[i % colours.length],
          pointRadius: 1.5,
          tension: 0.1,
        }));
      figure.dataset.series = String(datasets.length);
      new Chart(canvas, {
        type: "line",
        data: { datasets },
        options: {
          animation: false, responsive: true, maintainAspectRatio: false,
          scales: { x: { type: "linear", title: { display: true, text: "step" } } },
          plugins: { legend: { display: true, position: "bottom" } },
        },
      });
    }
  });
})();
