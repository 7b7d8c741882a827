// Models and deployments: custom and imported models, deploy / undeploy, and a playground that asks any deployment.

import { card, every, get, h, num, pill, post, replace, short, when } from "./api.js";

const MODEL_NAME = /^([0-9a-zA-Z][_-]?){1,63}$/;

export async function modelsView(main, params, cleanups) {
  const tables = h("div", { class: "col" });
  const play = h("div", { class: "col" });
  main.append(h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Models & deployments"),
    h("p", { class: "muted" }, "Custom models (what finished jobs leave) and imported models; a deployment serves one over Converse and OpenAI's API."))),
  h("div", { class: "columns" }, tables, play));
  const playground = playgroundCard();
  play.append(playground.element);
  const refresh = async () => {
    const found = await get("/models");
    replace(tables, modelsCard("Custom models", found.custom, found.deployments, refresh),
      modelsCard("Imported models", found.imported, found.deployments, refresh), deploymentsCard(found.deployments, refresh));
    playground.setDeployments(found.deployments);
  };
  every(2500, refresh, cleanups);
}

function modelsCard(title, models, deployments, refresh) {
  if (!models.length) return card(title, h("p", { class: "muted" }, title === "Custom models" ? "None yet: a completed job leaves one." : "None."));
  return card(title, h("table", { class: "grid compact", "data-table": title }, h("thead", {}, h("tr", {}, ["name", "base", "created", "", ""].map((t) => h("th", {}, t)))),
    h("tbody", {}, models.map((m) => {
      const serving = deployments.filter((d) => d.modelArn === m.modelArn);
      return h("tr", { "data-model": m.modelName }, h("td", { class: "strong" }, m.modelName, h("div", { class: "muted small mono", title: m.modelArn }, short(m.modelArn, 40))),
        h("td", { class: "small mono" }, m.baseModelName || m.modelArchitecture || "–"), h("td", { class: "small muted" }, when(m.creationTime)),
        h("td", {}, serving.map((d) => pill(d.status))), h("td", {}, deployForm(m, refresh)));
    }))));
}

function deployForm(model, refresh) {
  const name = h("input", { class: "small-input", value: `${model.modelName}-dep`.slice(0, 63), "aria-label": "deployment name" });
  const error = h("div", { class: "error-text" });
  const holder = h("div", { class: "deploy" });
  const open = h("button", { class: "ghost small", "data-action": "deploy", onclick: () => replace(holder, name, go, error) }, "Deploy");
  const go = h("button", { class: "primary small", "data-action": "deploy-confirm", onclick: async () => {
    if (!MODEL_NAME.test(name.value)) { error.textContent = "letters and digits, single - or _ between"; return; }
    go.disabled = true;
    try { await post("/deployments", { modelDeploymentName: name.value, modelArn: model.modelArn }); await refresh(); }
    catch (e) { error.textContent = e.message; go.disabled = false; }
  } }, "Deploy");
  holder.append(open);
  return holder;
}

function deploymentsCard(deployments, refresh) {
  if (!deployments.length) return card("Deployments", h("p", { class: "muted" }, "Nothing deployed."));
  return card("Deployments", h("table", { class: "grid compact", "data-table": "deployments" }, h("thead", {}, h("tr", {}, ["name", "model", "status", ""].map((t) => h("th", {}, t)))),
    h("tbody", {}, deployments.map((d) => h("tr", { "data-deployment": d.customModelDeploymentName },
      h("td", { class: "strong" }, d.customModelDeploymentName), h("td", { class: "mono small", title: d.modelArn }, short(d.modelArn, 36)),
      h("td", {}, pill(d.status), d.failureMessage ? h("div", { class: "error-text" }, d.failureMessage) : null),
      h("td", {}, h("button", { class: "ghost small danger-text", "data-action": "undeploy", onclick: async (e) => {
        e.target.disabled = true;
        await post("/deployments/delete", { arn: d.customModelDeploymentArn });
        refresh();
      } }, "Undeploy")))))));
}

