// Live alert list: the server pushes one event per alert change (server-sent
// events); the list is then fetched again with the same filters, so what is
// shown is always what the query service answers. Checked boxes survive.
(function () {
  "use strict";
  var live = document.getElementById("alerts-live");
  if (!live) return;
  var query = live.getAttribute("data-query") || "";
  var timer = null;

  function checked() {
    return Array.prototype.map.call(
      live.querySelectorAll("input[name=id]:checked"), function (b) { return b.value; });
  }

  function refresh() {
    timer = null;
    var keep = checked();
    fetch("/alerts/table" + query, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) { window.location = "/login"; return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html === null) return;
        live.innerHTML = html;
        keep.forEach(function (id) {
          var b = live.querySelector("input[name=id][value=\"" + CSS.escape(id) + "\"]");
          if (b) b.checked = true;
        });
        document.body.setAttribute("data-refreshed", String(Date.now()));
      });
  }

  live.addEventListener("change", function (e) {
    if (e.target && e.target.id === "select-all") {
      live.querySelectorAll("input[name=id]").forEach(function (b) { b.checked = e.target.checked; });
    }
  });

  var source = new EventSource("/alerts/events" + query);
  source.addEventListener("ready", function () { document.body.setAttribute("data-live", "ready"); });
  source.addEventListener("alert", function () {
    // Several changes within 150 ms make one refresh.
    if (timer === null) timer = setTimeout(refresh, 150);
  });
  source.onerror = function () { document.body.setAttribute("data-live", "reconnecting"); };
})();
