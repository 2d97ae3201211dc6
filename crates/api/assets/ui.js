// The dashboard's own script: local times, confirmations, the presigned upload.
(function () {
  "use strict";
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d.getTime())) {
        t.title = t.getAttribute("datetime");
        t.textContent = d.toLocaleString();
      }
    });
  }
  function status(text) {
    var s = document.getElementById("upload-status");
    if (s) s.textContent = text;
  }
  async function upload(form) {
    var file = document.getElementById("file").files[0];
    if (!file) { status("Choose a CSV file first."); return; }
    status("Asking for an upload URL…");
    var r = await fetch("/ui/upload-url?filename=" + encodeURIComponent(file.name), { credentials: "same-origin" });
    if (!r.ok) { status("The upload URL was refused (HTTP " + r.status + ")."); return; }
    var u = await r.json();
    status("Uploading " + file.size + " bytes to S3…");
    var put = await fetch(u.upload_url, { method: "PUT", body: file, headers: { "Content-Type": "text/csv" } });
    if (!put.ok) { status("S3 refused the upload (HTTP " + put.status + ")."); return; }
    form.querySelector("input[name=s3_key]").value = u.s3_key;
    status("Uploaded; creating the import…");
    form.submit();
  }
  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    var tz = document.getElementById("tz");
    if (tz && window.Intl) tz.textContent = Intl.DateTimeFormat().resolvedOptions().timeZone + " (your browser's time zone)";
    document.querySelectorAll("form[data-confirm]").forEach(function (f) {
      f.addEventListener("submit", function (e) {
        if (!window.confirm(f.getAttribute("data-confirm"))) { e.preventDefault(); return; }
        if (f.id === "import-form") {
          e.preventDefault();
          upload(f).catch(function (err) { status("The upload failed: " + err); });
        }
      });
    });
  });
  document.addEventListener("htmx:afterSettle", function () { localTimes(document); });
})();
