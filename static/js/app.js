// The dashboard's few behaviours, in one file because the Content-Security-Policy allows
// scripts only from our own files: no inline <script>, no onclick=, no hx-on. Templates
// ask for a behaviour with a data- attribute:
//   data-copy="INPUT_ID"        a hidden Copy button that copies that input's value
//   data-autosubmit             a <select> whose form is sent when it changes
//   data-choose="NAME=VALUE"    an input that ticks the radio NAME=VALUE of its form
//   data-confirm="QUESTION"     a form sent only once the question is answered yes
//   data-notice                 a notice shown once: dropped from the address bar when
//                               shown, and removed when a later action posts
//   #create-instance            greys out the plans too small for the chosen app/image
// Every page works without JavaScript; these only make it nicer.
(function () {
  "use strict";

  // htmx leaves 4xx answers unswapped. A dashboard fragment that shows a form error is
  // sent at its real status with X-Error-Fragment (appliance/web/forms.py), and is
  // swapped in like any other answer.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var xhr = event.detail.xhr;
    if (xhr.status >= 400 && xhr.getResponseHeader("X-Error-Fragment")) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  // A later action (anything but a GET, such as a poll) makes the notices on the page
  // stale: the answer brings its own.
  document.addEventListener("htmx:beforeRequest", function (event) {
    var verb = (event.detail.requestConfig && event.detail.requestConfig.verb) || "get";
    if (verb.toLowerCase() === "get") { return; }
    document.querySelectorAll("[data-notice]").forEach(function (notice) {
      notice.remove();
    });
  });

  // A notice (?notice=) and a secret's ticket (?shown=, appliance/web/reveal.py) belong
  // to the one answer a post redirected to: a reload or a copied link shows neither.
  function dropNoticeFromAddress() {
    if (!window.history.replaceState || !window.URLSearchParams) { return; }
    var url = new URL(window.location.href);
    if (!url.searchParams.has("notice") && !url.searchParams.has("shown")) { return; }
    url.searchParams.delete("notice");
    url.searchParams.delete("shown");
    window.history.replaceState(window.history.state, "", url.pathname + url.search + url.hash);
  }

  function copyButtons(root) {
    root.querySelectorAll("button[data-copy]").forEach(function (button) {
      var input = document.getElementById(button.dataset.copy);
      var status = document.getElementById(button.dataset.copyStatus);
      var name = button.dataset.copyName || "secret";
      if (!input || button.dataset.copyReady) { return; }
      button.dataset.copyReady = "1";
      function said(ok) {
        if (!status) { return; }
        status.textContent = ok ? "Copied to the clipboard."
          : "Press Ctrl+C (\u2318C on a Mac) to copy the selected " + name + ".";
      }
      input.addEventListener("focus", function () { input.select(); });
      button.hidden = false;
      button.addEventListener("click", function () {
        input.focus();
        input.select();
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(input.value).then(function () { said(true); },
            function () { said(document.execCommand("copy")); });
        } else {
          said(document.execCommand("copy"));
        }
      });
    });
  }

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.matches && target.matches("select[data-autosubmit]") && target.form) {
      if (target.form.requestSubmit) { target.form.requestSubmit(); } else { target.form.submit(); }
    }
  });

  document.addEventListener("input", function (event) {
    var target = event.target;
    var wanted = target.dataset && target.dataset.choose;
    if (!wanted || !target.form) { return; }
    var parts = wanted.split("=");
    var radio = target.form.querySelector(
      'input[type="radio"][name="' + parts[0] + '"][value="' + parts[1] + '"]');
    if (radio) { radio.checked = true; }
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.dataset && form.dataset.confirm;
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });

  // Choosing an app (or an image with a large minimum disk) greys out the plans that
  // are too small for it. Only a convenience: the server refuses a plan too small.
  function instanceForm() {
    var form = document.getElementById("create-instance");
    if (!form) { return; }
    function fits(plan, source) {
      var need = source.dataset;
      return +plan.dataset.vcpus >= +(need.minVcpus || 0) &&
             +plan.dataset.memory >= +(need.minMemory || 0) &&
             +plan.dataset.disk >= +(need.minDisk || 0);
    }
    function update() {
      var source = form.querySelector('input[name="source"]:checked');
      form.querySelectorAll('input[name="plan_id"]').forEach(function (plan) {
        var ok = !source || fits(plan, source);
        plan.disabled = !ok;
        plan.closest(".choice-card").classList.toggle("too-small", !ok);
        if (!ok && plan.checked) { plan.checked = false; }
      });
    }
    form.addEventListener("change", function (event) {
      if (event.target.name === "source") { update(); }
    });
    update();
  }

  function start() {
    dropNoticeFromAddress();
    copyButtons(document);
    instanceForm();
  }

  document.addEventListener("htmx:load", function (event) { copyButtons(event.detail.elt); });
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
