// mirror dashboard: refresh the page's data from the server every few seconds.
// The server renders (and HTML-escapes) everything; this only swaps in the new fragment,
// so the page works the same without it, just without refreshing.
(function () {
  "use strict";
  var every = Number(document.body.getAttribute("data-refresh") || 30) * 1000;
  var live = document.getElementById("live");
  var count = 0;
  function say(text, bad) {
    if (!live) return;
    live.textContent = text;
    live.className = bad ? "bad" : "";
  }
  function refresh() {
    fetch("/fragment", { cache: "no-store" })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      })
      .then(function (html) {
        document.getElementById("dash").innerHTML = html;
        count += 1;
        document.body.setAttribute("data-refreshed", String(count));
        say("live view · read-only · refreshed " + new Date().toLocaleTimeString());
      })
      .catch(function (e) {
        say("cannot reach the dashboard server (" + e.message + "); showing the last data", true);
      });
  }
  refresh();
  setInterval(refresh, every);
})();
