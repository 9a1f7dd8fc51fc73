(function () {
  "use strict";
  var table = document.getElementById("variants");
  if (!table) { return; }
  var body = table.tBodies[0];
  var heads = table.tHead.rows[0].cells;
  var rows = Array.prototype.slice.call(body.rows);
  function key(row, col) {
    var cell = row.cells[col];
    var v = cell.getAttribute("data-v");
    if (v !== null) { return v === "" ? null : parseFloat(v); }
    return cell.textContent.trim().toLowerCase();
  }
  function sortBy(col) {
    var th = heads[col];
    var asc = th.getAttribute("aria-sort") !== "ascending";
    for (var i = 0; i < heads.length; i++) { heads[i].removeAttribute("aria-sort"); }
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    rows.sort(function (a, b) {
      var x = key(a, col), y = key(b, col);
      if (x === y) { return 0; }
      if (x === null || (typeof x === "number" && isNaN(x))) { return 1; }   // missing values always last
      if (y === null || (typeof y === "number" && isNaN(y))) { return -1; }
      return (x < y ? -1 : 1) * (asc ? 1 : -1);
    });
    var frag = document.createDocumentFragment();
    rows.forEach(function (r) { frag.appendChild(r); });
    body.appendChild(frag);
  }
  for (var i = 0; i < heads.length; i++) {
    heads[i].addEventListener("click", sortBy.bind(null, i));
    heads[i].title = "click to sort";
  }
  var text = document.getElementById("filter");
  var sig = document.getElementById("sig-only");
  var shown = document.getElementById("shown");
  var qcol = parseInt(table.getAttribute("data-qcol"), 10);
  function filter() {
    var words = text.value.toLowerCase().split(/\s+/).filter(Boolean);
    var n = 0;
    rows.forEach(function (r) {
      var t = r.textContent.toLowerCase();
      var ok = words.every(function (w) { return t.indexOf(w) >= 0; });
      if (ok && sig && sig.checked) {
        var q = key(r, qcol);
        ok = q !== null && q < 0.05;
      }
      r.style.display = ok ? "" : "none";
      if (ok) { n++; }
    });
    shown.textContent = n + " of " + rows.length + " rows shown";
  }
  text.addEventListener("input", filter);
  if (sig) { sig.addEventListener("change", filter); }
  filter();
})();
