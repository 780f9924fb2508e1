// seat-agent status page: open reduce workflows, approve/cancel through the admin JSON API.
// Same-origin fetch with the session cookie; X-Requested-With is the CSRF header the API
// demands of session-authenticated state changes. Every value is set with textContent.
(function () {
  "use strict";
  var section = document.getElementById("reductions");
  if (!section) { return; }
  var base = section.getAttribute("data-url");
  var status = document.getElementById("reductions-status");
  var table = document.getElementById("reductions-table");
  var body = table.querySelector("tbody");
  var FINAL = { done: true, cancelled: true, failed: true };
  var HEADERS = { "Accept": "application/json", "X-Requested-With": "fetch" };

  function showMessage(text) {
    status.textContent = text;
    status.hidden = false;
    table.hidden = true;
  }

  function when(iso) {
    var m = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(?:\.\d+)?(?:Z|\+00:00)$/.exec(iso || "");
    return m ? m[1] + " " + m[2] + " UTC" : (iso || "");
  }

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text === undefined || text === null ? "" : String(text);
    row.appendChild(td);
    return td;
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
    body.textContent = "";
    if (open.length === 0) { showMessage("no workflows"); return; }
    open.forEach(function (r) {
      var row = document.createElement("tr");
      row.className = "reduction-row";
      cell(row, r.id);
      cell(row, r.state);
      cell(row, r.target);
      cell(row, r.users);
      cell(row, when(r.updated || r.created));
      cell(row, r.reason);
      var actions = cell(row, "");
      if (r.state === "planned") { actions.appendChild(button("Approve", r.id, "approve")); }
      actions.appendChild(button("Cancel", r.id, "cancel"));
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
}());
