// The job page's log viewer: follows new lines unless the reader scrolled up, hides streams
// that have nothing in them, and searches what has arrived so far (matching lines, numbered).
(function () {
  const section = document.getElementById("logs");
  if (!section) return;
  const follow = new WeakMap(); // pre -> should stick to the bottom
  const atBottom = (el) => el.scrollHeight - el.scrollTop - el.clientHeight < 24;

  function text(pre) {
    // The log's own text, without the hub's notes and the pending-request placeholders.
    let out = "";
    pre.childNodes.forEach((n) => {
      if (n.nodeType === Node.TEXT_NODE) out += n.textContent;
    });
    return out;
  }

  function updateFollowNote() {
    const note = document.getElementById("log-follow");
    const paused = Array.from(section.querySelectorAll("pre.log:not(.log-matches)")).some((p) => follow.get(p) === false);
    if (note) note.hidden = !paused;
  }

  section.querySelectorAll("pre.log:not(.log-matches)").forEach((pre) => {
    follow.set(pre, true);
    pre.addEventListener("scroll", () => {
      follow.set(pre, atBottom(pre));
      updateFollowNote();
    });
  });

  const resume = document.getElementById("log-follow-resume");
  if (resume) resume.addEventListener("click", () => {
    section.querySelectorAll("pre.log:not(.log-matches)").forEach((pre) => {
      follow.set(pre, true);
      pre.scrollTop = pre.scrollHeight;
    });
    updateFollowNote();
  });

  // Each answer of the tail puts its text at the end of each stream (out of band) and replaces
  // its own request span, which is then gone from the page: look at every stream, once per answer.
  let queued = false;
  function refreshAll() {
    if (queued) return;
    queued = true;
    setTimeout(() => {
      queued = false;
      section.querySelectorAll("pre.log:not(.log-matches)").forEach(refreshOne);
      search();
    }, 0);
  }
  function refreshOne(pre) {
    const stream = pre.closest(".logstream");
    if (stream) stream.dataset.empty = text(pre).trim().length ? "false" : "true";
    if (follow.get(pre) !== false) pre.scrollTop = pre.scrollHeight;
  }
  document.body.addEventListener("htmx:afterSwap", refreshAll);
  document.body.addEventListener("htmx:oobAfterSwap", refreshAll);

  const input = document.getElementById("log-search");
  const matches = document.getElementById("log-matches");
  const count = document.getElementById("log-search-count");
  function search() {
    if (!input || !matches) return;
    const term = input.value.trim().toLowerCase();
    if (!term) {
      matches.hidden = true;
      matches.textContent = "";
      if (count) count.textContent = "";
      return;
    }
    const found = [];
    section.querySelectorAll(".logstream").forEach((stream) => {
      const pre = stream.querySelector("pre.log");
      text(pre).split("\n").forEach((line, i) => {
        if (line.toLowerCase().includes(term)) found.push(`${stream.dataset.stream}:${i + 1}: ${line}`);
      });
    });
    matches.hidden = false;
    matches.textContent = found.join("\n");
    if (count) count.textContent = `${found.length} matching line${found.length === 1 ? "" : "s"}`;
  }
  if (input) input.addEventListener("input", search);
})();
