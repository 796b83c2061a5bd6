// Leadwerk admin: fetch the live part of the dashboard again every few seconds.
// A GET only shows; buttons are plain forms that POST with the page's CSRF token.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) return;
  var seconds = parseInt(live.getAttribute("data-refresh"), 10) || 10;
  function open() {
    // Keep the MQL explanations a person has opened open across refreshes.
    var ids = [];
    live.querySelectorAll("details[open]").forEach(function (d) {
      ids.push(d.getAttribute("data-lead"));
    });
    return ids;
  }
  function refresh() {
    fetch("/admin/live", { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 401) { window.location.reload(); return null; }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html === null) return;
        var keep = open();
        live.innerHTML = html;
        keep.forEach(function (id) {
          var d = live.querySelector('details[data-lead="' + id + '"]');
          if (d) d.open = true;
        });
      })
      .catch(function () { /* the next refresh tries again */ });
  }
  setInterval(refresh, seconds * 1000);
})();
