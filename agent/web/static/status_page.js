// seat-agent status page: reduce workflows (open ones with approve/cancel through the admin
// JSON API, finished ones with their outcome) and the auto-refresh of the server-rendered
// sections. Same-origin fetch with the session cookie; X-Requested-With is the CSRF header the
// API demands of session-authenticated state changes. Every value is set with textContent.
(function () {
  "use strict";
  var HEADERS = { "Accept": "application/json", "X-Requested-With": "fetch" };

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text === undefined || text === null ? "" : String(text);
    row.appendChild(td);
    return td;
  }

  function when(iso) {
    var m = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(?:\.\d+)?(?:Z|\+00:00)$/.exec(iso || "");
    return m ? m[1] + " " + m[2] + " UTC" : (iso || "");
  }

  // -- reduce workflows -------------------------------------------------------------------
  var workflows = (function () {
    var section = document.getElementById("reductions");
    if (!section) { return function () {}; }
    var base = section.getAttribute("data-url");
    var status = document.getElementById("reductions-status");
    var table = document.getElementById("reductions-table");
    var body = table.querySelector("tbody");
    var FINAL = { done: true, cancelled: true, failed: true };

    function showMessage(text) {
      status.textContent = text;
      status.hidden = false;
      table.hidden = true;
    }

    function outcome(r) {
      var users = r.users === 1 ? "1 user" : (r.users || 0) + " users";
      if (r.state === "done") {
        return (r.deactivated || 0) + " of " + users + " deactivated; licenses lowered to " + r.target;
      }
      // A stop's reason names it already ("cancelled by admin: ...", "verification timed out ...").
      if (r.state === "cancelled" || r.state === "failed") { return r.reason || r.state; }
      return r.reason || "";
    }

    function button(label, id, action) {
      var b = document.createElement("button");
      b.type = "button";
      b.textContent = label;
      b.className = "reduction-" + action;
      b.addEventListener("click", function () {
        if (window.confirm(label + " reduction " + id + "?")) { act(id, action, b); }
      });
      return b;
    }

    function render(reductions) {
      var open = reductions.filter(function (r) { return !FINAL[r.state]; });
      var finished = reductions.filter(function (r) { return FINAL[r.state]; });
      body.textContent = "";
      if (open.length + finished.length === 0) { showMessage("no workflows"); return; }
      open.concat(finished).forEach(function (r) {
        var row = document.createElement("tr");
        var done = !!FINAL[r.state];
        row.className = "reduction-row" + (done ? " finished" : "");
        row.setAttribute("data-state", r.state);
        cell(row, r.id);
        cell(row, r.state);
        cell(row, r.target);
        cell(row, r.users);
        cell(row, r.deactivated);
        cell(row, when(r.updated || r.created));
        var note = cell(row, outcome(r));
        note.className = "outcome" + (done ? " outcome-" + r.state : "");
        var actions = cell(row, "");
        if (r.state === "planned") { actions.appendChild(button("Approve", r.id, "approve")); }
        if (!done) { actions.appendChild(button("Cancel", r.id, "cancel")); }
        body.appendChild(row);
      });
      status.hidden = true;
      table.hidden = false;
    }

    function load() {
      fetch(base, { credentials: "same-origin", headers: HEADERS })
        .then(function (resp) {
          // 404: the reductions API is not wired on this server; 503: it is not configured.
          if (resp.status === 404 || resp.status === 503) { showMessage("no workflows"); return null; }
          if (resp.status === 401) { showMessage("Sign in to manage workflows."); return null; }
          if (!resp.ok) { showMessage("Could not load workflows (HTTP " + resp.status + ")."); return null; }
          return resp.json();
        })
        .then(function (data) {
          if (data) { render(Array.isArray(data.reductions) ? data.reductions : []); }
        })
        .catch(function () { showMessage("Could not load workflows."); });
    }

    function act(id, action, btn) {
      btn.disabled = true;
      fetch(base + "/" + encodeURIComponent(id) + "/" + action, {
        method: "POST", credentials: "same-origin", headers: HEADERS
      })
        .then(function (resp) {
          if (resp.ok) { load(); return null; }
          return resp.json().catch(function () { return {}; }).then(function (err) {
            btn.disabled = false;
            window.alert((err && err.error) || ("HTTP " + resp.status));
          });
        })
        .catch(function () { btn.disabled = false; window.alert("Request failed."); });
    }

    load();
    return load;
  }());

  // -- user search ------------------------------------------------------------------------
  // GET /admin/users with the same filters as the API (state, q) and its cursor for "More".
  (function () {
    var section = document.getElementById("users");
    var form = document.getElementById("user-search");
    if (!section || !form) { return; }
    var base = section.getAttribute("data-url");
    var status = document.getElementById("users-status");
    var table = document.getElementById("users-table");
    var body = table.querySelector("tbody");
    var more = document.getElementById("users-more");
    var query = null;
    var cursor = null;

    function say(text, isError) {
      status.textContent = text;
      status.className = isError ? "error" : "hint";
      if (isError) { status.setAttribute("role", "alert"); } else { status.removeAttribute("role"); }
    }

    function row(u) {
      var tr = document.createElement("tr");
      tr.className = "user-row";
      tr.setAttribute("data-id", u.id);
      cell(tr, u.userName);
      cell(tr, u.displayName);
      cell(tr, u.email);
      cell(tr, u.externalId);
      cell(tr, u.active ? "yes" : "no");
      cell(tr, u.licenseState).className = "seat-" + u.licenseState;
      cell(tr, u.appStatus);
      cell(tr, when(u.seatSince));
      cell(tr, when(u.lastActivity));
      body.appendChild(tr);
    }

    function fetchPage(append) {
      var params = new URLSearchParams();
      if (query.state) { params.set("state", query.state); }
      if (query.q) { params.set("q", query.q); }
      params.set("count", section.getAttribute("data-count") || "50");
      if (append && cursor) { params.set("cursor", cursor); }
      more.disabled = true;
      say(append ? "Loading more…" : "Searching…", false);
      fetch(base + "?" + params.toString(), { credentials: "same-origin", headers: HEADERS })
        .then(function (resp) {
          return resp.json().catch(function () { return {}; }).then(function (data) {
            return { resp: resp, data: data };
          });
        })
        .then(function (r) {
          more.disabled = false;
          if (r.resp.status === 401) { say("Sign in again to search users.", true); return; }
          if (!r.resp.ok) {
            say((r.data && r.data.error) || ("Search failed (HTTP " + r.resp.status + ")."), true);
            return;
          }
          if (!append) { body.textContent = ""; }
          var users = Array.isArray(r.data.users) ? r.data.users : [];
          users.forEach(row);
          cursor = r.data.nextCursor || null;
          more.hidden = !cursor;
          var shown = body.children.length;
          table.hidden = shown === 0;
          if (shown === 0) {
            say("No user matches" + (query.q ? " \u201c" + query.q + "\u201d" : "") +
              (query.state ? " among " + query.state + " users" : "") + ".", false);
          } else {
            say(shown + (shown === 1 ? " user" : " users") + (cursor ? " so far; More shows the next ones." : "."), false);
          }
        })
        .catch(function () { more.disabled = false; say("Search failed: no answer from the agent.", true); });
    }

    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      query = {
        q: document.getElementById("user-q").value.trim(),
        state: document.getElementById("user-state").value
      };
      cursor = null;
      fetchPage(false);
    });
    more.addEventListener("click", function () { if (query) { fetchPage(true); } });
  }());

  // -- auto-refresh -----------------------------------------------------------------------
  // The server renders every figure; a refresh fetches the page again and swaps the sections
  // marked data-live, so the search box, open <details> and the scroll position stay put.
  (function () {
    var page = document.getElementById("page");
    var state = document.getElementById("refresh-state");
    var button = document.getElementById("refresh-now");
    if (!page || !state || !button) { return; }
    var seconds = parseInt(page.getAttribute("data-refresh"), 10) || 0;
    var normal = state.textContent;
    var busy = false;
    var timer = null;

    function nowUtc() {
      return new Date().toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
    }

    function stale(reason, stop) {
      var shown = document.getElementById("updated-at");
      state.textContent = "Could not refresh at " + nowUtc() + " (" + reason + "); the figures are from " +
        (shown ? shown.textContent : "earlier") + "." + (stop ? "" : " Retrying.");
      state.className = "stale";
      state.setAttribute("role", "alert");
    }

    function swap(doc) {
      document.querySelectorAll("[data-live]").forEach(function (old) {
        var fresh = doc.getElementById(old.id);
        if (!fresh) { return; }
        var opened = Array.prototype.map.call(old.querySelectorAll("details"), function (d) { return d.open; });
        var node = document.importNode(fresh, true);
        Array.prototype.forEach.call(node.querySelectorAll("details"), function (d, i) {
          if (opened[i]) { d.open = true; }
        });
        old.replaceWith(node);
      });
    }

    function refresh() {
      if (busy) { return; }
      busy = true;
      button.disabled = true;
      fetch(window.location.pathname + window.location.search, {
        credentials: "same-origin", headers: { "Accept": "text/html" }
      })
        .then(function (resp) {
          if (resp.redirected && /\/admin\/login/.test(resp.url)) {
            return { problem: "signed out: reload the page to sign in again", stop: true };
          }
          if (!resp.ok) { return { problem: "HTTP " + resp.status }; }
          return resp.text().then(function (html) { return { html: html }; });
        })
        .then(function (result) {
          if (result.html === undefined) {
            stale(result.problem, result.stop);
            if (result.stop && timer) { window.clearInterval(timer); timer = null; }
            return;
          }
          swap(new DOMParser().parseFromString(result.html, "text/html"));
          state.textContent = normal;
          state.className = "hint";
          state.removeAttribute("role");
          workflows();
        })
        .catch(function () { stale("no answer from the agent", false); })
        .then(function () { busy = false; button.disabled = false; });
    }

    button.addEventListener("click", refresh);
    if (seconds > 0) { timer = window.setInterval(refresh, seconds * 1000); }
  }());
}());
