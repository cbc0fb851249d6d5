// Yunying console: draw the embedded Plotly figures, show a loading state while a form is
// computed, copy buttons, snippet tabs and the funnel step editor. No framework.
(function () {
  "use strict";

  function drawCharts() {
    document.querySelectorAll("[data-chart]").forEach(function (el) {
      var source = document.getElementById(el.getAttribute("data-chart"));
      if (!source) return;
      var fig = JSON.parse(source.textContent);
      if (!window.Plotly) {
        el.textContent = el.getAttribute("data-no-plotly") || "Chart library failed to load.";
        return;
      }
      window.Plotly.newPlot(el, fig.data, fig.layout, {
        responsive: true, displaylogo: false,
        modeBarButtonsToRemove: ["select2d", "lasso2d", "sendDataToCloud"]
      });
    });
  }

  function loadingOnSubmit() {
    var overlay = document.getElementById("loading");
    document.querySelectorAll("form[data-loading]").forEach(function (form) {
      form.addEventListener("submit", function () { if (overlay) overlay.hidden = false; });
    });
    // coming back with the browser's back button must not leave the overlay up
    window.addEventListener("pageshow", function () { if (overlay) overlay.hidden = true; });
  }

  function copyButtons() {
    document.querySelectorAll("[data-copy]").forEach(function (btn) {
      btn.addEventListener("click", function () {
        var target = document.querySelector(btn.getAttribute("data-copy"));
        if (!target) return;
        var text = target.textContent;
        var done = function () { btn.classList.add("copied"); };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(done, function () {});
        } else {
          var range = document.createRange();
          range.selectNodeContents(target);
          var sel = window.getSelection();
          sel.removeAllRanges();
          sel.addRange(range);
          done();
        }
      });
    });
  }

  function tabs() {
    document.querySelectorAll("[data-tab]").forEach(function (tab) {
      tab.addEventListener("click", function () {
        document.querySelectorAll("[data-tab]").forEach(function (t) {
          var on = t === tab;
          t.classList.toggle("active", on);
          var panel = document.getElementById(t.getAttribute("data-tab"));
          if (panel) panel.hidden = !on;
        });
      });
    });
  }

  function funnelSteps() {
    var list = document.getElementById("funnel-steps");
    var add = document.getElementById("add-step");
    if (!list || !add) return;
    function wire(li) {
      var remove = li.querySelector(".remove-step");
      if (remove) remove.addEventListener("click", function () {
        if (list.querySelectorAll("li").length > 2) li.remove();
      });
    }
    list.querySelectorAll("li").forEach(wire);
    add.addEventListener("click", function () {
      var items = list.querySelectorAll("li");
      if (items.length >= 10) return;
      var copy = items[items.length - 1].cloneNode(true);
      list.appendChild(copy);
      wire(copy);
    });
  }

  function autoSubmit() {
    // selects that apply at once (project switch, a member's role): no inline handlers, so the
    // Content-Security-Policy can forbid inline script
    document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
  }

  drawCharts();
  autoSubmit();
  loadingOnSubmit();
  copyButtons();
  tabs();
  funnelSteps();
})();
