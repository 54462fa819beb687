// taskledger's operator pages: they poll this server's JSON documents and redraw.
// Read-only: orders go through `taskledger ctl` (or the API), never through a page.
"use strict";

(function () {
  const TOKEN_KEY = "taskledger-token";
  const page = document.body.dataset.page;
  const every = page === "job" ? 2000 : 3000;

  // A token given as #token=... is kept for this tab and taken out of the address bar.
  function token() {
    const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (match) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("data-")) node.setAttribute(key, String(value));
      else node[key] = value;
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const dash = (v) => (v === null || v === undefined || v === "" ? "-" : String(v));
  const clock = (iso) => (iso ? iso.slice(11, 19) : "-");
  const when = (iso) => (iso ? iso.replace("T", " ").replace("Z", "").slice(0, 19) : "-");
  const taskLink = (id) => (id ? el("a", { href: "/task?id=" + encodeURIComponent(id) }, id) : "-");
  const state = (s) => el("span", { class: s ? "state-" + s : "" }, dash(s));

  function fill(id, rows, empty) {
    const table = document.getElementById(id);
    const body = table.tBodies[0] || table.appendChild(el("tbody"));
    body.replaceChildren(...rows);
    if (!rows.length && empty) {
      const width = table.tHead ? table.tHead.rows[0].cells.length : 2;
      body.append(el("tr", {}, el("td", { class: "empty", colSpan: width }, empty)));
    }
  }

  function text(id, value) {
    document.getElementById(id).textContent = value;
  }

  function chips(items) {
    document.getElementById("chips").replaceChildren(
      ...items.map(([label, kind]) => el("span", { class: "chip " + (kind || "") }, label))
    );
  }

  async function fetchJSON(path) {
    const headers = { Accept: "application/json" };
    const secret = token();
    if (secret) headers.Authorization = "Bearer " + secret;
    const response = await fetch(path, { headers, cache: "no-store" });
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      throw new Error(path + ": HTTP " + response.status);
    }
    if (!response.ok) throw new Error((body && body.error) || path + ": HTTP " + response.status);
    return body;
  }

  function showError(message) {
    const banner = document.getElementById("error");
    banner.hidden = !message;
    banner.textContent = message ? "Cannot update: " + message : "";
  }

  function counts(id, map) {
    const rows = Object.entries(map)
      .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
      .map(([key, n]) =>
        el("tr", { "data-key": key }, el("td", {}, key === "null" ? "(none)" : state(key)),
           el("td", { class: "n" }, n))
      );
    fill(id, rows, "no tasks");
  }

  function header(doc) {
    const s = doc.scheduler;
    const age = s.last_heartbeat === null ? null : Math.max(0, doc.now - s.last_heartbeat);
    const items = [
      [s.subscribed ? "subscribed to " + dash(s.master) : "not subscribed", s.subscribed ? "good" : "bad"],
      ["heartbeat " + (age === null ? "-" : age.toFixed(1) + " s ago"), ""],
      [doc.dry_run ? "dry run: on" : "dry run: off", doc.dry_run ? "warn" : ""],
      [doc.breaker.halted ? "breaker: halted" : "breaker: closed", doc.breaker.halted ? "bad" : "good"],
      ["as of #" + doc.as_of.id, ""],
    ];
    chips(items);
    text("title", "framework " + dash(s.framework_name) + (doc.job ? ", job " + doc.job.name : ""));
    document.getElementById("footer").textContent =
      "log " + doc.log + "; as of notification id " + doc.as_of.id + " (" + when(doc.as_of.time_iso) +
      " UTC); updated " + new Date().toISOString().slice(11, 19) + " UTC";
  }

  function halted(doc) {
    const banner = document.getElementById("halted");
    const b = doc.breaker;
    banner.hidden = !b.halted;
    if (!b.halted) return;
    banner.replaceChildren(
      el("strong", {}, "Dispatch halted by the blast-radius breaker"),
      " since " + when(b.since_iso) + " UTC (event #" + b.since_id + "): " + b.reason + ". " +
        doc.commands.held_count + " command(s) held. Look at what they would do, then resume: ",
      el("code", {}, "taskledger ctl resume --scheduler " + location.origin + " --reason '...'")
    );
  }

  function instances(doc) {
    const inst = doc.instances;
    const running = inst.running;
    text("job-summary", doc.job
      ? running + " of " + doc.job.instances + " wanted instance(s) running; command: " + doc.job.cmd
      : "this scheduler runs no job");
    const rows = [];
    for (const row of inst.rows) {
      const tasks = row.tasks.length ? row.tasks : [null];
      tasks.forEach((t, i) => {
        rows.push(el("tr", { "data-instance": row.instance, class: row.wanted ? "" : "unwanted" },
          el("td", {}, i ? "" : row.instance + (row.wanted ? "" : " (above the count)")),
          el("td", {}, t ? taskLink(t.task_id) : "-"),
          el("td", {}, t ? state(t.scheduler_state) : "-"),
          el("td", {}, t ? state(t.mesos_state) : "-"),
          el("td", {}, t ? dash(t.agent_id) : "-"),
          el("td", { class: "n" }, i ? "" : row.generations)));
      });
    }
    fill("instances", rows, "no instances");
    text("instances-more", inst.more ? "... and " + inst.more + " more (taskledger query --job)" : "");
  }

  function drift(doc) {
    text("drift-total", doc.drift.total + " task(s) in disagreement");
    text("task-total", doc.tasks + " task(s) known to either side");
    fill("drift", doc.drift.cells.map((c) =>
      el("tr", { "data-key": c.cell },
        el("td", {}, c.cell), el("td", {}, c.found_by), el("td", { class: "n" }, c.count),
        el("td", {}, c.tasks.map((t, i) => [i ? ", " : "", taskLink(t.task_id)]),
           c.more ? " ... and " + c.more + " more" : ""))), "no drift: the scheduler and Mesos agree");
    const flying = doc.drift.in_flight;
    document.getElementById("launches").replaceChildren(...(flying.count ? [
      flying.count + " launch(es) in flight (ASSIGNED, not yet heard of from Mesos; not drift): ",
      ...flying.tasks.map((t, i) => [i ? ", " : "", taskLink(t.task_id)]).flat(),
    ] : []));
  }

  function runs(doc) {
    const r = doc.runs;
    fill("runs-running", r.running.map((run) =>
      el("tr", { "data-run": run.run_id }, el("td", {}, run.run_id), el("td", {}, run.trigger),
        el("td", {}, clock(run.started_iso)), el("td", { class: "n" }, run.rounds),
        el("td", { class: "n" }, run.asked), el("td", { class: "n" }, run.remaining))), "none running");
    const last = r.last;
    fill("runs-last", last ? [
      el("tr", {}, el("th", {}, "run"), el("td", { "data-run": last.run_id }, last.run_id + " (" + last.trigger + ")")),
      el("tr", {}, el("th", {}, "ended"), el("td", {}, clock(last.ended_iso) + ": " + last.outcome)),
      el("tr", {}, el("th", {}, "answered"), el("td", {}, dash(last.answered) + " of " + dash(last.asked))),
      el("tr", {}, el("th", {}, "took"), el("td", {}, last.duration === null ? "-" : last.duration.toFixed(1) + " s")),
    ] : [], "no run has ended yet");
    fill("runs-next", Object.entries(r.next).map(([kind, next]) =>
      el("tr", { "data-key": kind }, el("th", {}, kind), el("td", {}, next.at === null ? "(running or not scheduled)" : when(next.at_iso)))));
    fill("runs-recent", r.recent.map((run) => {
      const found = Object.entries(run.by_cell || {}).filter(([cell, n]) => cell !== "consistent" && n);
      return el("tr", { "data-run": run.run_id }, el("td", {}, run.run_id), el("td", {}, run.trigger),
        el("td", {}, clock(run.started_iso)), el("td", {}, clock(run.ended_iso)),
        el("td", {}, dash(run.outcome || "running")), el("td", { class: "n" }, dash(run.asked)),
        el("td", { class: "n" }, dash(run.answered)),
        el("td", {}, found.map(([cell, n]) => cell + ": " + n).join(", ") || "-"));
    }), "no runs in the recent log");
  }

  function commands(doc) {
    const c = doc.commands;
    const held = new Map(c.held.map((h) => [h.command, h.why]));
    text("commands-summary", Object.entries(c.by_status).map(([k, n]) => k + " " + n).join(", ") || "no commands yet");
    text("pending-count", c.pending.count);
    text("in-flight-count", c.in_flight.count);
    text("failed-count", c.failed.count);
    const row = (cmd, last) => el("tr", { "data-command": cmd.command },
      el("td", { class: "n" }, "#" + cmd.command), el("td", {}, cmd.kind + (cmd.dry_run ? " (dry run)" : "")),
      el("td", {}, cmd.task_id ? taskLink(cmd.task_id) : cmd.tasks === null ? "-" : cmd.tasks ? cmd.tasks + " task(s)" : "all (implicit)"),
      el("td", {}, cmd.rule), el("td", {}, clock(cmd.issued_iso)), el("td", {}, last(cmd)));
    fill("commands-pending", c.pending.items.map((cmd) => row(cmd, (x) => held.get(x.command) || "-")), "none pending");
    fill("commands-in-flight", c.in_flight.items.map((cmd) => row(cmd, (x) => x.attempt)), "none in flight");
    fill("commands-failed", c.failed.items.map((cmd) =>
      el("tr", { "data-command": cmd.command }, el("td", { class: "n" }, "#" + cmd.command), el("td", {}, cmd.kind),
        el("td", {}, taskLink(cmd.task_id)), el("td", {}, cmd.rule), el("td", { class: "n" }, cmd.failures),
        el("td", {}, dash(cmd.last_error)))), "none failed");
  }

  function orders(doc) {
    const what = {
      KillOrdered: (o) => ["kill ", taskLink(o.task_id)],
      ReconciliationOrdered: (o) => o.kind + " reconciliation",
      JobScaled: (o) => "scale " + o.job + " " + o.previous + " -> " + o.instances,
      DryRunSet: (o) => "dry run " + (o.dry_run ? "on" : "off"),
      DispatchResumed: () => "resume dispatch",
      DispatchHalted: () => "(the breaker halted dispatch)",
    };
    fill("orders", doc.orders.map((o) =>
      el("tr", { "data-order": o.id }, el("td", { class: "n" }, "#" + o.id), el("td", {}, when(o.time_iso)),
        el("td", {}, (what[o.kind] || (() => o.kind))(o)), el("td", {}, dash(o.operator)),
        el("td", {}, dash(o.reason)))), "no orders in the recent log");
  }

  function renderJob(doc) {
    header(doc);
    halted(doc);
    instances(doc);
    counts("by-state", doc.counts.state);
    counts("by-mesos-state", doc.counts.mesos_state);
    counts("by-cell", doc.counts.cell);
    drift(doc);
    runs(doc);
    commands(doc);
    orders(doc);
    document.body.dataset.asOf = doc.as_of.id;
  }

  function renderTask(doc) {
    const r = doc.row || {};
    text("title", doc.task);
    document.title = "taskledger: " + doc.task;
    chips([["as of #" + doc.as_of.id, ""]]);
    fill("now", [
      ["scheduler", state(r.scheduler_state)], ["Mesos", state(r.mesos_state)], ["job", dash(r.job)],
      ["agent", dash(r.agent_id || r.mesos_agent_id)], ["drift cell", dash(r.cell)], ["found by", dash(r.found_by)],
      ["created", doc.created ? "#" + doc.created.id + " at " + when(doc.created.time_iso) : "-"],
    ].map(([k, v]) => el("tr", { "data-key": k }, el("th", {}, k), el("td", {}, v))));
    const steps = [];
    doc.lineage.forEach((g, i) => {
      if (i) {
        const l = g.link || {};
        steps.push(el("li", { class: "link" }, l.by === "RESCHEDULE"
          ? "-> RESCHEDULE #" + dash(l.command) + " (" + dash(l.rule) + ") ->"
          : "-> killed by operator " + dash(l.operator) + " (order #" + dash(l.order) + (l.reason ? ": " + l.reason : "") + "), replaced ->"));
      }
      steps.push(el("li", { class: g.this ? "this" : "", "data-task": g.task_id },
        el("div", {}, "generation " + g.generation), el("div", {}, g.this ? g.task_id : taskLink(g.task_id)),
        el("div", {}, state(g.scheduler_state), " / ", state(g.mesos_state))));
    });
    document.getElementById("lineage").replaceChildren(...steps);
    fill("siblings", doc.siblings.map((t) => el("tr", {}, el("td", {}, taskLink(t.task_id)),
      el("td", {}, state(t.scheduler_state)), el("td", {}, state(t.mesos_state)))), "none");
    const why = doc.why;
    document.getElementById("scheduler-kills").replaceChildren(...why.scheduler_kills.map((k) =>
      el("li", { "data-kill": k.id }, k.operator
        ? "operator " + k.operator + " " + k.what + " (order #" + k.order + (k.reason ? ": " + k.reason : "") + ") at " + when(k.time_iso)
        : "the scheduler itself decided to kill it at " + when(k.time_iso) + " (event #" + k.id + ")")));
    const made = why.created_by;
    const origin = made ? [el("div", { class: "why origin", "data-command": made.command },
      el("p", {}, el("strong", {}, "created by #" + made.command + " RESCHEDULE of " + made.ancestor + ": "), made.sentence))] : [];
    const chains = why.commands.map((c) => el("div", { class: "why", "data-command": c.command },
      el("p", {}, el("strong", {}, "#" + c.command + " " + c.kind + ": "), c.sentence),
      el("table", {}, el("tbody", {}, c.chain.map((s) => el("tr", {}, el("td", {}, s.step),
        el("td", { class: "n" }, s.id === null ? "-" : "#" + s.id), el("td", {}, clock(s.time_iso)), el("td", {}, s.what)))))));
    document.getElementById("why").replaceChildren(...origin,
      ...(chains.length ? chains : [el("p", { class: "empty" }, "no command was issued about this task")]));
    text("history-count", doc.history.length + " event(s)");
    fill("history", doc.history.map((h) => el("tr", { "data-id": h.id },
      el("td", { class: "n" }, h.id), el("td", {}, when(h.time_iso)), el("td", {}, h.kind), el("td", {}, h.source),
      el("td", {}, state(h.state)), el("td", {}, dash(h.reason)), el("td", {}, state(h.scheduler_state)),
      el("td", {}, h.detail))), "no events");
    document.getElementById("footer").textContent = "log " + doc.log + "; as of notification id " + doc.as_of.id +
      "; updated " + new Date().toISOString().slice(11, 19) + " UTC";
    document.body.dataset.asOf = doc.as_of.id;
  }

  async function refresh() {
    try {
      if (page === "job") {
        renderJob(await fetchJSON("/api/v1/view"));
      } else {
        const id = new URLSearchParams(location.search).get("id") || "";
        renderTask(await fetchJSON("/api/v1/task?id=" + encodeURIComponent(id)));
      }
      showError("");
    } catch (e) {
      showError(e.message || String(e));
    } finally {
      setTimeout(refresh, every);
    }
  }

  refresh();
})();
