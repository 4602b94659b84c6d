// The app shell: checks the session, shows the login form when there is none, and renders the view of
// the current hash route. Nothing but the shell is visible without a valid token: every view's data
// comes from the API, and a 401 from any call brings the login form back.

import { ApiError, api, errorMessage, isAbort } from "./api.js";
import { errorBox, pageHeader } from "./components.js";
import { h, replace } from "./dom.js";
import { renderLogin } from "./views/login.js";
import { ViewContext, currentLocation, matchRoute } from "./router.js";

const main = document.getElementById("main");
const sessionBox = document.getElementById("session");
const sessionName = document.getElementById("session-name");

const session = { user: null, ui: { collapse_fraction: null, mlflow_ui_url: null } };
let current = null; // the ViewContext on screen
let renderSeq = 0;

async function start() {
  document.getElementById("skip-link").addEventListener("click", () => focusMain());
  document.getElementById("logout").addEventListener("click", logout);
  window.addEventListener("hashchange", () => route());
  window.addEventListener("mmae:unauthorized", () => {
    if (session.user !== null || !main.querySelector("#login-form")) showLogin();
  });
  await enter();
}

/** Show the current route when the cookie holds a valid token, else the login form. */
async function enter() {
  try {
    if (await loadSession()) route();
    else showLogin();
  } catch (error) {
    replace(
      main,
      pageHeader("Cannot reach the service"),
      errorBox(errorMessage(error)),
      h("button", { type: "button", class: "button", onclick: enter }, "Try again"),
    );
  }
}

/**
 * True when the cookie holds a valid token, false on a 401 (other errors propagate); also loads the UI
 * settings (collapse fraction, MLflow URL).
 */
async function loadSession() {
  try {
    session.user = await api("/me", { quiet401: true });
  } catch (error) {
    session.user = null;
    if (error instanceof ApiError && error.status === 401) return false;
    throw error;
  }
  try {
    session.ui = await api("/settings/ui");
  } catch (error) {
    console.warn("settings unavailable", error);
  }
  const user = session.user;
  sessionName.textContent = user ? `${user.name} (${user.role})` : "";  // what this token may do shows beside it
  sessionBox.hidden = false;
  return true;
}

function showLogin() {
  disposeCurrent();
  session.user = null;
  sessionBox.hidden = true;
  setActiveNav(null);
  document.title = "Log in · mmae";
  renderLogin(main, async () => {
    if (await loadSession()) route({ focus: true });
  });
}

async function logout() {
  try {
    await api("/logout", { method: "POST", quiet401: true });
  } catch (error) {
    console.warn("logout failed", error);
  }
  showLogin();
}

async function route({ focus = true } = {}) {
  if (!session.user) return;
  const seq = ++renderSeq;
  disposeCurrent();
  const { path, query } = currentLocation();
  const found = matchRoute(path);
  if (!found) {
    setActiveNav(null);
    replace(
      main,
      pageHeader("Not found"),
      h("p", {}, "No page here. ", h("a", { href: "#/runs" }, "Go to the runs.")),
    );
    return;
  }
  setActiveNav(found.route.nav);
  const ctx = new ViewContext({ root: main, path, params: found.params, query, session });
  current = ctx;
  try {
    const view = await found.route.load();
    if (seq !== renderSeq) return;
    replace(main);
    await view.render(ctx);
  } catch (error) {
    if (isAbort(error) || ctx.disposed) return;
    replace(main, pageHeader("Something went wrong"), errorBox(errorMessage(error)));
  }
  if (focus && seq === renderSeq) main.querySelector("h1")?.focus({ preventScroll: true });
}

function disposeCurrent() {
  current?.dispose();
  current = null;
}

function setActiveNav(name) {
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function focusMain() {
  const target = main.querySelector("h1") ?? main;
  target.focus();
}

start();
