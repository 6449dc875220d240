// Small behaviours every page may use, with no inline script (the CSP refuses those).
// - <form data-confirm="Question?"> or <button data-confirm="…"> asks before submitting.
(function () {
  document.addEventListener("submit", function (event) {
    const question = (event.submitter && event.submitter.dataset.confirm) || event.target.dataset.confirm;
    if (question && !window.confirm(question)) event.preventDefault();
  }, true);
})();
