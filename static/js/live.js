// Live updates for the dashboard, without polling: one EventSource on
// /api/v1/events/stream (the signed-in user's events, by the session cookie) turns each
// event into htmx triggers on <body>:
//   notifications-changed  every event (the bell and the notifications list refresh), and
//                          notification.created (an administrator's notice of another
//                          account's failed job)
//   instance-changed       instance.*, job.*, backup.* (instance list and state card)
//   instance-settled       job.* and instance.ready/failed (events and console cards)
// The server ends a stream after a few minutes; EventSource reconnects by itself with
// Last-Event-ID. A refused stream (429: the server is at its cap) is retried after a
// pause; a stream replaced by a newer tab's waits the minute the server asks. Without
// JavaScript the pages still work; they just do not follow along.
(function () {
  "use strict";
  var body = document.body;
  if (!window.EventSource || !body || !body.dataset.liveEvents) { return; }
  var types = body.dataset.liveEvents.split(" ");
  var RETRY_MS = 15000;

  function fire(name, detail) {
    if (window.htmx) { window.htmx.trigger(body, name, detail); }
  }

  function onEvent(message) {
    var type = message.type, event = {};
    try { event = JSON.parse(message.data); } catch (e) { return; }
    var detail = {type: type, project_id: event.project_id, id: event.id};
    body.dataset.liveLastEvent = type;
    fire("live-event", detail);
    fire("notifications-changed", detail);
    var family = type.split(".")[0];
    if (family === "instance" || family === "job" || family === "backup") {
      fire("instance-changed", detail);
    }
    if (family === "job" || type === "instance.ready" || type === "instance.failed") {
      fire("instance-settled", detail);
    }
  }

  function connect() {
    var source = new EventSource(body.dataset.liveUrl || "/api/v1/events/stream");
    types.forEach(function (type) { source.addEventListener(type, onEvent); });
    source.addEventListener("notification.created", function (message) {
      body.dataset.liveLastEvent = message.type;
      fire("notifications-changed", {type: message.type});
    });
    source.addEventListener("open", function () { body.dataset.live = "on"; });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED) {  // refused, not a normal reconnect
        body.dataset.live = "off";
        window.setTimeout(connect, RETRY_MS);
      }
    });
    window.addEventListener("pagehide", function () { source.close(); });
  }

  connect();
})();
