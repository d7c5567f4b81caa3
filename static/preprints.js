// Preprint pages: the test form (check, build), a preprint's build with live stage logs
// (server-sent events), and the datasets page. Data goes into the page with textContent only.
(() => {
  const base = document.body.dataset.baseUrl;
  const xsrf = document.body.dataset.xsrf;
  // cookie-authenticated writes need the hub's XSRF token in a header
  const api = (path, opts = {}) =>
    fetch(`${base}api/${path}`, {
      ...opts,
      headers: { "X-XSRFToken": xsrf, "Content-Type": "application/json", ...(opts.headers || {}) },
    }).then(async (r) => {
      if (r.status === 204) return null;
      const body = await r.json().catch(() => ({ message: `${r.status} ${r.statusText}` }));
      if (!r.ok) throw new Error(body.message || r.statusText);
      return body;
    });

  // el("span", {className: "x"}, "text", otherNode): children are text or nodes, never HTML
  const el = (tag, props = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (k === "dataset") Object.assign(node.dataset, v);
      else node[k] = v;
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  };

  // powers of 1024, spelled as the service's own human_size does
  const humanSize = (n) => {
    if (n === null || n === undefined) return "-";
    if (n < 1024) return `${n} bytes`;
    let v = n / 1024;
    let unit = "KB";
    for (const u of ["MB", "GB", "TB"]) {
      if (v < 1024) break;
      v /= 1024;
      unit = u;
    }
    return `${v.toFixed(1).replace(/\.0$/, "")} ${unit}`;
  };
  const when = (iso) => (iso ? iso.slice(0, 19).replace("T", " ") : "-");
  const duration = (from, to) => {
    const s = Math.round((Date.parse(to) - Date.parse(from)) / 1000);
    if (!(s >= 0)) return "";
    return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
  };
  const levelBadge = (level) => (level === "error" ? "badge-failed" : "badge-queued");

  // findings of the layout check, errors first (the sort is stable: the checker's order stays)
  const renderFindings = (list, findings) => {
    list.replaceChildren();
    const rank = (f) => (f.level === "error" ? 0 : 1);
    for (const f of [...findings].sort((a, b) => rank(a) - rank(b))) {
      const where = `${f.file || "repository"}${f.line ? `:${f.line}` : ""}`;
      list.append(
        el(
          "li",
          { className: `finding finding-${f.level}` },
          el("span", { className: `badge ${levelBadge(f.level)}`, textContent: f.level }),
          " ",
          el("code", { className: "where", textContent: where }),
          " ",
          el("span", { className: "message", textContent: f.message }),
          f.fix ? el("div", { className: "fix", textContent: `Fix: ${f.fix}` }) : null,
        ),
      );
    }
  };
  const summarize = (findings) => {
    const errors = findings.filter((f) => f.level === "error").length;
    const warnings = findings.length - errors;
    if (!findings.length) return ["No problems found: the layout follows the handbook.", "ok"];
    if (!errors) return [`No errors; ${warnings} warning(s): the preprint can be built.`, "ok"];
    return [`${errors} error(s) to fix before the preprint can build` +
            (warnings ? `, and ${warnings} warning(s).` : "."), "bad"]; // prettier-ignore
  };

  // -- preprints/new: check the layout, or submit a build --------------------------------------
  const newForm = document.getElementById("preprint-form");
  if (newForm) {
    const err = document.getElementById("form-error");
    const busy = document.getElementById("form-busy");
    const buttons = newForm.querySelectorAll("button");
    const values = () => {
      const data = Object.fromEntries(new FormData(newForm).entries());
      for (const k of Object.keys(data)) {
        data[k] = data[k].trim();
        if (data[k] === "") delete data[k];
      }
      return data;
    };
    const run = async (what, fn) => {
      err.textContent = "";
      const data = values();
      if (!data.repository) {
        err.textContent = "Enter the URL of the preprint's Git repository.";
        newForm.elements.repository.focus();
        return;
      }
      buttons.forEach((b) => (b.disabled = true));
      busy.textContent = what;
      try {
        await fn(data);
      } catch (e) {
        err.textContent = e.message;
      } finally {
        buttons.forEach((b) => (b.disabled = false));
        busy.textContent = "";
      }
    };

    document.getElementById("check-button").addEventListener("click", () =>
      run("Checking the layout...", async (data) => {
        const section = document.getElementById("check-results");
        section.hidden = true;
        const result = await api("check", {
          method: "POST",
          body: JSON.stringify({ repository: data.repository, ref: data.ref }),
        });
        const findings = result.findings || [];
        const [text, tone] = summarize(findings);
        const summary = document.getElementById("check-summary");
        summary.textContent = text;
        summary.className = `summary summary-${tone}`;
        document.getElementById("check-commit").textContent = result.commit
          ? `${result.ref || ""} = commit ${result.commit.slice(0, 10)}`
          : "";
        renderFindings(document.getElementById("findings"), findings);
        section.hidden = false;
      }),
    );

    newForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      run("Submitting...", async (data) => {
        const p = await api("preprints", { method: "POST", body: JSON.stringify(data) });
        window.location.assign(`${base}preprints/${p.id}`);
        await new Promise(() => {}); // keep the buttons disabled while the page changes
      });
    });
  }

  // -- preprints/{id}: the latest build, its stages and live logs ------------------------------
  const dataNode = document.getElementById("preprint-data");
  if (dataNode) {
    const info = JSON.parse(dataNode.textContent);
    let build = info.build;
    const actionError = document.getElementById("action-error");
    const rebuild = document.getElementById("rebuild-button");
    const cancel = document.getElementById("cancel-button");
    const preview = document.getElementById("preview-link");
    const active = (b) => b && (b.status === "queued" || b.status === "running");

    const setStep = (stage, state) => {
      const li = document.querySelector(`#pipeline li[data-stage="${stage}"]`);
      if (!li) return;
      li.dataset.state = state;
      li.className = `step step-${state}`;
      li.querySelector(".step-state").textContent = state;
    };

    const render = (b) => {
      if (!b) return;
      build = b;
      const section = document.getElementById("build");
      section.dataset.status = b.status;
      const badge = document.getElementById("build-status");
      badge.textContent = b.status;
      badge.className = `badge badge-${b.status}`;
      const over = !active(b);
      for (const [stage, state] of Object.entries(b.stages || {})) {
        // a stage still pending when the build ended never ran
        setStep(stage, over && (!state || state === "pending") ? "skipped" : state || "pending");
      }

      const failure = document.getElementById("failure");
      const failed = b.status === "failed" || b.status === "cancelled";
      failure.hidden = !failed;
      if (failed) {
        const what = document.getElementById("failure-what");
        what.replaceChildren(b.status === "cancelled" ? "Cancelled" : "Failed");
        if (b.failed_stage) {
          what.append(" at the ", el("strong", { textContent: b.failed_stage }), " stage");
        }
        what.append(":");
        document.getElementById("failure-error").textContent = b.error || "no reason given";
      }

      document.getElementById("fact-started").textContent = when(b.started_at);
      document.getElementById("fact-finished").textContent =
        b.finished_at && b.started_at
          ? `${when(b.finished_at)} (took ${duration(b.started_at, b.finished_at)})`
          : when(b.finished_at);
      document.getElementById("fact-book").textContent =
        (b.book_engine || "-") +
        (b.executed !== null && b.executed !== undefined
          ? `: ${b.executed} notebook(s) executed, ${b.cached || 0} from the cache`
          : "");
      const data = b.datasets || [];
      document.getElementById("fact-data").textContent = data.length
        ? data.map((d) => `${d.project_name} (${humanSize(d.size_bytes)})`).join(", ")
        : "none";
      document.getElementById("fact-email").textContent =
        b.notified || (info.email ? `will be sent to ${info.email}` : "none asked");
      const factPreview = document.getElementById("fact-preview");
      factPreview.replaceChildren(
        b.preview_url
          ? el("a", {
              id: "build-preview",
              href: `${base}${b.preview_url}`,
              textContent: `${base}${b.preview_url}`,
            })
          : "none",
      );

      const box = document.getElementById("findings-box");
      box.hidden = b.findings === null || b.findings === undefined;
      if (!box.hidden) {
        renderFindings(document.getElementById("build-findings"), b.findings);
        const [text, tone] = summarize(b.findings);
        const summary = document.getElementById("findings-summary");
        summary.textContent = text;
        summary.className = `summary summary-${tone}`;
      }

      cancel.hidden = !active(b);
      rebuild.disabled = active(b);
      rebuild.title = active(b) ? "A build is running: cancel it or wait for it to end." : "";
      if (b.status === "succeeded") preview.hidden = false;
    };

    // one refresh at a time; a request made while one runs is done once it ends
    let refreshing = null;
    let again = false;
    const refresh = async () => {
      if (!build) return;
      if (refreshing) {
        again = true;
        return refreshing;
      }
      refreshing = (async () => {
        do {
          again = false;
          try {
            render(await api(`builds/${build.id}`));
          } catch (e) {
            actionError.textContent = e.message;
          }
        } while (again);
      })();
      try {
        await refreshing;
      } finally {
        refreshing = null;
      }
    };

    const follow = (panel) => {
      const stage = panel.dataset.stage;
      const pre = panel.querySelector("pre.log");
      const badge = panel.querySelector(".log-status");
      const setBadge = (text, cls = "") => {
        badge.textContent = text;
        badge.className = `badge log-status ${cls}`;
      };
      // lines are added once per frame: a burst of thousands does not relayout for each
      let pending = [];
      const flush = () => {
        if (!pending.length) return;
        const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.append(pending.join(""));
        pending = [];
        if (stick) pre.scrollTop = pre.scrollHeight;
      };
      let frame = 0;
      // EventSource reconnects by itself and sends Last-Event-ID: the server resumes there.
      // It cannot send headers, so the hub's XSRF token (required on cors-mode GETs) goes in the URL.
      const source = new EventSource(`${base}${panel.dataset.log}?_xsrf=${encodeURIComponent(xsrf)}`);
      source.onopen = () => {
        if (panel.dataset.state === "ended") return;
        panel.dataset.state = "live";
        // connected: "waiting" until the stage writes, then "live"
        if (pre.textContent || pending.length) setBadge("live", "badge-running");
        else setBadge("waiting");
        // stage changes are sent only as they happen: catch up on those made before we listened
        if (stage === "main") refresh();
      };
      source.onerror = () => {
        if (source.readyState !== EventSource.CLOSED && panel.dataset.state !== "ended") {
          setBadge("reconnecting", "badge-queued");
        }
      };
      source.onmessage = (ev) => {
        if (panel.dataset.state === "live" && badge.textContent !== "live") {
          setBadge("live", "badge-running");
          const step = document.querySelector(`#pipeline li[data-stage="${stage}"]`);
          if (step && step.dataset.state === "pending" && active(build)) setStep(stage, "running");
        }
        pending.push(`${ev.data}\n`);
        if (!frame) {
          frame = requestAnimationFrame(() => {
            frame = 0;
            flush();
          });
        }
      };
      source.addEventListener("status", (ev) => {
        // the main log says when a stage starts: show it, then ask for the stored states
        const s = JSON.parse(ev.data);
        if (stage === "main" && s.stage) {
          setStep(s.stage, "running");
          refresh();
        }
      });
      const finish = (status) => {
        if (panel.dataset.state === "ended") return;
        source.close();
        flush();
        panel.dataset.state = "ended";
        panel.dataset.end = status;
        setBadge(status, `badge-${status}`);
        if (!pre.textContent) {
          pre.dataset.placeholder = status === "skipped" ? "This stage did not run." : "No output.";
        }
        if (stage === "main") ended();
        else if (status !== "skipped") setStep(stage, status);
      };
      source.addEventListener("end", (ev) => finish(JSON.parse(ev.data).status));
      finishers[stage] = finish;
    };

    // the build ended: its final state, the preprint's title (read from paper.md by the check),
    // and the email note, which is written just after the build ends
    const finishers = {};
    const ended = async () => {
      await refresh();
      // a stage that never started gets no more lines: stop waiting for it
      for (const [stage, state] of Object.entries(build.stages || {})) {
        const never = state === "pending" || state === "skipped";
        if (never && finishers[stage]) finishers[stage]("skipped");
      }
      try {
        const p = await api(`preprints/${info.id}`);
        const title = p.title || p.repository;
        document.getElementById("preprint-title").textContent = title;
        document.title = `${title} - NeuroLibre`;
        if (p.preview_url) preview.hidden = false;
      } catch (e) {
        actionError.textContent = e.message;
      }
      for (let i = 0; i < 5 && info.email && build && !build.notified; i++) {
        await new Promise((done) => setTimeout(done, 1000 * (i + 1)));
        await refresh();
      }
    };

    render(build);
    if (build) document.querySelectorAll(".log-panel").forEach(follow);

    rebuild.addEventListener("click", async () => {
      actionError.textContent = "";
      rebuild.disabled = true;
      try {
        await api(`preprints/${info.id}/builds`, { method: "POST" });
        window.location.reload();
      } catch (e) {
        actionError.textContent = e.message;
        rebuild.disabled = active(build);
      }
    });
    cancel.addEventListener("click", async () => {
      if (!build) return;
      actionError.textContent = "";
      cancel.disabled = true;
      try {
        render(await api(`builds/${build.id}/cancel`, { method: "POST" }));
      } catch (e) {
        actionError.textContent = e.message;
      } finally {
        cancel.disabled = false;
      }
    });
  }

  // -- datasets (administrators) ---------------------------------------------------------------
  const datasets = document.getElementById("datasets");
  if (datasets) {
    const err = document.getElementById("datasets-error");
    datasets.addEventListener("click", async (ev) => {
      const button = ev.target.closest('button[data-action="delete"]');
      if (!button) return;
      const row = button.closest("tr");
      const name = row.querySelector(".name").firstChild.textContent.trim();
      if (!confirm(`Delete dataset ${name}? A later build that needs it fetches it again.`)) return;
      err.textContent = "";
      button.disabled = true;
      try {
        await api(`datasets/${encodeURIComponent(row.dataset.key)}`, { method: "DELETE" });
        row.remove();
        if (!datasets.querySelector("tbody tr")) {
          const cols = datasets.querySelectorAll("thead th").length;
          datasets.querySelector("tbody").append(
            el("tr", { className: "empty" }, el("td", { colSpan: cols, textContent: "No datasets." })),
          );
        }
      } catch (e) {
        err.textContent = e.message;
        button.disabled = false;
      }
    });
  }
})();
