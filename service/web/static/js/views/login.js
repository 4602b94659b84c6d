// Login with an API token (created with `mmae token create NAME`, or the admin token `mmae serve` writes).
// POST /api/login sets an HttpOnly cookie; the token itself is never stored by the page.

import { ApiError, api, errorMessage } from "../api.js";
import { h, replace } from "../dom.js";

export function renderLogin(root, onSuccess) {
  const input = h("input", {
    id: "login-token",
    name: "token",
    type: "password",
    autocomplete: "current-password",
    spellcheck: "false",
    required: true,
    "aria-describedby": "login-help login-error",
  });
  const error = h("p", { id: "login-error", class: "field-error", role: "alert" });
  const button = h("button", { type: "submit", class: "button" }, "Log in");
  const form = h(
    "form",
    { id: "login-form", class: "card login", novalidate: true },
    h("h1", { tabindex: "-1" }, "Log in"),
    h(
      "p",
      { id: "login-help", class: "muted" },
      "Paste an API token. Create one with ",
      h("code", {}, "mmae token create NAME"),
      ".",
    ),
    h("div", { class: "field" }, h("label", { for: "login-token" }, "API token"), input, error),
    button,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const token = input.value.trim();
    if (!token) {
      error.textContent = "Enter a token.";
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    button.disabled = true;
    try {
      await api("/login", { method: "POST", body: { token }, quiet401: true });
      input.value = "";
      await onSuccess();
    } catch (err) {
      error.textContent =
        err instanceof ApiError && err.status === 401 ? "That token is not valid." : errorMessage(err);
      input.setAttribute("aria-invalid", "true");
      input.focus();
    } finally {
      button.disabled = false;
    }
  });
  replace(root, form);
  input.focus();
}
