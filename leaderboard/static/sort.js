// xbench leaderboard: sortable tables and the all / correctly-classified switch. Plain JavaScript,
// no dependencies, works from file:// and on GitHub Pages.
(function () {
  "use strict";

  function cellValue(row, index) {
    var cell = row.cells[index];
    if (!cell) { return null; }
    var raw = cell.getAttribute("data-v");
    if (raw === null) { return cell.textContent.trim().toLowerCase(); }
    var v = parseFloat(raw);
    return isNaN(v) ? null : v;
  }

  // First click: best first (in the table's direction: data-hib="1" higher is better, "0" lower);
  // text columns A→Z. Next clicks reverse. Missing values always go last.
  function sortBy(table, th) {
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var numeric = th.getAttribute("data-type") !== "text";
    var state = th.getAttribute("aria-sort");
    var ascending;
    if (state === "ascending") { ascending = false; }
    else if (state === "descending") { ascending = true; }
    else {
      var hib = th.getAttribute("data-hib") || table.getAttribute("data-hib");
      ascending = numeric ? hib === "0" : true;
    }
    rows.sort(function (a, b) {
      var x = cellValue(a, index), y = cellValue(b, index);
      if (x === null && y === null) { return 0; }
      if (x === null) { return 1; }
      if (y === null) { return -1; }
      if (x < y) { return ascending ? -1 : 1; }
      if (x > y) { return ascending ? 1 : -1; }
      return 0;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(th.parentNode.children, function (other) { other.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }

  function setView(view) {
    document.querySelectorAll("[data-view]").forEach(function (el) {
      el.hidden = el.getAttribute("data-view") !== view;
    });
    document.querySelectorAll("input[name=view]").forEach(function (input) {
      input.checked = input.value === view;
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("table.sortable").forEach(function (table) {
      var head = table.tHead && table.tHead.rows[table.tHead.rows.length - 1];
      if (!head) { return; }
      Array.prototype.forEach.call(head.cells, function (th) {
        if (th.getAttribute("data-sort") === "none") { return; }
        th.tabIndex = 0;
        th.classList.add("sort-key");
        th.addEventListener("click", function () { sortBy(table, th); });
        th.addEventListener("keydown", function (e) {
          if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, th); }
        });
      });
    });
    var toggle = document.getElementById("view-toggle");
    if (toggle) {
      toggle.hidden = false;
      toggle.addEventListener("change", function (e) { setView(e.target.value); });
      setView(window.location.hash === "#correct" ? "correct" : "all");
    }
  });
}());
