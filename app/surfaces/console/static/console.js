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

  // The filter box suggests terms: the keys, then the values a key takes (states, tasks, queues).
  function suggest(form) {
    var input = form.querySelector("#filter");
    var list = form.querySelector("#filter-suggestions");
    var values = JSON.parse(form.getAttribute("data-suggest") || "{}");
    var keys = ["state:", "task:", "queue:", "since:", "args."];
    function currentWord() {
      var upto = input.value.slice(0, input.selectionStart === null ? input.value.length : input.selectionStart);
      var start = upto.lastIndexOf(" ") + 1;
      return { start: start, word: upto.slice(start) };
    }
    function options(word) {
      var colon = word.indexOf(":");
      if (colon < 0) {
        return keys.filter(function (k) { return k.indexOf(word.toLowerCase()) === 0 && word.length < k.length; });
      }
      var key = word.slice(0, colon).toLowerCase();
      var typed = word.slice(colon + 1).toLowerCase();
      return (values[key] || [])
        .filter(function (v) { return v.toLowerCase().indexOf(typed) === 0 && v.toLowerCase() !== typed; })
        .slice(0, 12)
        .map(function (v) { return key + ":" + v; });
    }
    function choose(choice) {
      var at = currentWord();
      var rest = input.value.slice(at.start + at.word.length).replace(/^\S*\s*/, "");
      var spacer = /[:.]$/.test(choice) ? "" : " ";
      input.value = input.value.slice(0, at.start) + choice + spacer + rest;
      var caret = at.start + choice.length + spacer.length;
      input.setSelectionRange(caret, caret);
      input.focus();
      render();
    }
    function render() {
      var found = options(currentWord().word);
      list.innerHTML = "";
      found.forEach(function (text) {
        var item = document.createElement("li");
        item.setAttribute("role", "option");
        item.textContent = text;
        item.addEventListener("mousedown", function (event) {
          event.preventDefault();
          choose(text);
        });
        list.appendChild(item);
      });
      list.hidden = found.length === 0;
    }
    input.addEventListener("input", render);
    input.addEventListener("focus", render);
    input.addEventListener("blur", function () { list.hidden = true; });
    input.addEventListener("keydown", function (event) {
      if (event.key === "Tab" && !list.hidden && list.firstChild) {
        event.preventDefault();
        choose(list.firstChild.textContent);
      } else if (event.key === "Escape") {
        list.hidden = true;
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("form[data-suggest]"), suggest);
    Array.prototype.forEach.call(document.querySelectorAll("[data-refresh-url]"), refresh);
    Array.prototype.forEach.call(document.querySelectorAll("[data-bulk-action]"), function (button) {
      button.addEventListener("click", function () { bulkAction(button); });
    });
    Array.prototype.forEach.call(document.querySelectorAll("[data-job-action]"), function (button) {
      button.addEventListener("click", function () { jobAction(button); });
    });
    Array.prototype.forEach.call(document.querySelectorAll("[data-schedule-action]"), function (button) {
      button.addEventListener("click", function () {
        var out = document.getElementById("schedule-action-result");
        post(button.getAttribute("data-schedule-action"), {})
          .then(function () { window.location.reload(); })
          .catch(function (error) { out.textContent = "Failed: " + error.message; });
      });
    });
    Array.prototype.forEach.call(document.querySelectorAll("form[data-schedule-edit]"), function (form) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        var out = document.getElementById("schedule-action-result");
        var body = {};
        Array.prototype.forEach.call(form.elements, function (field) {
          if (!field.name) { return; }
          body[field.name] = field.type === "number" ? Number(field.value) : field.value;
        });
        post(form.getAttribute("data-schedule-edit"), body)
          .then(function () { window.location.reload(); })
          .catch(function (error) { out.textContent = "Failed: " + error.message; });
      });
    });
    Array.prototype.forEach.call(document.querySelectorAll("[data-queue-action]"), function (button) {
      button.addEventListener("click", function () {
        var out = document.getElementById("queue-action-result");
        post(button.getAttribute("data-queue-action"), {})
          .then(function () { window.location.reload(); })
          .catch(function (error) { out.textContent = "Failed: " + error.message; });
      });
    });
    Array.prototype.forEach.call(document.querySelectorAll("select[data-autosubmit]"), function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
  });
})();
