// The playground: streams one prompt from each chosen model side by side through the public API, with the
// session's short-lived token; Stop aborts every stream (the gateway then cancels the jobs).
(() => {
  const root = document.getElementById("playground");
  if (!root || !document.getElementById("send")) return;
  const api = root.dataset.api;
  const base = root.dataset.base;
  const $ = (id) => document.getElementById(id);
  const MAX_PANES = 4;
  let token = null;  // a promise of the session's token
  let conversations = {};  // model -> messages so far
  let controllers = [];
  let snippetKind = "curl";
  let lastBody = null;

  function sessionToken(renew) {
    // One request for every stream that needs it (parallel panes share the session's one token).
    if (!token || renew) {
      token = fetch(`${base}/token`, {method: "POST", headers: {"x-csrftoken": root.dataset.csrf}})
        .then(async (answer) => {
          if (!answer.ok) throw new Error(`could not get a playground token (${answer.status})`);
          return (await answer.json()).token;
        });
      token.catch(() => { token = null; });
    }
    return token;
  }

  function pane(model) {
    const id = `pane-${CSS.escape(model)}`;
    let card = document.getElementById(id);
    if (card) return card;
    card = document.createElement("div");
    card.id = id;
    card.className = "col pane";
    card.dataset.model = model;
    card.innerHTML = `<div class="card h-100"><div class="card-header"><code class="pane-model"></code>
      <span class="ms-auto text-secondary small pane-stats"></span></div>
      <div class="card-body"><div class="pane-log" style="white-space: pre-wrap"></div></div></div>`;
    card.querySelector(".pane-model").textContent = model;
    $("panes").append(card);
    return card;
  }

  function bubble(card, role, text) {
    const entry = document.createElement("div");
    entry.className = role === "user" ? "fw-bold mt-2" : "mt-1 pane-answer";
    entry.textContent = text;
    card.querySelector(".pane-log").append(entry);
    return entry;
  }

  function requestBody(model, messages) {
    const body = {model, messages, stream: true, stream_options: {include_usage: true},
                  max_tokens: Number($("max-tokens").value) || 256};
    const temperature = $("temperature").value;
    if (temperature !== "") body.temperature = Number(temperature);
    return body;
  }

  async function stream(model, body, card, controller) {
    const answerBox = bubble(card, "assistant", "");
    const stats = card.querySelector(".pane-stats");
    const started = performance.now();
    let first = null;
    let text = "";
    let usage = null;
    stats.textContent = "waiting…";
    let response = null;
    for (const renew of [false, true]) {
      response = await fetch(`${api}/v1/chat/completions`, {
        method: "POST", signal: controller.signal, body: JSON.stringify(body),
        headers: {"content-type": "application/json", authorization: `Bearer ${await sessionToken(renew)}`}});
      if (response.status !== 401) break;
    }
    if (!response.ok) {
      const problem = await response.json().catch(() => ({}));
      throw new Error(problem.error?.message || `HTTP ${response.status}`);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let pending = "";
    const show = () => {
      const elapsed = first === null ? null : (performance.now() - first) / 1000;
      const parts = [first === null ? "" : `first token ${Math.round(first - started)} ms`];
      if (usage && elapsed > 0) parts.push(`${(usage.completion_tokens / elapsed).toFixed(1)} tokens/s`,
                                           `${usage.completion_tokens} tokens`);
      stats.textContent = parts.filter(Boolean).join(" · ");
    };
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      pending += decoder.decode(value, {stream: true});
      const lines = pending.split("\n");
      pending = lines.pop();
      for (const line of lines) {
        if (line.startsWith(": queued")) stats.textContent = line.slice(2);
        if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
        const chunk = JSON.parse(line.slice(6));
        if (chunk.error) throw new Error(chunk.error.message);
        const delta = chunk.choices?.[0]?.delta?.content;
        if (delta) {
          if (first === null) first = performance.now();
          text += delta;
          answerBox.textContent = text;
          show();
        }
        if (chunk.usage) usage = chunk.usage;
      }
    }
    show();
    return text;
  }

  async function send() {
    const prompt = $("prompt").value.trim();
    const models = [...document.querySelectorAll(".model-choice:checked")].map((box) => box.value);
    $("playground-error").textContent = "";
    if (!prompt || models.length === 0) {
      $("playground-error").textContent = models.length ? "Write a prompt first." : "Pick a model first.";
      return;
    }
    if (models.length > MAX_PANES) {
      $("playground-error").textContent = `Compare at most ${MAX_PANES} models at once.`;
      return;
    }
    $("send").disabled = true;
    $("stop").disabled = false;
    controllers = [];
    const system = $("system-prompt").value.trim();
    await Promise.all(models.map(async (model) => {
      const card = pane(model);
      const messages = conversations[model] || (system ? [{role: "system", content: system}] : []);
      messages.push({role: "user", content: prompt});
      conversations[model] = messages;
      bubble(card, "user", prompt);
      const controller = new AbortController();
      controllers.push(controller);
      const body = requestBody(model, messages);
      lastBody = body;
      renderSnippet();
      try {
        const text = await stream(model, body, card, controller);
        messages.push({role: "assistant", content: text});
      } catch (problem) {
        messages.pop();
        const stats = card.querySelector(".pane-stats");
        stats.textContent = problem.name === "AbortError" ? "stopped" : `error: ${problem.message}`;
      }
    }));
    $("prompt").value = "";
    $("send").disabled = false;
    $("stop").disabled = true;
  }

  function renderSnippet() {
    if (!lastBody) return;
    const body = {...lastBody, messages: lastBody.messages.slice(-2)};
    const json = JSON.stringify(body);
    const snippets = {
      curl: `curl ${api}/v1/chat/completions \\\n  -H "Authorization: Bearer $MODELPORT_TOKEN" \\\n` +
            `  -H "Content-Type: application/json" \\\n  -d '${json.replaceAll("'", "'\\''")}'`,
      python: `import os\nfrom openai import OpenAI\n\nclient = OpenAI(base_url="${api}/v1", ` +
              `api_key=os.environ["MODELPORT_TOKEN"])\nstream = client.chat.completions.create(\n` +
              `    model=${JSON.stringify(body.model)},\n    messages=${JSON.stringify(body.messages)},\n` +
              `    max_tokens=${body.max_tokens},\n    stream=True,\n)\nfor chunk in stream:\n` +
              `    if chunk.choices and chunk.choices[0].delta.content:\n` +
              `        print(chunk.choices[0].delta.content, end="", flush=True)\n`,
      javascript: `import OpenAI from "openai";\n\nconst client = new OpenAI({baseURL: "${api}/v1", ` +
                  `apiKey: process.env.MODELPORT_TOKEN});\nconst stream = await client.chat.completions.create(` +
                  `${JSON.stringify({...body, stream_options: undefined}, null, 2)});\n` +
                  `for await (const chunk of stream) process.stdout.write(chunk.choices[0]?.delta?.content ?? "");\n`,
    };
    $("snippet").textContent = snippets[snippetKind];
  }

  $("send").addEventListener("click", send);
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) send();
  });
  $("stop").addEventListener("click", () => controllers.forEach((controller) => controller.abort()));
  $("clear").addEventListener("click", () => { conversations = {}; $("panes").replaceChildren(); });
  for (const tab of document.querySelectorAll("#snippet-tabs a")) {
    tab.addEventListener("click", (event) => {
      event.preventDefault();
      document.querySelectorAll("#snippet-tabs a").forEach((other) => other.classList.remove("active"));
      tab.classList.add("active");
      snippetKind = tab.dataset.snippet;
      renderSnippet();
    });
  }
  $("copy-snippet").addEventListener("click", () => navigator.clipboard?.writeText($("snippet").textContent));
})();
