// The page: sign-in, navigation and a hash router (#/jobs, #/run?ref=..., #/compare?runs=..., ...).

import { get, h, post, replace } from "./api.js";
import { jobsView } from "./jobs.js";
import { runView } from "./run.js";
import { compareView } from "./compare.js";
import { predictionsView } from "./predictions.js";
import { modelsView } from "./models.js";
import { machineView } from "./machine.js";

const VIEWS = {
  jobs: jobsView, run: runView, compare: compareView, predictions: predictionsView, models: modelsView, machine: machineView,
};
const NAV = [["jobs", "Jobs"], ["compare", "Compare"], ["predictions", "Predictions"], ["models", "Models & playground"], ["machine", "Machine"]];

const main = document.getElementById("view");
let cleanups = [];

function parseHash() {
  const [path, query] = (location.hash.replace(/^#\/?/, "") || "jobs").split("?");
  return { name: path || "jobs", params: new URLSearchParams(query || "") };
}

async function route() {
  cleanups.forEach((fn) => fn());
  cleanups = [];
  const { name, params } = parseHash();
  const view = VIEWS[name] || jobsView;
  const section = name === "run" ? "jobs" : name;
  document.querySelectorAll("nav.top a").forEach((a) => a.classList.toggle("active", a.dataset.view === section));
  replace(main);
  try {
    await view(main, params, cleanups);
  } catch (e) {
    main.append(h("div", { class: "error" }, e.message));
  }
}

function showLogin(message) {
  const dialog = document.getElementById("login");
  dialog.hidden = false;
  document.body.classList.add("signed-out");
  const error = document.getElementById("login-error");
  error.textContent = message || "";
  document.getElementById("login-key").focus();
}

async function signIn(event) {
  event.preventDefault();
  const key = document.getElementById("login-key").value;
  try {
    await post("/login", { key });
    document.getElementById("login").hidden = true;
    document.body.classList.remove("signed-out");
    document.getElementById("login-key").value = "";
    start();
  } catch (e) {
    showLogin(e.message);
  }
}

async function start() {
  const session = await get("/session");
  document.getElementById("home").textContent = session.home;
  document.getElementById("logout").hidden = !session.authRequired;
  if (!session.signedIn) return showLogin();
  route();
}

function buildNav() {
  const nav = document.querySelector("nav.top");
  replace(nav, NAV.map(([view, label]) => h("a", { href: `#/${view}`, "data-view": view }, label)));
}

document.getElementById("login-form").addEventListener("submit", signIn);
document.getElementById("logout").addEventListener("click", async () => { await post("/logout"); location.hash = "#/jobs"; showLogin(); });
window.addEventListener("hashchange", route);
window.addEventListener("signed-out", () => showLogin("your session ended; sign in again"));
buildNav();
start();
