// Case page: poll the case's status JSON every 2 s while any job is pending or running, and
// swap in each image's freshly rendered result block. Stops once every job has finished.
//
// Heatmap controls (opacity range, on/off toggle) are wired by delegation on the document, so
// result blocks swapped in by the polling below work without re-binding.
(function () {
  "use strict";

  function stackOf(control) {
    var figure = control.closest(".heatmap-view");
    return figure ? figure.querySelector(".heatmap-stack") : null;
  }

  document.addEventListener("input", function (event) {
    var range = event.target;
    if (!range.classList || !range.classList.contains("heatmap-opacity")) {
      return;
    }
    var stack = stackOf(range);
    var overlay = stack && stack.querySelector(".heatmap-overlay");
    if (overlay) {
      overlay.style.opacity = String(Number(range.value) / 100);
    }
    var output = range.parentNode.querySelector(".heatmap-opacity-value");
    if (output) {
      output.textContent = range.value + " %";
    }
  });

  document.addEventListener("change", function (event) {
    var toggle = event.target;
    if (!toggle.classList || !toggle.classList.contains("heatmap-toggle")) {
      return;
    }
    var stack = stackOf(toggle);
    if (stack) {
      stack.classList.toggle("heatmap-hidden", !toggle.checked);
    }
  });
})();

(function () {
  "use strict";

  var root = document.getElementById("case-live");
  if (!root || root.dataset.finished === "true") {
    return;
  }
  var url = root.dataset.statusUrl;
  var note = root.querySelector(".live-note");
  var INTERVAL_MS = 2000;
  var MAX_FAILURES = 5;
  var failures = 0;

  function setNote(text) {
    if (note) {
      note.textContent = text;
    }
  }

  function apply(data) {
    data.images.forEach(function (image) {
      var block = document.getElementById("image-" + image.id);
      if (!block) {
        return; // uploaded from elsewhere since this page loaded; shown on the next reload
      }
      var current = block.querySelector(".job-result");
      var status = image.job ? image.job.status : "none";
      if (current && current.dataset.jobStatus !== status) {
        current.outerHTML = image.html;
      }
    });
  }

  // The sign-off form was rendered before the AI result existed: replace it with the fresh one,
  // unless the radiologist has changed something in it since the page loaded (a choice the form
  // made itself, such as "override" when there was no AI result, does not count).
  function formState(section) {
    if (!section) {
      return null;
    }
    return Array.prototype.map.call(section.querySelectorAll("textarea, input, select"), function (field) {
      return field.name + "=" + ((field.type === "radio" || field.type === "checkbox") ? field.checked : field.value);
    }).join("&");
  }
  var signoffAsLoaded = formState(document.getElementById("report"));

  function refreshSignoff(html) {
    var section = document.getElementById("report");
    if (!html || !section) {
      return;
    }
    if (formState(section) === signoffAsLoaded) {
      section.outerHTML = html;
    }
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (response) {
        if (!response.ok || response.headers.get("Content-Type").indexOf("application/json") !== 0) {
          throw new Error("status " + response.status);
        }
        return response.json();
      })
      .then(function (data) {
        failures = 0;
        apply(data);
        if (data.finished) {
          root.dataset.finished = "true";
          setNote("All classifications finished.");
          refreshSignoff(data.signoff_html);
        } else {
          window.setTimeout(poll, INTERVAL_MS);
        }
      })
      .catch(function () {
        failures += 1;
        if (failures >= MAX_FAILURES) {
          setNote("Live updates stopped (the server did not answer). Reload the page to see the latest status.");
        } else {
          window.setTimeout(poll, INTERVAL_MS * (failures + 1));
        }
      });
  }

  window.setTimeout(poll, INTERVAL_MS);
})();