function playgroundCard() {
  const select = h("select", { id: "pg-model", "aria-label": "deployment" });
  const file = h("input", { type: "file", id: "pg-image", accept: "image/png,image/jpeg,image/gif,image/webp" });
  const preview = h("div", { class: "drop" }, h("span", { class: "muted" }, "drop an image here, or choose one"));
  const question = h("textarea", { id: "pg-question", rows: 3, placeholder: "Ask about the image…" });
  const maxTokens = h("input", { id: "pg-max", type: "number", value: 32, min: 1, max: 1024 });
  const temperature = h("input", { id: "pg-temp", type: "number", value: 0, min: 0, max: 2, step: 0.1 });
  const ask = h("button", { class: "primary", id: "pg-ask" }, "Ask");
  const result = h("div", { class: "pg-result", "data-result": "" });
  let image = null;

  const load = (f) => {
    if (!f) return;
    const reader = new FileReader();
    reader.onload = () => {
      const [head, b64] = String(reader.result).split(",");
      image = { b64, format: (head.match(/image\/(\w+)/) || [])[1] || "png" };
      replace(preview, h("img", { src: reader.result, alt: f.name }), h("span", { class: "muted small" }, `${f.name} · ${num(f.size)} bytes`));
    };
    reader.readAsDataURL(f);
  };
  file.addEventListener("change", () => load(file.files[0]));
  preview.addEventListener("dragover", (e) => { e.preventDefault(); preview.classList.add("over"); });
  preview.addEventListener("dragleave", () => preview.classList.remove("over"));
  preview.addEventListener("drop", (e) => { e.preventDefault(); preview.classList.remove("over"); load(e.dataTransfer.files[0]); });
  ask.addEventListener("click", async () => {
    ask.disabled = true;
    replace(result, h("span", { class: "muted" }, "asking…"));
    try {
      const r = await post("/playground", { modelId: select.value, question: question.value, image: image && image.b64,
        format: image && image.format, maxTokens: Number(maxTokens.value), temperature: Number(temperature.value) });
      replace(result, r.error ? h("div", { class: "error" }, `${r.status}: ${r.error}`) : answer(r));
    } catch (e) {
      replace(result, h("div", { class: "error" }, e.message));
    }
    ask.disabled = false;
  });
  const element = card("Playground",
    h("div", { class: "field" }, h("label", { for: "pg-model" }, "Deployment"), select),
    h("div", { class: "field" }, h("label", { for: "pg-image" }, "Image"), preview, file),
    h("div", { class: "field" }, h("label", { for: "pg-question" }, "Question"), question),
    h("div", { class: "form-grid tight" }, h("div", { class: "field" }, h("label", { for: "pg-max" }, "max tokens"), maxTokens),
      h("div", { class: "field" }, h("label", { for: "pg-temp" }, "temperature"), temperature)),
    h("div", { class: "form-foot" }, ask), result);
  return {
    element,
    setDeployments(deployments) {
      const active = deployments.filter((d) => d.status === "Active");
      const keep = select.value;
      replace(select, active.length ? active.map((d) => h("option", { value: d.customModelDeploymentArn }, d.customModelDeploymentName))
        : h("option", { value: "" }, "no active deployment"));
      if (active.some((d) => d.customModelDeploymentArn === keep)) select.value = keep;
      ask.disabled = !active.length;
    },
  };
}

function answer(r) {
  const res = r.response, usage = res.usage || {};
  const text = ((res.output || {}).message || {}).content?.map((c) => c.text).join("") ?? "";
  return h("div", {}, h("pre", { class: "answer-text", "data-answer": "" }, text || "(empty)"),
    h("div", { class: "usage" },
      h("span", { "data-usage": "input" }, h("b", {}, num(usage.inputTokens)), " input tokens"),
      h("span", { "data-usage": "output" }, h("b", {}, num(usage.outputTokens)), " output tokens"),
      h("span", {}, h("b", {}, num(usage.totalTokens)), " total"),
      h("span", { "data-usage": "latency" }, h("b", {}, `${num((res.metrics || {}).latencyMs)} ms`), " latency"),
      h("span", { class: "muted" }, `round trip ${r.roundTripMs} ms · ${res.stopReason}`)));
}
