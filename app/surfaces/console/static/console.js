// Tasklane console: refreshes marked panels, confirms and sends actions. No library, no CDN.
(function () {
  "use strict";

  function token() {
    var meta = document.querySelector('meta[name="console-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Console-Token": token() },
      body: JSON.stringify(body || {}),
    }).then(function (response) {
      return response.json().then(function (data) {
        if (!response.ok) {
          var message = data && data.error ? data.error.message : response.statusText;
          throw new Error(message);
        }
        return data;
      });
    });
  }

  // Panels with data-refresh-url: fetch the fragment every data-refresh-seconds and swap it in;
  // with data-refresh-while, stop once the fragment no longer holds that selector.
  function refresh(panel) {
    var url = panel.getAttribute("data-refresh-url");
    var every = 1000 * parseFloat(panel.getAttribute("data-refresh-seconds") || "5");
    var keepWhile = panel.getAttribute("data-refresh-while");
    function tick() {
      if (document.hidden) {
        window.setTimeout(tick, every);
        return;
      }
      fetch(url, { credentials: "same-origin" })
        .then(function (response) {
          if (!response.ok) throw new Error(response.statusText);
          return response.text();
        })
        .then(function (html) {
          panel.innerHTML = html;
          panel.setAttribute("data-refreshed", String(Date.now()));
          if (keepWhile && !panel.querySelector(keepWhile)) return;
          window.setTimeout(tick, every);
        })
        .catch(function () {
          window.setTimeout(tick, every * 2);
        });
    }
    window.setTimeout(tick, every);
  }

  function bulkAction(button) {
    var action = button.getAttribute("data-bulk-action");
    var q = button.getAttribute("data-q") || "";
    var out = document.getElementById("bulk-result");
    var url = document.body.getAttribute("data-bulk-url");
    var what = q ? "matching \u201c" + q + "\u201d" : "with no filter (every job)";
    out.textContent = "Counting\u2026";
    post(url, { action: action, q: q, dry_run: true })
      .then(function (counted) {
        var n = counted.matched;
        if (!n) {
          out.textContent = "No job matches; nothing to " + action + ".";
          return null;
        }
        var verb = action.charAt(0).toUpperCase() + action.slice(1);
        if (!window.confirm(verb + " " + n + " job" + (n === 1 ? "" : "s") + " " + what + "?")) {
          out.textContent = "Cancelled.";
          return null;
        }
        return post(url, { action: action, q: q, dry_run: false });
      })
      .then(function (started) {
        if (started) {
          out.textContent = "Started: " + action + " on " + started.matched + " jobs (bulk " + started.bulk_id.slice(0, 8) + ").";
          out.setAttribute("data-matched", String(started.matched));
        }
      })
      .catch(function (error) {
        out.textContent = "Failed: " + error.message;
      });
  }

  function jobAction(button) {
    var out = document.getElementById("job-action-result");
    post(button.getAttribute("data-job-action"), {})
      .then(function () {
        out.textContent = "Done.";
        window.setTimeout(function () { window.location.reload(); }, 400);
      })
      .catch(function (error) {
        out.textContent = "Failed: " + error.message;
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("[data-refresh-url]"), refresh);
    Array.prototype.forEach.call(document.querySelectorAll("[data-bulk-action]"), function (button) {
      button.addEventListener("click", function () { bulkAction(button); });
    });
    Array.prototype.forEach.call(document.querySelectorAll("[data-job-action]"), function (button) {
      button.addEventListener("click", function () { jobAction(button); });
    });
    Array.prototype.forEach.call(document.querySelectorAll("select[data-autosubmit]"), function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
  });
})();
