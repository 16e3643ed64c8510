// wl serve: live updates over Server-Sent Events. No board data is ever evaluated: the page's live region is
// swapped for the server-rendered (autoescaped) copy of the same page, parsed inertly with DOMParser.
(function () {
  "use strict";
  var synced = document.getElementById("synced");
  if (!synced || !window.EventSource || !window.fetch) { return; }
  var head = synced.getAttribute("data-head");
  var pending = false;
  var busy = false;

  function ago(iso) {
    var t = Date.parse(iso);
    if (isNaN(t)) { return ""; }
    var s = Math.max(0, Math.round((Date.now() - t) / 1000));
    return s < 60 ? s + " s ago" : Math.round(s / 60) + " min ago";
  }

  function showSynced(data) {
    if (data.synced_at) { synced.setAttribute("data-at", data.synced_at); }
    var at = synced.getAttribute("data-at");
    var text = at ? "synced " + ago(at) : "not synced yet";
    if (data.sync_error) { text += " · " + data.sync_error; }
    synced.textContent = text;
    synced.classList.toggle("stale", !!data.sync_error);
    synced.setAttribute("title", data.sync_error || ("fetched from the remote at " + at));
  }

  // Never swap the page under someone typing or choosing in a form (search box, filters, post form).
  function editing() {
    var el = document.activeElement;
    return !!(el && el.form);
  }

  function refresh() {
    if (busy) { pending = true; return; }
    if (editing()) { pending = true; return; }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Wl-Live": "1" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("live");
        var current = document.getElementById("live");
        if (fresh && current) {
          current.replaceWith(document.importNode(fresh, true));
          document.body.setAttribute("data-updated", String(Date.now()));
        }
      })
      .catch(function () { pending = true; })
      .then(function () {
        busy = false;
        if (pending) { pending = false; window.setTimeout(refresh, 500); }
      });
  }

  // One stream per open page; closed when the page is hidden, so pages kept in the back/forward cache do not
  // hold on to the browser's few connections per host.
  var source = null;
  function connect() {
    if (source) { return; }
    source = new EventSource("/events");
    source.addEventListener("sync", function (ev) {
      var data;
      try { data = JSON.parse(ev.data); } catch (e) { return; }
      showSynced(data);
      if (data.head && data.head !== head) { head = data.head; synced.setAttribute("data-head", head); refresh(); }
    });
  }
  window.addEventListener("pagehide", function () { if (source) { source.close(); source = null; } });
  window.addEventListener("pageshow", function () { connect(); });
  connect();
  window.setInterval(function () { showSynced({}); }, 5000);
  document.addEventListener("focusout", function () { if (pending) { pending = false; refresh(); } });
})();
