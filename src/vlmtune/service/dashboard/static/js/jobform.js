// The new-job form: CreateModelCustomizationJob's fields, hyperparameters by the service's names with their ranges.
// An empty hyperparameter is not sent: the service then applies its default (the target's, when one is chosen).

import { get, h, post, replace } from "./api.js";

const JOB_NAME = /^[a-zA-Z0-9](-*[a-zA-Z0-9+\-.])*$/;
const MODEL_NAME = /^([0-9a-zA-Z][_-]?){1,63}$/;

export async function jobForm(onCreated) {
  const spec = await get("/form");
  const stamp = new Date().toISOString().slice(0, 19).replace(/[-:T]/g, "").slice(2);
  const fields = {};
  const status = h("div", { class: "form-status" });
  const submit = h("button", { type: "submit", class: "primary" }, "Create job");

  const text = (name, label, value, help, attrs = {}) => {
    const input = h("input", { name, id: `f-${name}`, value: value || "", autocomplete: "off", ...attrs });
    fields[name] = { input, error: h("div", { class: "error-text" }) };
    return h("div", { class: "field" }, h("label", { for: `f-${name}` }, label), input, h("div", { class: "hint" }, help), fields[name].error);
  };
  const models = h("datalist", { id: "base-models" }, spec.baseModels.map((m) => h("option", { value: m })));
  const target = h("select", { name: "target", id: "f-target" }, Object.keys(spec.targets).map((t) => h("option", { value: t }, t)));
  const hyper = [...spec.service, ...spec.vlmtune];

  const setup = h("div", { class: "form-grid" },
    text("jobName", "Job name", `job-${stamp}`, "letters, digits, - + ."),
    text("customModelName", "Custom model name", `job-${stamp}-model`, "the model the job leaves"),
    text("baseModelIdentifier", "Base model", "tiny", "tiny, tiny-<family>, a custom model, a folder or a hub id", { list: "base-models" }),
    h("div", { class: "field" }, h("label", { for: "f-target" }, "Target"), target,
      h("div", { class: "hint" }, "check the hyperparameters against a managed model's ranges")),
    text("train", "Training data", "", "s3://bucket/train.jsonl or an absolute path", { required: true, class: "wide" }),
    text("validation", "Validation data", "", "optional: without it, no validation loss", { class: "wide" }),
    text("output", "Output location", spec.outputLocation, "the job's artifacts go to a folder under it", { class: "wide" }),
    models);
  const serviceGrid = h("div", { class: "form-grid hp" }, spec.service.map((f) => hyperField(f, fields)));
  const vlmtuneGrid = h("div", { class: "form-grid hp" }, spec.vlmtune.map((f) => hyperField(f, fields)));

  const form = h("form", { class: "card job-form", novalidate: true, onsubmit: async (e) => {
    e.preventDefault();
    if (!check()) return;
    submit.disabled = true;
    replace(status, h("span", { class: "muted" }, "creating…"));
    try {
      const { jobArn } = await post("/jobs", body());
      onCreated(jobArn, "job/" + jobArn.split("/").pop());
    } catch (err) {
      replace(status, h("div", { class: "error", role: "alert" }, err.message));
      submit.disabled = false;
    }
  } },
  h("h2", {}, "New fine-tuning job"),
  setup,
  h("h3", { class: "section" }, "Hyperparameters ", h("span", { class: "muted small" }, "the managed service's names; empty = its default")),
  serviceGrid,
  h("details", {}, h("summary", {}, "vlmtune options (method, LoRA, validation, logging)"), vlmtuneGrid),
  h("div", { class: "form-foot" }, status, submit));

  // The custom model's name follows the job's until someone edits it.
  let modelNameEdited = false;
  fields.customModelName.input.addEventListener("input", () => { modelNameEdited = true; });
  fields.jobName.input.addEventListener("input", () => {
    if (!modelNameEdited) fields.customModelName.input.value = `${fields.jobName.input.value}-model`;
  });
  target.addEventListener("change", () => { hyper.forEach((f) => describe(f, fields, spec.targets[target.value])); check(); });
  hyper.forEach((f) => describe(f, fields, spec.targets[target.value]));
  form.addEventListener("input", () => check(false));

  function check(all = true) {
    let ok = true;
    const say = (name, message) => {
      fields[name].error.textContent = message || "";
      fields[name].input.classList.toggle("invalid", !!message);
      if (message) ok = false;
    };
    const v = (name) => fields[name].input.value.trim();
    say("jobName", JOB_NAME.test(v("jobName")) && v("jobName").length <= 63 ? "" : "expected 1-63 letters, digits, - + .");
    say("customModelName", MODEL_NAME.test(v("customModelName")) ? "" : "expected letters and digits, single - or _ between");
    say("baseModelIdentifier", v("baseModelIdentifier") ? "" : "required");
    say("train", v("train") || !all ? "" : "required: where the training data is");
    for (const f of hyper) say(f.name, problem(f, fields[f.name].input.value.trim(), spec.targets[target.value][f.field]));
    submit.disabled = !ok;
    return ok;
  }

  function body() {
    const v = (name) => fields[name].input.value.trim();
    const hyperParameters = {};
    for (const f of hyper) if (v(f.name) !== "") hyperParameters[f.name] = v(f.name);
    if (target.value !== "generic") hyperParameters.target = target.value;
    const request = {
      jobName: v("jobName"), customModelName: v("customModelName"), roleArn: spec.roleArn, customizationType: "FINE_TUNING",
      baseModelIdentifier: v("baseModelIdentifier"), trainingDataConfig: { s3Uri: v("train") },
      outputDataConfig: { s3Uri: v("output") }, hyperParameters,
    };
    if (v("validation")) request.validationDataConfig = { validators: [{ s3Uri: v("validation") }] };
    return request;
  }
  return form;
}

