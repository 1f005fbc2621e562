// storyworker dashboard: pages refresh themselves (the #live part, re-rendered by the
// server), the job page's chapter text grows as it is written, and a Pause button
// stops both. No library, no build step; text is only ever set as text.
(function () {
  "use strict";
  var PAUSE_KEY = "storyworker.paused";
  var body = document.body;
  var live = document.getElementById("live");
  var pauseButton = document.getElementById("pause");
  var updated = document.getElementById("updated");
  var refreshMs = parseInt(body.getAttribute("data-refresh-ms"), 10) || 2000;

  function paused() {
    return window.localStorage && localStorage.getItem(PAUSE_KEY) === "1";
  }

  function showPause() {
    if (!pauseButton) return;
    pauseButton.textContent = paused() ? "Resume" : "Pause";
    pauseButton.setAttribute("aria-pressed", paused() ? "true" : "false");
  }

  function stamp() {
    if (updated) updated.textContent = "updated " + new Date().toLocaleTimeString();
  }

  function busyTyping() {
    var active = document.activeElement;
    return active && live && live.contains(active) &&
      /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName);
  }

  function refresh() {
    if (!live || paused() || document.hidden || busyTyping()) return;
    fetch(window.location.href, {
      headers: { "X-Dashboard-Live": "1" },
      credentials: "same-origin",
    }).then(function (response) {
      if (response.status === 401) { window.location.reload(); return null; }
      return response.ok ? response.text() : null;
    }).then(function (html) {
      if (html !== null && html !== undefined && !busyTyping()) {
        live.innerHTML = html;  // rendered and escaped by the server
        stamp();
      }
    }).catch(function () {});
  }

  // The job page: fetch the chapter's text after what is shown, every interval.
  var text = document.getElementById("chapter-text");
  var textTimer = null;

  function setText(node, value) { if (node) node.textContent = value; }

  function pollText() {
    if (!text || paused()) return;
    var length = parseInt(text.getAttribute("data-length"), 10) || 0;
    var url = "/jobs/" + text.getAttribute("data-job") + "/text?offset=" + length;
    fetch(url, { credentials: "same-origin" }).then(function (response) {
      return response.ok ? response.json() : null;
    }).then(function (state) {
      if (!state) return;
      if (state.reset) text.textContent = state.text;
      else if (state.text) text.appendChild(document.createTextNode(state.text));
      text.setAttribute("data-length", String(state.length));
      setText(document.getElementById("text-length"), state.length.toLocaleString() + " characters");
      var badge = document.getElementById("job-status");
      var before = badge ? badge.getAttribute("data-status") : null;
      var progress = document.getElementById("job-progress");
      if (progress) progress.value = state.progress || 0;
      setText(document.getElementById("job-step"), state.current_step || "");
      if (state.status !== "pending" && state.status !== "processing") {
        // Ended: the whole page once more (usage, context, timeline), where it was.
        text.setAttribute("data-live", "no");
        window.clearInterval(textTimer);
        window.location.reload();
      } else if (before !== state.status) {
        refresh();  // the status, buttons and timeline change
      }
    }).catch(function () {});
  }

  if (pauseButton) {
    pauseButton.addEventListener("click", function () {
      if (paused()) localStorage.removeItem(PAUSE_KEY); else localStorage.setItem(PAUSE_KEY, "1");
      showPause();
      if (!paused()) { refresh(); pollText(); }
    });
  }
  showPause();
  stamp();
  if (live) window.setInterval(refresh, refreshMs);
  if (text && text.getAttribute("data-live") === "yes") {
    var every = parseInt(text.getAttribute("data-interval"), 10) || 400;
    textTimer = window.setInterval(pollText, every);
  }
})();
