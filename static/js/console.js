// The instance page's web console and live console log.
//
// Web console (#terminal): "Open console" asks the API for a session (POST .../console
// with the page's CSRF token; the session cookie signs in), shows it with xterm.js and
//   - reads the output from the session's stream_url (EventSource: `output` events carry
//     base64 bytes, written to the terminal as bytes - never parsed as HTML; one `end`
//     event says why it ended, shown in the status line);
//   - sends keystrokes and pastes as POSTs to input_url, one request at a time: what is
//     typed meanwhile is batched into the next, so a fast typist or a big paste costs a
//     few requests, not one per key;
//   - fits the terminal to its box on window resize and POSTs the new size (debounced);
//   - closes the session when the page goes away (a keepalive DELETE).
// Copy and paste: Ctrl+Shift+C copies the selection, Ctrl+Shift+V or Ctrl+V (left to the
// browser's own paste, which xterm types) pastes; Ctrl+C with a selection copies too
// instead of interrupting.
//
// xterm.js adds <style> elements for its theme and cell sizes and sets some style
// attributes, which the page's Content-Security-Policy (style-src 'self') refuses. The
// same CSS goes through the CSSOM instead, which the policy allows (see shimStyles).
//
// Console log (pre[data-log-stream]): follows GET .../logs/stream; each `logs` event is
// {"data", "reset"}: reset replaces the text, otherwise it is appended (as text).
(function () {
  "use strict";

  function csrfToken() {
    try { return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRF-Token"] || ""; }
    catch (e) { return ""; }
  }

  function api(method, url, body, keepalive) {
    return fetch(url, {
      method: method, credentials: "same-origin", keepalive: !!keepalive,
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrfToken(),
                "Accept": "application/json"},
      body: body === undefined ? undefined : JSON.stringify(body)
    });
  }

  function toBase64(bytes) {
    var text = "";
    for (var i = 0; i < bytes.length; i += 0x8000) {
      text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(text);
  }

  function fromBase64(data) {
    var text = atob(data), bytes = new Uint8Array(text.length);
    for (var i = 0; i < text.length; i++) { bytes[i] = text.charCodeAt(i); }
    return bytes;
  }

  // -- xterm's styles, the CSP-compatible way -------------------------------------------
  // Installed once, when the first console opens (xterm makes some styles lazily, on its
  // first render or a theme change, so it stays for the page's life):
  //   document.createElement("style") gives an inert <template> standing in for it, whose
  //   textContent / innerText / sheet are a constructed CSSStyleSheet adopted by the
  //   document (removed with it); no <style> element ever enters the DOM;
  //   element.setAttribute("style", text) sets element.style.cssText instead (CSSOM).
  var stylesShimmed = false;

  function shimStyles() {
    if (stylesShimmed) { return true; }
    if (!("adoptedStyleSheets" in document) || typeof CSSStyleSheet !== "function") { return false; }
    var createElement = document.createElement;
    document.createElement = function (tag, options) {
      if (String(tag).toLowerCase() !== "style") { return createElement.call(document, tag, options); }
      return styleStandIn(createElement.call(document, "template"));
    };
    var setAttribute = Element.prototype.setAttribute;
    Element.prototype.setAttribute = function (name, value) {
      if (String(name).toLowerCase() === "style" && this.style) { this.style.cssText = String(value); return; }
      return setAttribute.call(this, name, value);
    };
    stylesShimmed = true;
    return true;
  }

  function styleStandIn(element) {
    var sheet = new CSSStyleSheet(), css = "";
    document.adoptedStyleSheets = document.adoptedStyleSheets.concat([sheet]);
    function set(value) { css = String(value); sheet.replaceSync(css); }
    function get() { return css; }
    Object.defineProperty(element, "textContent", {get: get, set: set});
    Object.defineProperty(element, "innerText", {get: get, set: set});
    Object.defineProperty(element, "sheet", {get: function () { return sheet; }});
    element.remove = function () {
      document.adoptedStyleSheets = document.adoptedStyleSheets.filter(function (s) { return s !== sheet; });
      if (element.parentNode) { element.parentNode.removeChild(element); }
    };
    return element;
  }

  // -- the web console ------------------------------------------------------------------
  function setUpConsole(card) {
    var openButton = card.querySelector("[data-console-open]");
    var closeButton = card.querySelector("[data-console-close]");
    var status = card.querySelector("[data-console-status]");
    var screen = card.querySelector("[data-console-screen]");
    var hint = card.querySelector("[data-console-hint]");
    if (!window.Terminal || !window.FitAddon || !window.EventSource || !window.fetch) { return; }
    openButton.hidden = false;
    var session = null;

    function say(text) { status.textContent = text; }

    function start() {
      openButton.disabled = true;
      say("Opening a console\u2026");
      var term, fit;
      screen.hidden = false;
      if (!shimStyles()) { say("This browser cannot show the console."); openButton.disabled = false; return; }
      term = new window.Terminal({cursorBlink: true, fontSize: 14, scrollback: 2000,
                                  fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace"});
      fit = new window.FitAddon.FitAddon();
      term.loadAddon(fit);
      term.open(screen);
      try { fit.fit(); } catch (e) { /* a hidden box: the default size */ }
      api("POST", card.dataset.consoleUrl, {cols: term.cols, rows: term.rows}).then(function (response) {
        return response.json().then(function (body) { return {response: response, body: body}; });
      }).then(function (answer) {
        if (answer.response.status !== 201) {
          var error = answer.body.error || {};
          throw new Error(error.message || ("The console could not be opened (" + answer.response.status + ")."));
        }
        attach(term, fit, answer.body.console);
      }).catch(function (error) {
        term.dispose();
        screen.hidden = true;
        openButton.disabled = false;
        say(error.message);
      });
    }

    function attach(term, fit, opened) {
      var pending = [], sending = false, ended = false, resizeTimer = null;
      var encoder = new TextEncoder();
      var stream = new EventSource(opened.stream_url);
      session = {opened: opened, term: term, stream: stream};
      card.dataset.consoleState = "open";
      closeButton.hidden = false;
      hint.hidden = false;
      say("Connected. " + "Type here; the session ends when the shell exits.");
      term.focus();

      function finish(message) {
        if (ended) { return; }
        ended = true;
        stream.close();
        window.removeEventListener("resize", onResize);
        card.dataset.consoleState = "ended";
        closeButton.hidden = true;
        openButton.disabled = false;
        openButton.textContent = "Open a new console";
        term.options.disableStdin = true;
        term.options.cursorBlink = false;
        say(message);
        session = null;
      }

      function flush() {
        if (sending || ended || !pending.length) { return; }
        var total = 0, i;
        for (i = 0; i < pending.length; i++) { total += pending[i].length; }
        var bytes = new Uint8Array(total), at = 0;
        for (i = 0; i < pending.length; i++) { bytes.set(pending[i], at); at += pending[i].length; }
        pending = [];
        sending = true;
        api("POST", opened.input_url, {data: toBase64(bytes)}).then(function (response) {
          sending = false;
          if (response.status === 410) { finish("The console session has ended."); return; }
          flush();
        }, function () { sending = false; setTimeout(flush, 500); });
      }

      function send(bytes) {
        // 48 KiB at most per request (the server takes 64 KiB).
        for (var at = 0; at < bytes.length; at += 49152) { pending.push(bytes.subarray(at, at + 49152)); }
        flush();
      }

      function onResize() {
        clearTimeout(resizeTimer);
        resizeTimer = setTimeout(function () { try { fit.fit(); } catch (e) { /* hidden */ } }, 100);
      }

      term.onData(function (data) { send(encoder.encode(data)); });
      term.onBinary(function (data) {
        var bytes = new Uint8Array(data.length);
        for (var i = 0; i < data.length; i++) { bytes[i] = data.charCodeAt(i) & 255; }
        send(bytes);
      });
      term.onResize(function (size) {
        if (!ended) { api("POST", opened.resize_url, {cols: size.cols, rows: size.rows}); }
      });
      term.attachCustomKeyEventHandler(function (event) {
        if (event.type !== "keydown") { return true; }
        var key = event.key.toLowerCase();
        var copy = event.ctrlKey && (event.shiftKey ? key === "c" : key === "c" && term.hasSelection());
        if (copy && navigator.clipboard) {
          navigator.clipboard.writeText(term.getSelection());
          event.preventDefault();
          return false;
        }
        if (event.ctrlKey && !event.shiftKey && !event.altKey && key === "v") {
          return false;  // not ^V: the browser's own paste, which xterm types
        }
        if (event.ctrlKey && event.shiftKey && key === "v" && navigator.clipboard) {
          navigator.clipboard.readText().then(function (text) { term.paste(text); });
          event.preventDefault();
          return false;
        }
        return true;
      });
      window.addEventListener("resize", onResize);
      stream.addEventListener("output", function (message) {
        try { term.write(fromBase64(JSON.parse(message.data).data)); } catch (e) { /* skip */ }
      });
      stream.addEventListener("end", function (message) {
        var body = {};
        try { body = JSON.parse(message.data); } catch (e) { /* the default below */ }
        card.dataset.consoleEnd = body.reason || "";
        finish(body.message || "The console session has ended.");
      });
      stream.onerror = function () {
        // EventSource reconnects by itself; a session that is gone answers 404/410.
        if (stream.readyState === EventSource.CLOSED) { finish("The connection to the console was lost."); }
      };
      closeButton.onclick = function () {
        api("DELETE", opened.stream_url.replace(/\/stream$/, ""));
        finish("You closed the console.");
      };
    }

    openButton.addEventListener("click", start);
    window.addEventListener("pagehide", function () {
      if (session) { api("DELETE", session.opened.stream_url.replace(/\/stream$/, ""), undefined, true); }
    });
  }

  // -- the live console log -------------------------------------------------------------
  var logStream = null;

  function followLog() {
    var pre = document.querySelector("pre[data-log-stream]");
    if (logStream && logStream.element === pre) { return; }
    if (logStream) { logStream.source.close(); logStream = null; }
    if (!pre || !window.EventSource) { return; }
    var source = new EventSource(pre.dataset.logStream);
    logStream = {element: pre, source: source};
    source.addEventListener("logs", function (message) {
      var body;
      try { body = JSON.parse(message.data); } catch (e) { return; }
      if (!document.body.contains(pre)) { source.close(); return; }
      var atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent = body.reset ? body.data : pre.textContent + body.data;
      pre.dataset.logLive = "true";
      if (pre.textContent) {
        pre.hidden = false;
        var empty = pre.parentNode.querySelector("[data-log-empty]");
        if (empty) { empty.remove(); }
      }
      if (atBottom) { pre.scrollTop = pre.scrollHeight; }
    });
  }

  function init() {
    var card = document.getElementById("terminal");
    if (card) { setUpConsole(card); }
    followLog();
    document.body.addEventListener("htmx:afterSettle", followLog);  // the card was redrawn
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); }
  else { init(); }
})();
