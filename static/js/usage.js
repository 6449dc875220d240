// The usage page: one stacked bar per month, a colour per team/user/cluster/account.
(function () {
  const canvas = document.getElementById("usage-chart");
  const node = document.getElementById("usage-chart-data");
  if (!canvas || !node || typeof Chart === "undefined") return;
  const data = JSON.parse(node.textContent);
  const palette = ["#2754c5", "#1b8a3a", "#b5461b", "#7a3db8", "#0f7d86", "#a07800", "#c2185b", "#546e7a"];
  new Chart(canvas, {
    type: "bar",
    data: {
      labels: data.months,
      datasets: data.series.map((s, i) => ({ label: s.name, data: s.values, backgroundColor: palette[i % palette.length] })),
    },
    options: {
      animation: false, responsive: true, maintainAspectRatio: false,
      scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, title: { display: true, text: data.label } } },
    },
  });
})();
