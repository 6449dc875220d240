// The sweep page: objective per trial with the best-so-far line, and a sortable trials table.
(function () {
  const canvas = document.getElementById("sweep-chart");
  let chart = null;

  function data() {
    const node = document.getElementById("sweep-chart-data");
    return node ? JSON.parse(node.textContent) : [];
  }

  function draw() {
    if (!canvas || typeof Chart === "undefined") return;
    const points = data();
    const objective = points.map((p) => ({ x: p.trial, y: p.objective }));
    const best = points.map((p) => ({ x: p.trial, y: p.best }));
    if (chart) {
      chart.data.datasets[0].data = objective;
      chart.data.datasets[1].data = best;
      chart.update("none");
      return;
    }
    chart = new Chart(canvas, {
      type: "scatter",
      data: {
        datasets: [
          { label: "objective", data: objective, borderColor: "#2754c5", backgroundColor: "#2754c5" },
          { label: "best so far", data: best, type: "line", stepped: true, borderColor: "#1b8a3a", pointRadius: 0 },
        ],
      },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        scales: { x: { type: "linear", title: { display: true, text: "trial" } } },
      },
    });
  }

  function sortable() {
    const table = document.getElementById("trials");
    if (!table) return;
    table.querySelectorAll("th").forEach((th, column) => {
      if (th.dataset.bound) return; // redrawn after each swap: one listener per header
      th.dataset.bound = "1";
      th.addEventListener("click", () => {
        const numeric = th.dataset.sort === "num";
        const ascending = th.dataset.dir !== "asc";
        th.dataset.dir = ascending ? "asc" : "desc";
        const rows = Array.from(table.tBodies[0].rows);
        const key = (row) => {
          const cell = row.cells[column];
          const text = cell.dataset.value !== undefined ? cell.dataset.value : cell.textContent.trim();
          return numeric ? (text === "" || text === "—" ? Infinity : parseFloat(text)) : text;
        };
        rows.sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (ascending ? 1 : -1));
        rows.forEach((row) => table.tBodies[0].append(row));
      });
    });
  }

  // Parallel coordinates: one vertical axis per parameter and one for the objective; each
  // trial is a line, darker the better. Categorical values sit evenly along their axis.
  function parallel() {
    const box = document.getElementById("sweep-parallel");
    const node = document.getElementById("sweep-parallel-data");
    if (!box || !node) return;
    const data = JSON.parse(node.textContent);
    const ctx = box.getContext("2d");
    const width = box.width, height = box.height, pad = 30;
    ctx.clearRect(0, 0, width, height);
    const columns = data.axes.length + 1;
    const xs = Array.from({ length: columns }, (_, i) => pad + (i * (width - 2 * pad)) / Math.max(columns - 1, 1));
    const scale = (values) => {
      const numeric = values.every((v) => typeof v === "number");
      const keys = numeric ? null : Array.from(new Set(values.map(String)));
      const nums = numeric ? values : values.map((v) => keys.indexOf(String(v)));
      const lo = Math.min(...nums), hi = Math.max(...nums);
      return nums.map((v) => (hi === lo ? 0.5 : (v - lo) / (hi - lo)));
    };
    const lines = data.lines;
    const columnsScaled = data.axes.map((_, i) => scale(lines.map((l) => l.values[i])));
    columnsScaled.push(scale(lines.map((l) => l.objective)));
    ctx.strokeStyle = "#999";
    ctx.fillStyle = "#333";
    ctx.font = "12px sans-serif";
    [...data.axes, "objective"].forEach((name, i) => {
      ctx.beginPath();
      ctx.moveTo(xs[i], pad);
      ctx.lineTo(xs[i], height - pad);
      ctx.stroke();
      ctx.fillText(name, xs[i] - 10, height - 8);
    });
    const objective = columnsScaled[columns - 1];
    lines.forEach((line, j) => {
      ctx.beginPath();
      ctx.strokeStyle = `rgba(39, 84, 197, ${0.25 + 0.75 * objective[j]})`;
      columnsScaled.forEach((column, i) => {
        const y = height - pad - column[j] * (height - 2 * pad);
        if (i === 0) ctx.moveTo(xs[i], y);
        else ctx.lineTo(xs[i], y);
      });
      ctx.stroke();
    });
    box.dataset.lines = String(lines.length);
  }

  draw();
  sortable();
  parallel();
  // The live part of the page is swapped as a whole (out of band, by the page's live
  // poller); the canvases are kept (hx-preserve), so the charts are redrawn in place.
  function redraw() {
    if (document.getElementById("sweep-live")) {
      draw();
      sortable();
      parallel();
    }
  }
  document.body.addEventListener("htmx:afterSettle", redraw);
  document.body.addEventListener("htmx:oobAfterSwap", redraw);
})();
