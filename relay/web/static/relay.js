// relay's admin page: live updates over server-sent events, and the copy buttons. The page works without it.
// Everything shown comes from relay's own server-rendered fragments; this script only moves them into place.
(function () {
  "use strict";
  var body = document.body;
  var mode = body.dataset.live;
  var after = body.dataset.after || "0";
  var status = document.getElementById("live");
  var seq = 0;
  var latest = {};
  var overviewTimer = null;

  function say(text, on) {
    if (!status) return;
    status.hidden = false;
    status.textContent = text;
    status.classList.toggle("on", !!on);
  }

  function keyOf(taskId, deliveryId) {
    return taskId !== null && taskId !== undefined ? "task:" + taskId : "delivery:" + deliveryId;
  }

  function findCard(list, key) {
    var cards = list.querySelectorAll("article.card[data-key]");
    for (var i = 0; i < cards.length; i++) {
      if (cards[i].dataset.key === key) return cards[i];
    }
    return null;
  }

  function fragment(html) {
    var tpl = document.createElement("template");
    tpl.innerHTML = html.trim();
    return tpl.content.firstElementChild;
  }

  // Fetch a fragment; drop the answer when a newer request for the same thing was made meanwhile.
  function fetchLatest(name, url, apply) {
    var mine = ++seq;
    latest[name] = mine;
    fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) { return r.status === 200 ? r.text() : (r.status === 204 ? "" : null); })
      .then(function (html) { if (html !== null && latest[name] === mine) apply(html); })
      .catch(function () { /* the stream's reconnect refreshes what was missed */ });
  }

  function refreshCard(taskId, deliveryId, mayAdd) {
    var list = document.getElementById("tasks");
    if (!list) return;
    var key = keyOf(taskId, deliveryId);
    var add = mayAdd && (list.dataset.page || "1") === "1";  // new cards only on the first page
    if (!findCard(list, key) && !add) return;
    var params = new URLSearchParams(location.search);
    params.delete("page");
    if (taskId !== null && taskId !== undefined) params.set("task", taskId);
    else params.set("delivery", String(deliveryId));
    fetchLatest(key, "/partials/card?" + params.toString(), function (html) {
      var existing = findCard(list, key);
      if (!html) {  // no longer matches the filters
        if (existing) existing.parentElement.remove();
        return;
      }
      var card = fragment(html);
      if (!card) return;
      if (existing && !add) {
        existing.replaceWith(card);
        return;
      }
      if (existing) existing.parentElement.remove();
      var item = document.createElement("li");
      item.appendChild(card);
      list.prepend(item);
      card.classList.add("fresh");
      var empty = document.getElementById("empty");
      if (empty) empty.remove();
    });
  }

  function refreshOverview() {
    clearTimeout(overviewTimer);
    overviewTimer = setTimeout(function () {
      var box = document.getElementById("overview");
      if (box) fetchLatest("overview", "/partials/overview", function (html) { if (html) box.innerHTML = html; });
    }, 500);
  }

  function refreshTask() {
    var box = document.getElementById("task-body");
    if (!box) return;
    var params = new URLSearchParams();
    var key = body.dataset.key || "";
    if (key.indexOf("task:") === 0) params.set("task", key.slice(5));
    else params.set("delivery", key.slice(9));
    fetchLatest("task", "/partials/task?" + params.toString(), function (html) {
      if (!html) return;
      var open = [];
      box.querySelectorAll("li.delivery details[open]").forEach(function (d) {
        open.push(d.closest("li.delivery").id + " " + d.className);
      });
      box.innerHTML = html;
      box.querySelectorAll("li.delivery details").forEach(function (d) {
        if (open.indexOf(d.closest("li.delivery").id + " " + d.className) >= 0) d.open = true;
      });
      showCopyButtons(box);
    });
  }

  function concerns(taskId, deliveryId) {
    return keyOf(taskId, deliveryId) === body.dataset.key;
  }

  function onDelivery(ev) {
    if (ev.lastEventId) after = ev.lastEventId;
    var d = JSON.parse(ev.data);
    if (mode === "index") {
      refreshCard(d.task_id, d.id, true);
      refreshOverview();
    } else if (mode === "task" && concerns(d.task_id, d.id)) {
      refreshTask();
    }
  }

  function onJob(ev) {
    var j = JSON.parse(ev.data);
    if (mode === "index") {
      if (j.task_id !== null && j.task_id !== undefined) refreshCard(j.task_id, null, false);
      refreshOverview();
    } else if (mode === "task" && j.task_id !== null && concerns(j.task_id, null)) {
      refreshTask();
    }
  }

  function refreshAll() {
    if (mode === "task") { refreshTask(); return; }
    var list = document.getElementById("tasks");
    if (list) {
      list.querySelectorAll("article.card[data-key]").forEach(function (card) {
        var key = card.dataset.key;
        if (key.indexOf("task:") === 0) refreshCard(key.slice(5), null, false);
      });
    }
    refreshOverview();
  }

  function connect() {
    var source = new EventSource("/events?after=" + encodeURIComponent(after));
    var broken = false;
    source.addEventListener("delivery", onDelivery);
    source.addEventListener("job", onJob);
    source.addEventListener("watch", onJob);  // the watch list and the archive publish with a task_id too
    source.addEventListener("archive", onJob);
    source.addEventListener("open", function () {
      say("live", true);
      if (broken) refreshAll();  // job changes are not replayed: fetch what may have moved meanwhile
      broken = false;
    });
    source.addEventListener("error", function () {
      broken = true;
      say("reconnecting…", false);
      if (source.readyState === EventSource.CLOSED) {  // refused outright: try again with a fresh stream
        setTimeout(connect, 5000);
      }
    });
  }

  function showCopyButtons(root) {
    root.querySelectorAll("button.copy[data-copy]").forEach(function (b) { b.hidden = false; });
  }

  document.addEventListener("click", function (ev) {
    var button = ev.target.closest ? ev.target.closest("button.copy[data-copy]") : null;
    if (!button) return;
    fetch(button.dataset.copy, { credentials: "same-origin" })
      .then(function (r) { return r.text(); })
      .then(function (text) {
        if (navigator.clipboard && window.isSecureContext) {
          return navigator.clipboard.writeText(text.trim()).then(function () { button.textContent = "Copied"; });
        }
        var pre = button.closest("details").querySelector("pre code");
        pre.textContent = text.trim();
        window.getSelection().selectAllChildren(pre);
        button.textContent = "Selected: press Ctrl+C";
      })
      .catch(function () { button.textContent = "Could not copy"; });
  });

  showCopyButtons(document);
  if (mode && window.EventSource) connect();
})();
