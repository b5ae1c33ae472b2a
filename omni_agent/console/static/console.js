// omni-agent console page: one WebSocket for events, control, frames, speech and push-to-talk.
// Plain JS, no build step. Server messages: see omni_agent/console/protocol.py.
"use strict";
(() => {
  const FRAME = 1, AUDIO_IN = 2, SPEECH = 3;
  const $ = (sel, root = document) => root.querySelector(sel);
  const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text != null) e.textContent = text; return e; };
  const stats = { frames: [], eventTimes: [], speechPlayed: 0, speechStopped: 0, events: 0 };
  window.__console = stats;  // read by tests and the benchmark
  if (location.search.includes("token=")) history.replaceState(null, "", "/");  // the cookie holds it now

  let ws, state = "idle", liveRun = null;
  const steps = new Map(), calls = new Map();

  // -- socket --------------------------------------------------------------------------------
  function connect() {
    ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => { $("#conn").textContent = "connected"; };
    ws.onclose = () => { $("#conn").textContent = "disconnected: reload the page"; };
    ws.onmessage = (m) => (typeof m.data === "string" ? onJson(JSON.parse(m.data)) : onBinary(m.data));
  }
  const send = (msg) => ws && ws.readyState === 1 && ws.send(JSON.stringify(msg));

  function onBinary(buf) {
    const kind = new Uint8Array(buf, 0, 1)[0];
    if (kind === FRAME) showFrame(new DataView(buf).getFloat64(1, true), buf.slice(9));
    else if (kind === SPEECH) playSpeech(buf.slice(1));
  }

  function onJson(msg) {
    switch (msg.type) {
      case "event":
        stats.events++;
        stats.eventTimes.push({ type: msg.event.type, at: msg.event.time * 1000, received: performance.timeOrigin + performance.now() });
        if (stats.eventTimes.length > 2000) stats.eventTimes.shift();
        onEvent(msg.event);
        break;
      case "state": setState(msg); break;
      case "approval": showApproval(msg); break;
      case "approval_closed": { const a = $(`.approval[data-call-id="${CSS.escape(msg.call_id)}"]`); if (a) a.remove(); break; }
      case "target": drawTarget(msg); break;
      case "observation": {
        const box = msg.step ? stepBox(msg.step) : $("#timeline");
        const obs = el("div", "observation dim", "the model was shown:");
        for (const src of msg.images) { const img = el("img"); img.src = src; img.alt = "observation"; obs.append(img); }
        box.append(obs); scroll();
        break;
      }
      case "speech": $("#voice-status").textContent = `saying: ${msg.text}`; break;
      case "speech_stop": stopSpeech(); break;
      case "heard": $("#voice-status").textContent = `heard ${msg.seconds.toFixed(1)} s of speech`; break;
      case "error": showError(msg.message); break;
    }
  }

  function showError(message) {
    const box = $("#errors");
    box.prepend(el("div", "error", message));
    while (box.children.length > 3) box.lastChild.remove();
    document.querySelectorAll(".approval .approval-error").forEach((e) => { e.textContent = message; });
  }

  function setState(msg) {
    state = msg.state;
    const badge = $("#state");
    badge.dataset.state = state;
    badge.textContent = state === "paused" && msg.at_gate ? "paused (between steps)" : state;
    $("#stop-btn").disabled = state === "idle";
    $("#pause-btn").disabled = state !== "running";
    $("#resume-btn").disabled = state !== "paused";
    $("#run-btn").disabled = state !== "idle";
    $("#screen-wrap").classList.toggle("takeover", state !== "running");
  }

  // -- timeline ------------------------------------------------------------------------------
  function stepBox(n) {
    if (!steps.has(n)) {
      const box = el("div", "step"); box.dataset.step = n;
      box.append(el("h4", null, `step ${n}`), el("details", "thinking"), el("div", "text"), el("div", "calls"), el("div", "dim timing"));
      box.querySelector(".thinking").append(el("summary", null, "thinking"), el("div", "thinking-text"));
      box.querySelector(".thinking").hidden = true;
      $("#timeline").append(box);
      steps.set(n, box);
    }
    return steps.get(n);
  }

  function callBox(step, call) {
    if (!call) return null;
    if (!calls.has(call.id)) {
      const box = el("div", "call"); box.dataset.callId = call.id;
      box.append(el("span", "call-name", call.name), el("div", "call-args", JSON.stringify(call.arguments)),
        el("div", "validation"), el("div", "decision"), el("div", "result"), el("div", "dim call-timing"));
      stepBox(step).querySelector(".calls").append(box);
      calls.set(call.id, box);
    }
    return calls.get(call.id);
  }

  function notRun(step, call, why) {
    const r = callBox(step, call).querySelector(".result");
    r.textContent = `did not run (${why})`; r.classList.add("bad");
  }

  const scroll = () => { const t = $("#timeline"); t.scrollTop = t.scrollHeight; };

  function onEvent(e) {
    switch (e.type) {
      case "run_started":
        steps.clear(); calls.clear(); liveRun = e.run_id;
        $("#timeline").replaceChildren(el("div", "dim", `run ${e.run_id} · ${e.model} · ${e.instruction || "(spoken command)"}`));
        break;
      case "step_started": stepBox(e.step); break;
      case "model_text": {
        const box = stepBox(e.step);
        if (e.channel === "thinking") { box.querySelector(".thinking").hidden = false; box.querySelector(".thinking-text").textContent += e.text; }
        else box.querySelector(".text").textContent += e.text;
        break;
      }
      case "model_finished": stepBox(e.step).querySelector(".timing").textContent = `model ${e.seconds.toFixed(2)} s · ${e.completion_tokens} tokens`; break;
      case "call_parsed": callBox(e.step, e.call); break;
      case "call_validated": {
        const v = callBox(e.step, e.call).querySelector(".validation");
        v.textContent = e.ok ? "valid" : `invalid: ${e.errors.join("; ")}`; v.classList.toggle("bad", !e.ok);
        if (!e.ok) notRun(e.step, e.call, "invalid");
        break;
      }
      case "policy_decided": {
        const d = callBox(e.step, e.call).querySelector(".decision");
        const answer = e.approved === true ? " · approved" : e.approved === false ? " · denied" : "";
        d.textContent = `policy: ${e.decision}${e.reason ? ` (${e.reason})` : ""}${answer}`; d.className = `decision ${e.decision}`;
        if (e.decision === "deny" || e.approved === false) notRun(e.step, e.call, "denied");
        break;
      }
      case "tool_started": {
        const box = callBox(e.step, e.call);
        box.querySelector(".call-args").textContent = JSON.stringify(e.call.arguments);
        box.querySelector(".result").textContent = "running…";
        break;
      }
      case "tool_finished": {
        const r = callBox(e.step, e.call).querySelector(".result");
        r.textContent = (e.result.text || "").slice(0, 3000); r.classList.toggle("bad", e.result.is_error);
        for (const src of e.result.images) { const img = el("img"); img.src = src; img.alt = "screenshot the model was shown"; r.append(img); }
        callBox(e.step, e.call).querySelector(".call-timing").textContent = `${e.seconds.toFixed(2)} s`;
        break;
      }
      case "user_action": {
        const line = el("div", "user-action", `you: ${e.tool} ${JSON.stringify(e.arguments)} → ${e.result ? e.result.text.slice(0, 300) : ""}`);
        $("#timeline").append(line);
        break;
      }
      case "error": $("#timeline").append(el("div", "error", `${e.kind}: ${e.message}`)); break;
      case "step_finished": { const t = stepBox(e.step).querySelector(".timing"); t.textContent += ` · step ${e.seconds.toFixed(2)} s`; break; }
      case "run_finished":
        $("#timeline").append(el("div", "answer", `${e.reason}${e.answer ? `: ${e.answer}` : ""} (${e.steps} steps, ${e.seconds.toFixed(1)} s)`));
        break;
    }
    scroll();
  }

  // -- approvals -----------------------------------------------------------------------------
  function showApproval(msg) {
    if ($(`.approval[data-call-id="${CSS.escape(msg.call.id)}"]`)) return;
    const box = el("div", "approval"); box.dataset.callId = msg.call.id;
    const args = el("textarea", "approval-args"); args.value = JSON.stringify(msg.call.arguments, null, 2);
    const approve = el("button", "approve", "Approve"), deny = el("button", "deny danger", "Deny");
    box.append(el("div", null, `Run ${msg.call.name}? `), el("div", "dim", msg.reason), args, el("div", "error approval-error"), approve, deny);
    approve.onclick = () => {
      let edited;
      try { edited = JSON.parse(args.value); } catch (err) { box.querySelector(".approval-error").textContent = `not JSON: ${err.message}`; return; }
      const changed = JSON.stringify(edited) !== JSON.stringify(msg.call.arguments);
      send({ type: "approve", call_id: msg.call.id, approve: true, ...(changed ? { arguments: edited } : {}) });
    };
    deny.onclick = () => send({ type: "approve", call_id: msg.call.id, approve: false });
    $("#approvals").append(box);
  }

  // -- live screen ---------------------------------------------------------------------------
  const screen = $("#screen");
  let pending = null, loading = false, shownUrl = null;
  function showFrame(captured, jpeg) {
    pending = { captured, received: performance.timeOrigin + performance.now(), blob: new Blob([jpeg], { type: "image/jpeg" }) };
    if (!loading) nextFrame();
  }
  function nextFrame() {
    if (!pending) { loading = false; return; }
    loading = true;
    const frame = pending; pending = null;
    const url = URL.createObjectURL(frame.blob);
    screen.onload = () => {
      if (shownUrl) URL.revokeObjectURL(shownUrl);
      shownUrl = url;
      frame.shown = performance.timeOrigin + performance.now();
      delete frame.blob;
      stats.frames.push(frame); if (stats.frames.length > 2000) stats.frames.shift();
      $("#no-screen").hidden = true;
      nextFrame();
    };
    screen.src = url;
  }
  setInterval(() => {
    const now = performance.timeOrigin + performance.now();
    const recent = stats.frames.filter((f) => now - f.shown < 2000);
    $("#fps").textContent = recent.length ? `${(recent.length / 2).toFixed(1)} frames/s · last frame ${Math.round(recent[recent.length - 1].shown - recent[recent.length - 1].captured * 1000)} ms after capture` : "";
  }, 1000);

  // Where the image is drawn inside the element (object-fit: contain).
  function imageBox() {
    const r = screen.getBoundingClientRect(), w = screen.naturalWidth || 1280, h = screen.naturalHeight || 800;
    const s = Math.min(r.width / w, r.height / h);
    return { left: r.left + (r.width - w * s) / 2, top: r.top + (r.height - h * s) / 2, width: w * s, height: h * s, rect: r };
  }

  const overlay = $("#overlay");
  function drawTarget(t) {
    const b = imageBox(), ctx = overlay.getContext("2d");
    overlay.width = b.rect.width; overlay.height = b.rect.height;
    const px = (fx) => b.left - b.rect.left + fx * b.width, py = (fy) => b.top - b.rect.top + fy * b.height;
    ctx.clearRect(0, 0, overlay.width, overlay.height);
    ctx.strokeStyle = "#ff1744"; ctx.lineWidth = 3;
    if (t.fx0 != null) { ctx.beginPath(); ctx.moveTo(px(t.fx0), py(t.fy0)); ctx.lineTo(px(t.fx), py(t.fy)); ctx.stroke(); }
    ctx.beginPath(); ctx.arc(px(t.fx), py(t.fy), 12, 0, 2 * Math.PI); ctx.stroke();
    ctx.beginPath(); ctx.arc(px(t.fx), py(t.fy), 3, 0, 2 * Math.PI); ctx.fill();
    overlay.dataset.target = `${t.fx.toFixed(3)},${t.fy.toFixed(3)}`;
    clearTimeout(drawTarget.timer);
    drawTarget.timer = setTimeout(() => ctx.clearRect(0, 0, overlay.width, overlay.height), 2500);
  }

  // Take-over: clicks and drags on the screen, typing and keys, while no step runs.
  let down = null;
  const frac = (ev) => { const b = imageBox(); return [Math.min(1, Math.max(0, (ev.clientX - b.left) / b.width)), Math.min(1, Math.max(0, (ev.clientY - b.top) / b.height))]; };
  $("#screen-wrap").addEventListener("pointerdown", (ev) => { if (state !== "running") down = frac(ev); });
  // A single click waits a moment, so a double click is sent once (not as two clicks and a double).
  let clickTimer = null;
  $("#screen-wrap").addEventListener("pointerup", (ev) => {
    if (!down || state === "running") return;
    const [fx, fy] = down, [fx2, fy2] = frac(ev); down = null;
    clearTimeout(clickTimer);
    if (Math.hypot(fx2 - fx, fy2 - fy) > 0.01) { send({ type: "drag", fx, fy, fx2, fy2 }); return; }
    const type = ev.button === 2 ? "right_click" : "click";
    clickTimer = setTimeout(() => send({ type, fx, fy }), 250);
  });
  $("#screen-wrap").addEventListener("dblclick", (ev) => {
    clearTimeout(clickTimer);
    if (state !== "running") { const [fx, fy] = frac(ev); send({ type: "double_click", fx, fy }); }
  });
  $("#screen-wrap").addEventListener("contextmenu", (ev) => ev.preventDefault());
  $("#takeover-send").onclick = () => { const t = $("#takeover-text"); if (t.value) { send({ type: "type", text: t.value }); t.value = ""; } };
  $("#takeover-press").onclick = () => { const k = $("#takeover-key"); if (k.value) { send({ type: "key", keys: k.value.split("+").map((s) => s.trim()).filter(Boolean) }); k.value = ""; } };

  // -- control -------------------------------------------------------------------------------
  $("#start-form").onsubmit = (ev) => {
    ev.preventDefault();
    const text = $("#instruction").value.trim();
    if (text) send({ type: "start", instruction: text });
  };
  $("#stop-btn").onclick = () => send({ type: "stop" });
  $("#pause-btn").onclick = () => send({ type: "pause" });
  $("#resume-btn").onclick = () => send({ type: "resume" });

  // -- voice ---------------------------------------------------------------------------------
  const speech = $("#speech");
  speech.addEventListener("playing", () => { stats.speechPlayed++; });
  function playSpeech(wav) {
    if (speech.src) URL.revokeObjectURL(speech.src);
    speech.src = URL.createObjectURL(new Blob([wav], { type: "audio/wav" }));
    speech.play().catch((err) => showError(`cannot play speech: ${err.message}`));
  }
  function stopSpeech() { if (!speech.paused) { speech.pause(); stats.speechStopped++; } }

  let mic = null, talking = false;
  async function openMic() {
    if (mic) return mic;
    const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
    const ctx = new AudioContext({ sampleRate: 16000 });
    const source = ctx.createMediaStreamSource(stream);
    const proc = ctx.createScriptProcessor(2048, 1, 1);
    proc.onaudioprocess = (e) => {
      if (!talking) return;
      const f = e.inputBuffer.getChannelData(0), out = new Uint8Array(1 + f.length * 2), view = new DataView(out.buffer);
      out[0] = AUDIO_IN;
      for (let i = 0; i < f.length; i++) view.setInt16(1 + 2 * i, Math.max(-1, Math.min(1, f[i])) * 32767, true);
      if (ws.readyState === 1) ws.send(out.buffer);
    };
    source.connect(proc); proc.connect(ctx.destination);
    mic = { ctx, stream };
    return mic;
  }
  const talk = $("#talk-btn");
  talk.addEventListener("pointerdown", async () => {
    stopSpeech();  // barge-in: the page stops speaking at once; the server drops what is queued
    try { const m = await openMic(); await m.ctx.resume(); } catch (err) { showError(`microphone: ${err.message}`); return; }
    talking = true; send({ type: "ptt", action: "down" });
    $("#voice-status").textContent = "recording… release to send"; talk.classList.add("active");
  });
  const release = () => { if (!talking) return; talking = false; send({ type: "ptt", action: "up" }); talk.classList.remove("active"); $("#voice-status").textContent = "sent; listening…"; };
  talk.addEventListener("pointerup", release);
  talk.addEventListener("pointerleave", release);

  // -- history -------------------------------------------------------------------------------
  $("#tab-live").onclick = () => { $("#timeline").hidden = false; $("#history").hidden = true; $("#tab-live").classList.add("active"); $("#tab-history").classList.remove("active"); };
  $("#tab-history").onclick = async () => {
    $("#timeline").hidden = true; $("#history").hidden = false; $("#tab-history").classList.add("active"); $("#tab-live").classList.remove("active");
    const runs = await (await fetch("/api/runs")).json();
    $("#history-list").replaceChildren(...runs.map((r) => {
      const li = el("li", "run-entry"); li.dataset.name = r.name;
      li.append(el("strong", null, r.kind === "eval" ? "eval " : ""), el("span", null, `${r.started_at.slice(0, 19)} ${r.instruction.slice(0, 80)} `), el("span", "dim", `${r.stop_reason || r.status} · ${r.steps} steps`));
      if (r.report) { const a = el("a", "report", " report"); a.href = `/runs/${r.report}`; a.target = "_blank"; li.append(a); }
      li.onclick = (ev) => { if (ev.target.tagName !== "A" && r.kind === "run") showRun(r.name); };
      return li;
    }));
  };
  async function showRun(name) {
    const t = await (await fetch(`/api/runs/${encodeURIComponent(name)}`)).json();
    const view = $("#history-view"); view.replaceChildren(el("h3", null, `${t.meta.instruction || "(spoken)"} — ${t.meta.stop_reason || t.meta.status}`));
    const media = (part) => { if (part.kind === "image" && part.path) { const i = el("img"); i.src = `/runs/${name}/${part.path}`; return i; } if (part.kind === "audio" && part.path) { const a = el("audio"); a.controls = true; a.src = `/runs/${name}/${part.path}`; return a; } return null; };
    for (const s of t.steps) {
      const box = el("div", "step"); box.dataset.step = s.step;
      box.append(el("h4", null, `step ${s.step} · ${s.outcome}`));
      for (const m of s.new_messages) for (const part of m.content || []) { const x = media(part); if (x) box.append(x); else if (m.role === "user" && part.text) box.append(el("div", "user-action", part.text)); }
      if (s.visible_text) box.append(el("div", "text", s.visible_text));
      for (const c of s.calls) box.append(el("div", "call-args", `${c.name} ${JSON.stringify(c.arguments)}`));
      for (const r of s.results) { const d = el("div", `result${r.is_error ? " bad" : ""}`, r.content.filter((p) => p.kind === "text").map((p) => p.text).join("\n").slice(0, 2000)); for (const p of r.content) { const x = media(p); if (x) d.append(x); } box.append(d); }
      for (const p of s.observation || []) { const x = media(p); if (x) box.append(x); }
      view.append(box);
    }
    if (t.meta.answer) view.append(el("div", "answer", t.meta.answer));
  }

  fetch("/api/info").then((r) => r.json()).then((i) => { $("#model").textContent = `${i.model} · tools: ${i.tools.join(", ")}`; if (!i.screen) $("#no-screen").textContent = "no display: start with --display or a GUI toolset"; });
  connect();
})();
