// The environments page: add, act on, and follow builds live (server-sent events).
(() => {
  const base = document.body.dataset.baseUrl;
  const xsrf = document.body.dataset.xsrf;
  const api = (path, opts = {}) =>
    fetch(`${base}api/${path}`, {
      ...opts,
      headers: { "X-XSRFToken": xsrf, "Content-Type": "application/json", ...(opts.headers || {}) },
    }).then(async (r) => {
      if (r.status === 204) return null;
      const body = await r.json().catch(() => ({ message: r.statusText }));
      if (!r.ok) throw new Error(body.message || r.statusText);
      return body;
    });

  const rowFor = (id) => document.querySelector(`tr[data-id="${id}"]`);
  const setStatus = (row, status, stage, error) => {
    if (!row) return;
    row.dataset.status = status;
    row.querySelector(".status").innerHTML = "";
    const badge = document.createElement("span");
    badge.className = `badge badge-${status}`;
    badge.textContent = status;
    const st = document.createElement("span");
    st.className = "stage";
    st.textContent = ` ${stage || ""}`;
    row.querySelector(".status").append(badge, st);
    if (error) {
      const e = document.createElement("div");
      e.className = "error-message";
      e.textContent = error;
      row.querySelector(".status").append(e);
    }
  };
  const refresh = async (id) => {
    const env = await api(`environments/${id}`);
    setStatus(rowFor(id), env.status, env.stage, env.error);
    if (env.commit) rowFor(id).querySelector(".commit code").textContent = env.commit.slice(0, 10);
    return env;
  };

  let source = null;
  const follow = (id, name) => {
    if (source) source.close();
    const panel = document.getElementById("log-panel");
    const pre = document.getElementById("log");
    panel.hidden = false;
    pre.textContent = "";
    document.getElementById("log-title").textContent = name;
    const badge = document.getElementById("log-status");
    badge.textContent = "connecting";
    // EventSource reconnects by itself and sends Last-Event-ID: the server resumes there.
    // It cannot send headers, so the hub's XSRF token (required on cors-mode GETs) goes in the URL.
    source = new EventSource(`${base}api/environments/${id}/log?_xsrf=${encodeURIComponent(xsrf)}`);
    source.onopen = () => {
      if (badge.textContent === "connecting" || badge.textContent === "reconnecting") badge.textContent = "live";
    };
    // the browser retries by itself; say so instead of looking stuck
    source.onerror = () => {
      if (source.readyState !== EventSource.CLOSED) badge.textContent = "reconnecting";
    };
    source.onmessage = (ev) => {
      const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.append(ev.data + "\n");
      if (stick) pre.scrollTop = pre.scrollHeight;
    };
    source.addEventListener("status", (ev) => {
      const s = JSON.parse(ev.data);
      badge.textContent = s.stage || s.status;
      badge.className = "badge badge-running";
      setStatus(rowFor(id), "building", s.stage);
    });
    source.addEventListener("end", async (ev) => {
      source.close();
      const env = await refresh(id);
      badge.textContent = env.status;
      badge.className = `badge badge-${env.status}`;
    });
  };

  document.getElementById("add-env").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = ev.target;
    const err = document.getElementById("form-error");
    err.textContent = "";
    const data = Object.fromEntries(new FormData(form).entries());
    for (const k of Object.keys(data)) if (data[k] === "") delete data[k];
    try {
      const env = await api("environments", { method: "POST", body: JSON.stringify(data) });
      sessionStorage.setItem("neurolibre-follow", JSON.stringify([env.id, env.name]));
      window.location.reload();
    } catch (e) {
      err.textContent = e.message;
    }
  });

  document.getElementById("environments").addEventListener("click", async (ev) => {
    const button = ev.target.closest("button[data-action]");
    if (!button) return;
    const row = button.closest("tr");
    const id = row.dataset.id;
    const name = row.querySelector(".name").textContent;
    try {
      switch (button.dataset.action) {
        case "log":
          follow(id, name);
          break;
        case "rebuild":
          await api(`environments/${id}/rebuild`, { method: "POST" });
          setStatus(row, "queued");
          follow(id, name);
          break;
        case "cancel":
          await api(`environments/${id}/cancel`, { method: "POST" });
          await refresh(id);
          break;
        case "delete":
          if (!confirm(`Delete environment ${name}?`)) return;
          await api(`environments/${id}`, { method: "DELETE" });
          row.remove();
          break;
      }
    } catch (e) {
      alert(e.message);
    }
  });

  // after adding, follow the new build; otherwise follow the first one still building
  const pending = sessionStorage.getItem("neurolibre-follow");
  sessionStorage.removeItem("neurolibre-follow");
  if (pending) {
    follow(...JSON.parse(pending));
  } else {
    const busy = document.querySelector('tr[data-status="building"], tr[data-status="queued"]');
    if (busy) follow(busy.dataset.id, busy.querySelector(".name").textContent);
  }
})();
