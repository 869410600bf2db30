// Progressive touches; every page works without them.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  // <time data-local-time datetime="…">: add the viewer's local time after the UTC one.
  function localTimes(root) {
    root.querySelectorAll("time[data-local-time]:not([data-localised])").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when)) return;
      var local = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      el.setAttribute("data-localised", "");
      el.insertAdjacentText("afterend", " (" + local + " your time)");
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    var toggle = document.querySelector(".nav-toggle");
    var nav = document.getElementById("site-nav");
    if (toggle && nav) {
      toggle.addEventListener("click", function () {
        var open = nav.classList.toggle("open");
        toggle.setAttribute("aria-expanded", open ? "true" : "false");
      });
    }
  });
  // Fragments htmx swaps in (the dashboard's live panels) get the same treatment.
  document.addEventListener("htmx:afterSwap", function (event) { localTimes(event.target.parentNode || document); });
})();
