// The review section (templates/review_section.html): each form posts its fields as JSON to
// the API path in data-api (data-method for another method), then reloads the page, which shows
// the new state. Errors are shown as text; nothing is inserted as HTML.
(() => {
  const base = document.body.dataset.baseUrl;
  const xsrf = document.body.dataset.xsrf;
  for (const form of document.querySelectorAll("form.review-form[data-api]")) {
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const section = form.closest("section") || document;
      const error = section.querySelector("[data-review-error]");
      if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
      const body = {};
      for (const [k, v] of new FormData(form).entries()) {
        if (v !== "") body[k] = k === "reply_to" ? Number(v) : v;
      }
      const buttons = form.querySelectorAll("button");
      buttons.forEach((b) => (b.disabled = true));
      if (error) error.textContent = "";
      try {
        const r = await fetch(`${base}api/${form.dataset.api}`, {
          method: form.dataset.method || "POST",
          headers: { "X-XSRFToken": xsrf, "Content-Type": "application/json" },
          body: form.dataset.method === "DELETE" ? undefined : JSON.stringify(body),
        });
        if (!r.ok) {
          const answer = await r.json().catch(() => ({ message: `${r.status} ${r.statusText}` }));
          throw new Error(answer.message || r.statusText);
        }
        window.location.reload();
      } catch (e) {
        if (error) error.textContent = e.message;
        buttons.forEach((b) => (b.disabled = false));
      }
    });
  }
})();
