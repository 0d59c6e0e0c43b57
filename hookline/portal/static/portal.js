// Progressive enhancement only: every page works without this file.
"use strict";

// Forms with data-confirm ask before they are sent (delete, rotate).
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.getAttribute && form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

// Buttons with data-copy="<element id>" copy that element's text.
document.addEventListener("click", (event) => {
  const button = event.target.closest ? event.target.closest("[data-copy]") : null;
  if (!button || !navigator.clipboard) return;
  const source = document.getElementById(button.getAttribute("data-copy"));
  if (!source) return;
  navigator.clipboard.writeText(source.textContent.trim()).then(() => {
    button.textContent = "Copied";
  });
});

// A replay job's page follows its progress until it is finished.
const polled = document.querySelector("[data-poll]");
if (polled) {
  const url = polled.getAttribute("data-poll");
  const bar = polled.querySelector("progress");
  const update = () => {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then((answer) => (answer.ok ? answer.json() : null))
      .then((job) => {
        if (!job) return;
        for (const field of polled.querySelectorAll("[data-field]")) {
          field.textContent = job[field.getAttribute("data-field")];
        }
        if (bar) {
          bar.max = job.total || 1;
          bar.value = job.done + job.failed + job.skipped;
        }
        if (job.state === "running" || job.state === "cancelling") {
          window.setTimeout(update, 1000);
        }
      });
  };
  window.setTimeout(update, 500);
}
