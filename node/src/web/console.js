// ecointegra web console: progress for uploads, live refresh, print buttons.
// Every page works without it; it only makes them nicer.
(function () {
  "use strict";

  // Forms marked data-upload send through XMLHttpRequest to show progress.
  document.querySelectorAll("form[data-upload]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var bar = form.querySelector("[data-progress]");
      var text = form.querySelector("[data-progress-text]");
      var button = form.querySelector("button[type=submit]");
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.upload.addEventListener("progress", function (e) {
        if (!e.lengthComputable) return;
        var percent = Math.round((e.loaded / e.total) * 100);
        if (bar) { bar.hidden = false; bar.value = percent; }
        if (text) text.textContent = percent + " %";
      });
      xhr.addEventListener("load", function () {
        var landed = xhr.responseURL || form.action;
        if (xhr.status >= 200 && xhr.status < 300 && landed !== form.action) {
          window.location.assign(landed);
          return;
        }
        // The server answered with the form and its errors: show that page.
        document.open();
        document.write(xhr.responseText);
        document.close();
      });
      xhr.addEventListener("error", function () {
        if (text) text.textContent = document.documentElement.lang === "en"
          ? "The upload failed; nothing was stored. Try again."
          : "La carga falló; no se guardó nada. Inténtelo de nuevo.";
        if (button) button.disabled = false;
      });
      if (button) button.disabled = true;
      if (bar) { bar.hidden = false; bar.value = 0; }
      xhr.send(new FormData(form));
    });
  });

  // Regions marked data-refresh reload their content every data-every ms.
  document.querySelectorAll("[data-refresh]").forEach(function (region) {
    var every = parseInt(region.getAttribute("data-every"), 10) || 5000;
    var url = region.getAttribute("data-refresh");
    setInterval(function () {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) { region.innerHTML = html; region.setAttribute("data-refreshed", Date.now()); })
        .catch(function () { /* keep what is shown; the next tick retries */ });
    }, every);
  });

  document.querySelectorAll("[data-print]").forEach(function (button) {
    button.addEventListener("click", function () { window.print(); });
  });

  // After a form came back with errors, put the reader on the summary.
  var summary = document.querySelector(".error-summary");
  if (summary) summary.focus();
})();
