/* Descent dashboard: the live charts (Chart.js, from static/vendor/chartjs). */
(function () {
  "use strict";
  var POLL_MS = 1500;
  var COLORS = ["#2f6fde", "#d9480f", "#2b8a3e", "#ae3ec9", "#e67700", "#0c8599",
                "#c2255c", "#5c940d", "#495057", "#1864ab", "#862e9c", "#a61e4d"];

  function fetchJson(url) {
    return fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (r) {
        if (!r.ok) {
          var error = new Error(url + ": HTTP " + r.status);
          error.status = r.status;
          throw error;
        }
        return r.json();
      });
  }

  function points(history, key) {
    return history.filter(function (row) { return row[key] !== null; })
      .map(function (row) { return {x: row.epoch, y: row[key]}; });
  }

  function logScale(datasets) {
    // A log axis shows training curves best, but only holds positive values.
    return datasets.every(function (d) {
      return d.data.every(function (p) { return p.y > 0; });
    }) && datasets.some(function (d) { return d.data.length > 0; });
  }

  function shortNumber(v) {
    if (v === 0) { return "0"; }
    var a = Math.abs(v);
    return (a < 1e-3 || a >= 1e5) ? v.toExponential(0) : String(Number(v.toPrecision(3)));
  }

  function errorTick(value, index, ticks) {
    // Chart.js's own choice of which log ticks get a label, in a shorter form.
    var scale = this;
    if (scale.type === "logarithmic") {
      var label = Chart.Ticks.formatters.logarithmic.call(scale, value, index, ticks);
      return label === "" ? "" : shortNumber(value);
    }
    return shortNumber(value);
  }

  function makeChart(canvas, legend) {
    return new Chart(canvas, {
      type: "line",
      data: {datasets: []},
      options: {
        animation: false, responsive: true, maintainAspectRatio: false, parsing: false,
        interaction: {mode: "nearest", intersect: false},
        elements: {point: {radius: 0, hitRadius: 6}, line: {borderWidth: 1.8}},
        scales: {x: {type: "linear", min: 0, title: {display: true, text: "epoch"}},
                 y: {type: "logarithmic", title: {display: true, text: "error"},
                     ticks: {callback: errorTick}}},
        plugins: {legend: {display: legend, position: "bottom",
                           labels: {boxWidth: 12, font: {size: 11}}}}
      }
    });
  }

  function setData(chart, datasets) {
    chart.data.datasets = datasets;
    chart.options.scales.y.type = logScale(datasets) ? "logarithmic" : "linear";
    chart.update();
  }

  function poll(canvas, refresh) {
    var final = canvas.dataset.final === "true";
    function tick() {
      fetchJson(canvas.dataset.url).then(function (data) {
        refresh(data);
        if (data.final && !final) {
          // The run (or sweep) just ended: reload once for its final summary.
          window.location.reload();
        } else if (!data.final) {
          window.setTimeout(tick, POLL_MS);
        }
      }).catch(function (err) {
        if (err.status === 401 || err.status === 404) {
          window.location.reload();  // logged out (or the token revoked): the login page
          return;
        }
        console.error(err);
        window.setTimeout(tick, POLL_MS * 4);
      });
    }
    tick();
  }

  function showStatus(badge, status) {
    if (badge && badge.textContent !== status.replace("_", " ")) {
      badge.className = "status status-" + status;
      badge.textContent = status.replace("_", " ");
    }
  }

  function runCurve(canvas) {
    var chart = makeChart(canvas, false);
    var done = document.getElementById("epochs-done");
    var note = document.getElementById("curve-note");
    chart.options.scales.x.max = Number(canvas.dataset.epochs);
    setData(chart, []);
    poll(canvas, function (data) {
      var sets = [{label: "training error", data: points(data.history, "error"),
                   borderColor: COLORS[0], backgroundColor: COLORS[0]}];
      var val = points(data.history, "val_error");
      if (val.length) {
        sets.push({label: "validation error", data: val, borderColor: COLORS[1],
                   backgroundColor: COLORS[1]});
      }
      // A run evaluated every k epochs (eval_every) has a row per evaluation only: mark
      // the points, so the straight lines between them read as interpolation.
      var sparse = sets[0].data.length > 1 && sets[0].data.length <= 200 &&
        sets[0].data[sets[0].data.length - 1].x >= 2 * sets[0].data.length;
      sets.forEach(function (set) { set.pointRadius = sparse ? 2 : 0; });
      chart.options.scales.x.max = data.epochs;
      chart.options.plugins.legend.display = sets.length > 1;
      setData(chart, sets);
      if (note && !data.final) {
        note.textContent = sets[0].data.length ? "Updates live while the run trains."
          : "Waiting for the first epoch (the run is " + data.status +
            (data.waiting ? ": " + data.waiting : "") + ").";
      }
      if (done) { done.textContent = data.epochs_done; }
      showStatus(document.querySelector("#run-status .status"), data.status);
      canvas.dataset.points = String(sets[0].data.length);
      var network = document.getElementById("network");
      if (network && !network.src && network.dataset.src) { network.src = network.dataset.src; }
      canvas.dataset.status = data.status;
    });
  }

  function sweepCurves(canvas) {
    var chart = makeChart(canvas, true);
    poll(canvas, function (data) {
      setData(chart, data.runs.map(function (run, i) {
        var color = COLORS[i % COLORS.length];
        return {label: run.label, data: points(run.history, "error"),
                borderColor: color, backgroundColor: color};
      }));
      canvas.dataset.curves = String(data.runs.length);
      showStatus(document.querySelector("#sweep-status .status"), data.status);
      canvas.dataset.status = data.status;
    });
  }

  function dependentFields(form) {
    // A field marked data-show-for="SELECT:a,b" applies only when that select holds a or b
    // (momentum for the momentum optimizers, beta1 for adam, ...): the others are hidden.
    // They still submit; the server ignores the ones that do not apply.
    var dependents = form.querySelectorAll("[data-show-for]");
    function update() {
      dependents.forEach(function (field) {
        var rule = field.dataset.showFor.split(":");
        var select = document.getElementById(rule[0]);
        field.hidden = !!select && rule[1].split(",").indexOf(select.value) < 0;
      });
    }
    form.addEventListener("change", update);
    update();
  }

  function start() {
    // The pages carry no inline script (the Content-Security-Policy forbids them): what to
    // start is found by element ids and data attributes.
    var curve = document.getElementById("curve");
    if (curve) { runCurve(curve); }
    var curves = document.getElementById("curves");
    if (curves) { sweepCurves(curves); }
    document.querySelectorAll("form.submit").forEach(dependentFields);
    document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
  }

  /* ---- Runs compared (p14b): /compare's chart and the runs table's Compare picks ---- */

  function compareCurves(canvas) {
    var chart = makeChart(canvas, true);
    poll(canvas, function (data) {
      setData(chart, data.runs.map(function (run, i) {
        var color = COLORS[i % COLORS.length];
        return {label: run.label, data: points(run.history, "error"),
                borderColor: color, backgroundColor: color};
      }));
      canvas.dataset.curves = String(data.runs.length);
      canvas.dataset.status = data.status;
    });
  }

  function comparePicks(form) {
    // Says how many runs are ticked; the server checks the 2 to 10 bound itself.
    var hint = document.getElementById("compare-hint");
    var initial = hint ? hint.textContent : "";
    form.addEventListener("change", function () {
      var n = form.querySelectorAll("input[name=runs]:checked").length;
      if (hint) {
        hint.textContent = n === 0 ? initial : n + " run" + (n === 1 ? "" : "s") + " ticked" +
          (n < 2 ? ": tick at least 2" : n > 10 ? ": tick at most 10" : "");
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var canvas = document.getElementById("compare-curves");
    if (canvas) { compareCurves(canvas); }
    var form = document.getElementById("compare-form");
    if (form) { comparePicks(form); }
  });

  /* ---- end of runs compared ---- */

  window.Descent = {runCurve: runCurve, sweepCurves: sweepCurves};
  document.addEventListener("DOMContentLoaded", start);
})();
