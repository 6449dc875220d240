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

  draw();
  sortable();
  document.body.addEventListener("htmx:afterSwap", (event) => {
    if (event.target.id === "trial-table") {
      draw();
      sortable();
    }
  });
})();