function hyperField(f, fields) {
  const id = `f-${f.name}`;
  const input = f.kind === "choice"
    ? h("select", { id, name: f.name }, h("option", { value: "" }, `default (${f.default})`), f.choices.map((c) => h("option", { value: c }, c)))
    : h("input", { id, name: f.name, inputmode: f.kind === "text" ? "text" : "decimal", autocomplete: "off" });
  const hint = h("div", { class: "hint mono" });
  fields[f.name] = { input, error: h("div", { class: "error-text" }), hint };
  return h("div", { class: "field", title: f.help }, h("label", { for: id }, f.name,
    f.vlmtuneName !== f.name ? h("span", { class: "muted small" }, ` ${f.vlmtuneName}`) : null), input, hint, fields[f.name].error);
}

// The range hint and placeholder of a field under the chosen target.
function describe(f, fields, targetRanges) {
  const { input, hint } = fields[f.name];
  const bound = targetRanges[f.field];
  const lo = bound ? bound.min : f.min, hi = bound ? bound.max : f.max, dflt = bound ? bound.default : f.default;
  if (f.kind !== "choice") input.placeholder = `default ${dflt}`;
  const range = lo === undefined && hi === undefined ? "" : `${lo ?? "−∞"}${f.minExclusive && !bound ? " (excl.)" : ""} – ${hi ?? "∞"}`;
  hint.textContent = f.kind === "choice" ? f.choices.join(" · ") : `${f.kind} ${range}${bound ? " (target)" : ""}`;
}

// What is wrong with a value, or "" (empty = the default, always fine).
export function problem(f, value, bound) {
  if (value === "" || f.kind === "choice") return "";
  const n = Number(value);
  if (f.kind === "int" && !/^-?\d+$/.test(value)) return `expected a whole number, found ${value}`;
  if (f.kind === "float" && (value === "" || !Number.isFinite(n))) return `expected a number, found ${value}`;
  const lo = bound ? bound.min : f.min, hi = bound ? bound.max : f.max;
  const loEx = !bound && f.minExclusive, hiEx = !bound && f.maxExclusive;
  if (lo !== undefined && (loEx ? n <= lo : n < lo)) return `expected ${loEx ? "more than" : "at least"} ${lo}${bound ? " for this target" : ""}, found ${value}`;
  if (hi !== undefined && (hiEx ? n >= hi : n > hi)) return `expected ${hiEx ? "less than" : "at most"} ${hi}${bound ? " for this target" : ""}, found ${value}`;
  return "";
}
