/*!
 * Chat Operator website widget.
 *
 *   <script src="https://SPACE/widget.js" data-title="Help"
 *           data-greeting="Hi! How can I help?" defer></script>
 *
 * Options (data- attributes on the script tag):
 *   data-title     panel title                      (default "Chat")
 *   data-greeting  first message shown to visitors  (default none)
 *   data-color     accent colour, any CSS colour    (default #4f46e5)
 *   data-position  "right" | "left"                 (default right)
 *   data-space     Space URL when this file is hosted elsewhere
 *                  (default: where this script was loaded from)
 *   data-timeout   seconds without any news from the Space before a reply
 *                  is given up as timed out                  (default 90)
 *   data-handoff   "on": show a "Talk to a person" control   (default off)
 *   data-handoff-label  text of that control       (default "Talk to a person")
 *
 * Talks to the Space's Gradio HTTP API directly:
 *   POST <space>/gradio_api/call/chat  {"data": [{text, files: []}, conversation_id, "widget"]}
 *     -> {"event_id": "..."}
 *   GET  <space>/gradio_api/call/chat/<event_id>
 *     -> text/event-stream; "event: generating|complete|error", "data: <json>"
 *   POST <space>/feedback  {conversation_id, turn, rating: "up"|"down", source: "widget"}
 *     -> {"ok": true, "rating": "..."}  (thumbs on a reply; reply k of a conversation is turn k)
 *   POST <space>/handoff/request  {conversation_id}        (the visitor asks for a person)
 *   GET  <space>/handoff/events?conversation_id=ID  -> text/event-stream, "event: handoff",
 *        data {id, kind, text, staff, status}: this conversation's channel (staff joined,
 *        staff messages, hand-back, no one free). Fallback: GET <space>/handoff/poll?conversation_id=ID
 * While staff hold the conversation the Space answers /chat with an empty reply (no bot).
 * No dependencies, no build step. All visitor and assistant text is inserted
 * with textContent, never as HTML.
 */
(function () {
  "use strict";

  var script = document.currentScript;
  if (!script) {
    var all = document.querySelectorAll("script[src*='widget.js']");
    script = all[all.length - 1] || null;
  }
  if (window.__chatOperatorWidget) return; // loaded twice on one page: keep the first
  window.__chatOperatorWidget = true;

  function attr(name, fallback) {
    var v = script && script.getAttribute("data-" + name);
    return v && v.trim() ? v.trim() : fallback;
  }

  // Default Space: where this script came from (https://SPACE/widget.js -> https://SPACE;
  // a Space behind a path prefix, https://host/support/widget.js -> https://host/support).
  var scriptBase = window.location.origin;
  try {
    if (script && script.src) {
      var u = new URL(".", new URL(script.src, window.location.href));
      scriptBase = u.origin + u.pathname;
    }
  } catch (e) { /* keep the page origin */ }

  var SPACE = attr("space", scriptBase).replace(/\/+$/, "");
  var TITLE = attr("title", "Chat");
  var GREETING = attr("greeting", "");
  var POSITION = attr("position", "right") === "left" ? "left" : "right";
  var COLOR = attr("color", "#4f46e5");
  var SOURCE = "widget";
  var HANDOFF = /^(on|true|1|yes)$/i.test(attr("handoff", ""));
  var HANDOFF_LABEL = attr("handoff-label", "Talk to a person");
  var POLL_MS = 1000;             // the channel's fallback when EventSource is missing or refused
  var IDLE_TIMEOUT_MS = 1000 * (parseFloat(attr("timeout", "")) || 90); // silence allowed in a reply
  var START_TIMEOUT_MS = Math.min(20000, IDLE_TIMEOUT_MS);               // to get an event id back
  var FEEDBACK_TIMEOUT_MS = 10000;
  var MAX_STORED = 100;           // transcript messages kept across reloads
  var KEY = "chatop-widget:" + SPACE + ":";

  // ---------------------------------------------------------------- storage
  var memory = {};
  function load(store, name) {
    try { return window[store].getItem(KEY + name); } catch (e) { return memory[store + name] || null; }
  }
  function save(store, name, value) {
    try {
      if (value === null) window[store].removeItem(KEY + name);
      else window[store].setItem(KEY + name, value);
    } catch (e) {
      memory[store + name] = value;
    }
  }

  function newId() {
    var c = window.crypto || window.msCrypto;
    if (c && typeof c.randomUUID === "function") {
      try { return c.randomUUID(); } catch (e) { /* insecure context: fall through */ }
    }
    var b = new Uint8Array(16);
    if (c && typeof c.getRandomValues === "function") c.getRandomValues(b);
    else for (var i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    var h = [];
    for (var j = 0; j < 16; j++) h.push((b[j] + 0x100).toString(16).slice(1));
    return h.slice(0, 4).join("") + "-" + h.slice(4, 6).join("") + "-" + h.slice(6, 8).join("") +
      "-" + h.slice(8, 10).join("") + "-" + h.slice(10, 16).join("");
  }

  function conversationId(fresh) {
    var id = fresh ? null : load("localStorage", "conversation_id");
    if (!id || !/^[A-Za-z0-9_.:-]{1,128}$/.test(id)) {
      id = newId();
      save("localStorage", "conversation_id", id);
    }
    return id;
  }

  function isTurn(n) { return typeof n === "number" && n >= 0 && n % 1 === 0; }

  // Each stored reply carries its turn index (reply k of the conversation is turn k),
  // so the index stays right after a reload and after old messages are dropped.
  function loadTranscript() {
    var t;
    try { t = JSON.parse(load("localStorage", "transcript") || "[]"); } catch (e) { t = []; }
    if (!Array.isArray(t)) return [];
    var k = 0;
    return t.filter(function (m) {
      return m && (m.role === "user" || m.role === "assistant" || m.role === "staff" || m.role === "note") &&
        typeof m.text === "string";
    }).map(function (m) {
      if (m.role === "staff" || m.role === "note") {
        return { role: m.role, text: m.text, who: typeof m.who === "string" ? m.who : "", eid: String(m.eid || "") };
      }
      if (m.role !== "assistant") return { role: "user", text: m.text };
      var r = { role: "assistant", text: m.text, turn: isTurn(m.turn) ? m.turn : k };
      if (m.rating === "up" || m.rating === "down") r.rating = m.rating;
      if (m.notice === true) r.notice = true;
      k = r.turn + 1;
      return r;
    });
  }

  // Turns the Space started but the widget never showed (e.g. a reply that timed out
  // after it was accepted): kept so that later replies keep the Space's numbering.
  function loadSkipped(cid) {
    try {
      var v = JSON.parse(load("localStorage", "next_turn") || "null");
      return v && v.cid === cid && isTurn(v.n) ? v.n : 0;
    } catch (e) { return 0; }
  }

  // ----------------------------------------------------------------- styles
  var CSS = [
    ":host{all:initial;position:fixed;z-index:2147483000;bottom:20px;" + POSITION + ":20px;",
    "font-family:system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif;",
    "font-size:15px;line-height:1.45;color:#1f2937;--accent:#4f46e5;--on-accent:#fff}",
    "*,*::before,*::after{box-sizing:border-box}",
    "button,textarea{font:inherit;color:inherit}",
    ".launcher{width:60px;height:60px;border-radius:50%;border:0;cursor:pointer;background:var(--accent);",
    "color:var(--on-accent);display:flex;align-items:center;justify-content:center;",
    "box-shadow:0 6px 20px rgba(15,23,42,.25);transition:transform .15s ease,box-shadow .15s ease}",
    ".launcher:hover{transform:translateY(-2px);box-shadow:0 10px 26px rgba(15,23,42,.3)}",
    ".launcher:focus-visible,.icon-btn:focus-visible,.send:focus-visible,.retry:focus-visible,.thumb:focus-visible{",
    "outline:3px solid #93c5fd;outline-offset:2px}",
    ".launcher svg{width:28px;height:28px}",
    ".launcher .close-icon{display:none}",
    ":host(.open) .launcher .chat-icon{display:none}",
    ":host(.open) .launcher .close-icon{display:block}",
    ".panel{position:absolute;bottom:76px;" + POSITION + ":0;width:380px;height:min(600px,calc(100vh - 110px));",
    "background:#fff;border-radius:16px;box-shadow:0 18px 50px rgba(15,23,42,.28),0 0 0 1px rgba(15,23,42,.06);",
    "display:flex;flex-direction:column;overflow:hidden}",
    ".panel[hidden]{display:none}",
    "header{display:flex;align-items:center;gap:8px;padding:14px 12px 14px 18px;background:var(--accent);color:var(--on-accent)}",
    "header h2{flex:1;margin:0;font-size:16px;font-weight:600;letter-spacing:.01em;",
    "white-space:nowrap;overflow:hidden;text-overflow:ellipsis}",
    ".status{display:block;font-size:12px;font-weight:400;opacity:.85}",
    ".icon-btn{width:34px;height:34px;border:0;border-radius:8px;background:transparent;color:inherit;",
    "cursor:pointer;display:flex;align-items:center;justify-content:center}",
    ".icon-btn:hover{background:rgba(255,255,255,.18)}",
    ".icon-btn svg{width:18px;height:18px}",
    ".log{flex:1;overflow-y:auto;padding:18px 14px 8px;display:flex;flex-direction:column;gap:10px;background:#f8fafc}",
    ".msg{max-width:85%;padding:9px 13px;border-radius:14px;white-space:pre-wrap;overflow-wrap:anywhere;word-break:break-word}",
    ".msg.assistant{align-self:flex-start;background:#fff;border:1px solid #e5e7eb;border-bottom-left-radius:4px}",
    ".msg.user{align-self:flex-end;background:var(--accent);color:var(--on-accent);border-bottom-right-radius:4px}",
    ".msg.pending::after{content:'';display:inline-block;width:28px;height:10px;",
    "background:radial-gradient(circle,#9ca3af 40%,transparent 42%) 0 50%/10px 10px repeat-x;",
    "animation:blink 1s infinite ease-in-out}",
    "@keyframes blink{50%{opacity:.35}}",
    ".rate{display:flex;align-items:center;gap:2px;margin:6px -6px -4px 0;white-space:normal}",
    ".thumb{width:28px;height:26px;border:0;border-radius:7px;background:transparent;color:#9ca3af;cursor:pointer;",
    "display:flex;align-items:center;justify-content:center;padding:0}",
    ".thumb:hover{background:#f1f5f9;color:#4b5563}",
    ".thumb svg{width:15px;height:15px}",
    ".thumb[data-rating=down] svg{transform:rotate(180deg)}",
    ".thumb[aria-pressed=true]{color:var(--accent);background:#eef2ff;",
    "background:color-mix(in srgb,var(--accent) 12%,transparent)}",
    ".thumb[aria-pressed=true] svg{fill:currentColor;fill-opacity:.2}",
    ".rate-note{font-size:12px;color:#6b7280;margin-left:6px}",
    ".rate-note:empty{display:none}",
    ".sr-only{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}",
    ".error{display:flex;align-items:center;gap:10px;margin:0 14px 8px;padding:9px 12px;border-radius:10px;",
    "background:#fef2f2;border:1px solid #fecaca;color:#991b1b;font-size:14px}",
    ".error[hidden]{display:none}",
    ".error-text{flex:1}",
    ".retry{border:1px solid #fca5a5;background:#fff;color:#991b1b;border-radius:8px;padding:4px 10px;cursor:pointer;font-size:13px;font-weight:600}",
    ".retry:hover{background:#fee2e2}",
    "form{display:flex;align-items:flex-end;gap:8px;padding:10px 12px 12px;border-top:1px solid #e5e7eb;background:#fff}",
    "textarea{flex:1;resize:none;border:1px solid #d1d5db;border-radius:12px;padding:9px 12px;min-height:42px;",
    "max-height:140px;background:#fff;line-height:1.4;outline:none}",
    "textarea:focus{border-color:var(--accent);box-shadow:0 0 0 3px rgba(100,116,139,.18);",
    "box-shadow:0 0 0 3px color-mix(in srgb,var(--accent) 22%,transparent)}",
    ".send{width:42px;height:42px;border:0;border-radius:12px;background:var(--accent);color:var(--on-accent);",
    "cursor:pointer;display:flex;align-items:center;justify-content:center;flex:none}",
    ".send:disabled{opacity:.45;cursor:default}",
    ".send svg{width:18px;height:18px}",
    ".msg.staff{align-self:flex-start;background:#ecfdf5;border:1px solid #a7f3d0;border-bottom-left-radius:4px}",
    ".msg.staff .who{display:block;font-size:12px;font-weight:600;color:#047857;margin-bottom:2px}",
    ".msg.note{align-self:center;max-width:95%;background:transparent;color:#6b7280;font-size:13px;padding:2px 6px;text-align:center}",
    ".handoff{border:1px solid #d1d5db;background:#fff;border-radius:999px;padding:4px 12px;margin:0 12px 8px;",
    "align-self:flex-start;cursor:pointer;font-size:13px}",
    ".handoff[hidden]{display:none}",
    ".handoff:hover{background:#f1f5f9}",
    ".foot{font-size:11px;color:#6b7280;text-align:center;padding:0 0 8px;background:#fff}",
    "@media (max-width:480px){",
    ":host(.open){inset:0;bottom:0;left:0;right:0}",
    ":host(.open) .launcher{display:none}",
    ".panel{position:fixed;inset:0;width:100%;height:100%;border-radius:0;bottom:0}",
    "}",
    "@media (prefers-reduced-motion:reduce){.launcher{transition:none}.msg.pending::after{animation:none}}"
  ].join("");

  var ICON_CHAT = '<svg class="chat-icon" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" ' +
    'stroke-linecap="round" stroke-linejoin="round" aria-hidden="true"><path d="M21 12a8 8 0 0 1-11.6 7.1L4 20l1-4.4A8 8 0 1 1 21 12z"/></svg>';
  var ICON_X = '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2.2" stroke-linecap="round" ' +
    'aria-hidden="true"><path d="M6 6l12 12M18 6L6 18"/></svg>';
  var ICON_NEW = '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" ' +
    'stroke-linejoin="round" aria-hidden="true"><path d="M12 20h9"/><path d="M16.5 3.5a2.1 2.1 0 0 1 3 3L7 19l-4 1 1-4z"/></svg>';
  var ICON_SEND = '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" ' +
    'stroke-linejoin="round" aria-hidden="true"><path d="M22 2L11 13"/><path d="M22 2l-7 20-4-9-9-4z"/></svg>';

  var ICON_UP = '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" ' +
    'stroke-linejoin="round" aria-hidden="true"><path d="M7 10v11H4a1 1 0 0 1-1-1v-9a1 1 0 0 1 1-1z"/>' +
    '<path d="M7 10l4-8a3 3 0 0 1 3 3v4h5.5a2 2 0 0 1 2 2.3l-1.4 8.4A2 2 0 0 1 18.1 21H7"/></svg>';

  // Static markup only: every dynamic string is set below with textContent / setAttribute.
  var TEMPLATE =
    '<div class="panel" id="panel" role="dialog" aria-modal="false" aria-labelledby="title" hidden>' +
      '<header><h2 id="title"></h2>' +
        '<button type="button" class="icon-btn" data-act="new" aria-label="Start a new conversation" title="New conversation">' + ICON_NEW + '</button>' +
        '<button type="button" class="icon-btn" data-act="close" aria-label="Close chat" title="Close">' + ICON_X + '</button>' +
      '</header>' +
      '<div class="log" id="log" role="log" aria-live="polite" aria-relevant="additions" aria-label="Messages"></div>' +
      '<div class="error" role="alert" hidden><span class="error-text"></span>' +
        '<button type="button" class="retry" data-act="retry">Retry</button></div>' +
      '<button type="button" class="handoff" data-act="handoff" hidden></button>' +
      '<form novalidate><label class="sr-only" for="input">Your message</label>' +
        '<textarea id="input" rows="1" placeholder="Type your message…" autocomplete="off"></textarea>' +
        '<button type="submit" class="send" aria-label="Send message" title="Send">' + ICON_SEND + '</button>' +
      '</form>' +
      '<div class="foot">Press Enter to send, Shift+Enter for a new line</div>' +
    '</div>' +
    '<button type="button" class="launcher" aria-controls="panel" aria-expanded="false">' +
      ICON_CHAT + ICON_X.replace("<svg ", '<svg class="close-icon" ') + '</button>';

  function readableOn(color) {
    // White or near-black text, whichever reads better on the accent colour.
    var probe = document.createElement("span");
    probe.style.color = color;
    probe.style.display = "none";
    document.body.appendChild(probe);
    var rgb = (getComputedStyle(probe).color.match(/[\d.]+/g) || [0, 0, 0]).map(Number);
    probe.remove();
    var lum = [rgb[0], rgb[1], rgb[2]].map(function (v) {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    var L = 0.2126 * lum[0] + 0.7152 * lum[1] + 0.0722 * lum[2];
    return L > 0.45 ? "#111827" : "#ffffff";
  }

  // -------------------------------------------------------------------- UI
  function mount() {
    var host = document.createElement("div");
    host.id = "chat-operator-widget";
    host.setAttribute("data-position", POSITION);
    var root = host.attachShadow({ mode: "open" });
    var style = document.createElement("style");
    style.textContent = CSS;
    root.appendChild(style);
    var wrap = document.createElement("div");
    wrap.innerHTML = TEMPLATE; // constant string, no user or reply content
    while (wrap.firstChild) root.appendChild(wrap.firstChild);
    document.body.appendChild(host);

    var accent = (window.CSS && CSS_supports(COLOR)) ? COLOR : "#4f46e5";
    host.style.setProperty("--accent", accent);
    host.style.setProperty("--on-accent", readableOn(accent));

    var $ = function (sel) { return root.querySelector(sel); };
    var panel = $(".panel"), launcher = $(".launcher"), log = $(".log"), form = $("form");
    var input = $("textarea"), sendBtn = $(".send"), errorBox = $(".error"), errorText = $(".error-text");
    $("#title").textContent = TITLE;
    var handoffBtn = $(".handoff");
    handoffBtn.textContent = HANDOFF_LABEL;
    handoffBtn.hidden = !HANDOFF;
    launcher.setAttribute("aria-label", "Open chat: " + TITLE);

    var state = {
      cid: conversationId(false),
      transcript: loadTranscript(),
      skipped: 0,
      busy: false,
      controller: null,
      lastText: "",
      held: false,
      noticeTurns: [],
      channel: null
    };

    function scrollDown() { log.scrollTop = log.scrollHeight; }

    function bubble(role, text, extra) {
      var el = document.createElement("div");
      el.className = "msg " + role + (extra ? " " + extra : "");
      var who = document.createElement("span");
      who.className = "sr-only";
      who.textContent = role === "user" ? "You said: " : role === "note" ? "" : TITLE + " said: ";
      var body = document.createElement("span");
      body.className = "text";
      body.textContent = text;
      if (extra !== "pending") { el.appendChild(who); el.appendChild(body); }
      else el.setAttribute("aria-label", TITLE + " is typing");
      log.appendChild(el);
      scrollDown();
      return el;
    }

    function setBubbleText(el, text) {
      var body = el.querySelector(".text");
      if (!body) {
        el.removeAttribute("aria-label");
        var who = document.createElement("span");
        who.className = "sr-only";
        who.textContent = TITLE + " said: ";
        body = document.createElement("span");
        body.className = "text";
        el.appendChild(who);
        el.appendChild(body);
      }
      body.textContent = text;
      scrollDown();
    }

    function render() {
      log.textContent = "";
      state.skipped = loadSkipped(state.cid);
      if (GREETING) bubble("assistant", GREETING, "greeting");
      state.transcript.forEach(function (m) {
        if (m.role === "staff") { staffBubble(m.who, m.text); return; }
        if (m.role === "note" && !m.text) return;
        var el = bubble(m.role, m.text);
        if (m.role === "assistant" && !m.notice) addRating(el, m.turn, m.rating);
      });
    }

    // A reply that was the "someone will join" notice is not the bot's answer: no rating.
    function markNotice(turn) {
      if (!isTurn(turn)) return;
      if (state.noticeTurns.indexOf(turn) === -1) state.noticeTurns.push(turn);
      var changed = false;
      state.transcript.forEach(function (m) {
        if (m.role === "assistant" && m.turn === turn && !m.notice) { m.notice = true; delete m.rating; changed = true; }
      });
      log.querySelectorAll('.msg.assistant[data-turn="' + turn + '"] .rate').forEach(function (r) { r.remove(); });
      if (changed) persist();
    }

    function staffBubble(who, text) {
      var el = document.createElement("div");
      el.className = "msg staff";
      var name = document.createElement("span");
      name.className = "who";
      name.textContent = who || "Staff";
      var body = document.createElement("span");
      body.className = "text";
      body.textContent = text;
      el.appendChild(name);
      el.appendChild(body);
      log.appendChild(el);
      scrollDown();
      return el;
    }

    // ------------------------------------------------- the person channel
    // Ids of channel events already shown (the channel replays them on every connect).
    // Read afresh each time: another tab of the site may have shown (and stored) it already.
    function seenIds() {
      var v = null;
      try { v = JSON.parse(load("localStorage", "handoff_seen") || "null"); } catch (e) { v = null; }
      return v && v.cid === state.cid && Array.isArray(v.ids) ? v : { cid: state.cid, ids: [] };
    }
    function seen(eid) {
      return seenIds().ids.indexOf(eid) !== -1 ||
        state.transcript.some(function (m) { return m.eid === eid; });
    }
    function markSeen(eid) {
      var s = seenIds();
      s.ids.push(eid);
      if (s.ids.length > 400) s.ids = s.ids.slice(-400);
      save("localStorage", "handoff_seen", JSON.stringify(s));
    }

    function onHandoff(ev) {
      if (!ev || typeof ev.id !== "string" || !ev.id || seen(ev.id)) return;
      var who = typeof ev.staff === "string" && ev.staff ? ev.staff : "A member of our team";
      var text = typeof ev.text === "string" ? ev.text : "";
      var entry = null;
      if (ev.kind === "staff_message" && text) {
        entry = { role: "staff", text: text, who: who, eid: ev.id };
        staffBubble(who, text);
      } else {
        if (ev.kind === "handoff_taken") text = who + " joined the chat.";
        else if (ev.kind === "handoff_returned") text = who + " left the chat. " + TITLE + " is back to help.";
        else if (ev.kind === "handoff_requested" && (ev.via === "chat" || ev.via === "model")) text = ""; // already the reply
        if (ev.kind === "handoff_requested") {
          markNotice(ev.turn);
          // What happens meanwhile, as the Space is set up (CHAT_HANDOFF_BOT_WHILE_WAITING).
          var meanwhile = ev.bot_answers === false ? "Until then, your messages wait for them." :
            ev.bot_answers === true ? "Until then, you can keep chatting here." : "";
          text = (text ? text + " " : "") + meanwhile;
        }
        if (text) {
          entry = { role: "note", text: text, who: "", eid: ev.id };
          bubble("note", text);
        }
      }
      if (ev.status === "staff" || ev.status === "bot" || ev.status === "waiting") {
        state.held = ev.status === "staff";
        handoffBtn.hidden = !HANDOFF || ev.status !== "bot";
      }
      markSeen(ev.id);
      if (entry) {
        state.transcript.push(entry);
        persist();
      }
    }

    function closeChannel() {
      var ch = state.channel;
      state.channel = null;
      if (!ch) return;
      if (ch.source) ch.source.close();
      if (ch.timer) clearTimeout(ch.timer);
    }

    function poll(ch) {
      if (state.channel !== ch) return;
      fetch(SPACE + "/handoff/poll?conversation_id=" + encodeURIComponent(ch.cid),
            { credentials: "omit", mode: "cors", cache: "no-store" })
        .then(function (res) { return res.ok ? res.json() : null; })
        .then(function (body) {
          if (state.channel === ch && ch.cid === state.cid && body && Array.isArray(body.events)) {
            body.events.forEach(onHandoff);
          }
        }, function () { /* try again */ })
        .then(function () { if (state.channel === ch) ch.timer = setTimeout(function () { poll(ch); }, POLL_MS); });
    }

    // One channel, for this conversation only, opened once the conversation has started.
    function openChannel() {
      if (state.channel && state.channel.cid === state.cid) return;
      closeChannel();
      var ch = { cid: state.cid, source: null, timer: null, failures: 0 };
      state.channel = ch;
      if (typeof window.EventSource !== "function" || window.__chatOperatorPoll) { poll(ch); return; }
      var src = new EventSource(SPACE + "/handoff/events?conversation_id=" + encodeURIComponent(ch.cid));
      ch.source = src;
      src.addEventListener("handoff", function (e) {
        ch.failures = 0;
        if (state.channel !== ch || ch.cid !== state.cid) return;
        try { onHandoff(JSON.parse(e.data)); } catch (err) { /* not ours */ }
      });
      src.onerror = function () {
        ch.failures += 1;
        if (src.readyState === 2 || ch.failures > 3) { src.close(); ch.source = null; poll(ch); }
      };
    }

    function askForPerson() {
      var cid = state.cid;
      openChannel();
      handoffBtn.disabled = true;
      fetch(SPACE + "/handoff/request", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ conversation_id: cid }), credentials: "omit", mode: "cors"
      }).then(function (res) {
        // only a conversation that has started may ask (the Space answers 404 otherwise)
        if (res.status === 404) throw SpaceError("space", "Write us a message first, then ask for a person.");
        if (!res.ok) throw SpaceError("http", "HTTP " + res.status);
      }).catch(function (err) {
        if (cid === state.cid) showError(friendly(err));
      }).then(function () { handoffBtn.disabled = false; });
    }

    // ----------------------------------------------------------- ratings
    function nextTurn() {
      var n = state.skipped;
      state.transcript.forEach(function (m) {
        if (m.role === "assistant" && m.turn + 1 > n) n = m.turn + 1;
      });
      return n;
    }

    function showRating(el, rating) {
      el.querySelectorAll(".thumb").forEach(function (b) {
        b.setAttribute("aria-pressed", b.getAttribute("data-rating") === rating ? "true" : "false");
      });
    }

    function addRating(el, turn, rating) {
      if (state.noticeTurns.indexOf(turn) !== -1) return;
      var row = document.createElement("div");
      row.className = "rate";
      row.setAttribute("role", "group");
      row.setAttribute("aria-label", "Rate this reply");
      [["up", "Helpful"], ["down", "Not helpful"]].forEach(function (t) {
        var b = document.createElement("button");
        b.type = "button";
        b.className = "thumb";
        b.setAttribute("data-act", "rate");
        b.setAttribute("data-rating", t[0]);
        b.setAttribute("aria-label", t[1]);
        b.title = t[1];
        b.innerHTML = ICON_UP; // constant icon markup (turned upside down by CSS for "down")
        row.appendChild(b);
      });
      var note = document.createElement("span");
      note.className = "rate-note";
      note.setAttribute("role", "status");
      row.appendChild(note);
      el.setAttribute("data-turn", String(turn));
      el.appendChild(row);
      showRating(el, rating || null);
    }

    function rate(el, rating) {
      var turn = parseInt(el.getAttribute("data-turn"), 10);
      var entry = null;
      state.transcript.forEach(function (m) { if (m.role === "assistant" && m.turn === turn) entry = m; });
      if (!entry || entry.rating === rating) return;
      var cid = state.cid, before = entry.rating || null;
      var note = el.querySelector(".rate-note");
      note.textContent = "";
      entry.rating = rating;          // shown at once; undone if it cannot be sent
      showRating(el, rating);
      persist();
      sendFeedback(cid, turn, rating).catch(function () {
        if (cid !== state.cid || entry.rating !== rating) return;
        if (before) entry.rating = before; else delete entry.rating;
        persist();
        if (el.isConnected) {
          showRating(el, before);
          note.textContent = "Rating not sent. Please try again.";
        }
      });
    }

    function persist() {
      state.transcript = state.transcript.slice(-MAX_STORED);
      save("localStorage", "transcript", JSON.stringify(state.transcript));
    }

    function showError(message) {
      errorText.textContent = message;
      errorBox.hidden = false;
    }
    function clearError() { errorBox.hidden = true; errorText.textContent = ""; }

    function autosize() {
      input.style.height = "auto";
      input.style.height = Math.min(input.scrollHeight + 2, 140) + "px";
    }

    function setBusy(busy) {
      state.busy = busy;
      sendBtn.disabled = busy;
      log.setAttribute("aria-busy", busy ? "true" : "false");
    }

    function open(focus) {
      panel.hidden = false;
      host.classList.add("open");
      launcher.setAttribute("aria-expanded", "true");
      launcher.setAttribute("aria-label", "Close chat");
      save("sessionStorage", "open", "1");
      scrollDown();
      if (focus !== false) input.focus();
    }
    function close() {
      panel.hidden = true;
      host.classList.remove("open");
      launcher.setAttribute("aria-expanded", "false");
      launcher.setAttribute("aria-label", "Open chat: " + TITLE);
      save("sessionStorage", "open", null);
      launcher.focus();
    }

    function newConversation() {
      if (state.controller) state.controller.abort();
      state.cid = conversationId(true);
      state.transcript = [];
      state.noticeTurns = [];
      closeChannel();
      state.held = false;
      handoffBtn.hidden = !HANDOFF;
      save("localStorage", "next_turn", null);
      persist();
      clearError();
      render();
      input.focus();
    }

    function send(text) {
      if (state.busy) return;
      if (!text.trim()) { input.focus(); return; }
      clearError();
      state.lastText = text;
      input.value = "";
      autosize();
      setBusy(true);
      var userEl = bubble("user", text);
      var replyEl = bubble("assistant", "", "pending");
      var cid = state.cid;
      var turn = nextTurn();
      var controller = new AbortController();
      state.controller = controller;
      openChannel();

      callChat(text, cid, controller, function (partial) {
        replyEl.classList.remove("pending");
        setBubbleText(replyEl, partial);
      }).then(function (reply) {
        if (reply === "") { // staff hold the conversation: the bot does not answer
          replyEl.remove();
          if (cid === state.cid) {
            state.transcript.push({ role: "user", text: text });
            persist();
          }
          return;
        }
        replyEl.classList.remove("pending");
        setBubbleText(replyEl, reply);
        if (cid === state.cid) {
          var answer = { role: "assistant", text: reply, turn: turn };
          if (state.noticeTurns.indexOf(turn) !== -1) answer.notice = true; // the channel was first
          state.transcript.push({ role: "user", text: text }, answer);
          persist();
          addRating(replyEl, turn, null);
        }
      }).catch(function (err) {
        if (cid !== state.cid) return; // a new conversation was started meanwhile
        if (err && err.started && err.kind !== "space") {
          // The Space accepted the message, so it counts (and logs) this turn.
          state.skipped = Math.max(state.skipped, turn + 1);
          save("localStorage", "next_turn", JSON.stringify({ cid: cid, n: state.skipped }));
        }
        userEl.remove();
        replyEl.remove();
        // Keep the visitor's words for a retry (unless they already typed something new).
        if (!input.value.trim()) { input.value = text; autosize(); }
        showError(friendly(err));
      }).then(function () {
        if (state.controller === controller) state.controller = null;
        setBusy(false);
      });
    }

    // ---------------------------------------------------------- events
    launcher.addEventListener("click", function () {
      if (panel.hidden) open(); else close();
    });
    root.addEventListener("click", function (ev) {
      var t = ev.target.closest && ev.target.closest("[data-act]");
      if (!t) return;
      var act = t.getAttribute("data-act");
      if (act === "close") close();
      else if (act === "new") newConversation();
      else if (act === "retry") send(input.value || state.lastText);
      else if (act === "rate") rate(t.closest(".msg"), t.getAttribute("data-rating"));
      else if (act === "handoff") askForPerson();
    });
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      send(input.value);
    });
    input.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        send(input.value);
      }
    });
    input.addEventListener("input", autosize);
    root.addEventListener("keydown", function (ev) {
      if (ev.key === "Escape" && !panel.hidden) {
        ev.preventDefault();
        close();
      }
    });

    // Another tab of the same site continued (or restarted) the conversation: follow it.
    window.addEventListener("storage", function (ev) {
      if (state.busy || !ev.key || ev.key.indexOf(KEY) !== 0) return;
      state.cid = conversationId(false);
      state.transcript = loadTranscript();
      render();
      if (state.channel && state.channel.cid !== state.cid) closeChannel();
    });

    render();
    if (state.transcript.length) openChannel();
    if (load("sessionStorage", "open")) open(false);

    // A small handle for the host page (and tests).
    window.ChatOperatorWidget = {
      open: function () { open(); },
      close: close,
      newConversation: newConversation,
      get conversationId() { return state.cid; },
      get withStaff() { return state.held; },
      space: SPACE
    };
  }

  function CSS_supports(color) {
    try { return window.CSS.supports("color", color); } catch (e) { return false; }
  }

  // ---------------------------------------------------------- the Space API
  function SpaceError(kind, message) {
    var e = new Error(message || kind);
    e.kind = kind;
    return e;
  }

  function friendly(err) {
    switch (err && err.kind) {
      case "space":   return err.message; // the Space's own words (too long, empty, …)
      case "timeout": return "The assistant is taking too long to answer. Please try again.";
      case "http":    return "The assistant is unavailable right now (" + err.message + "). Please try again in a moment.";
      case "cut":     return "The reply was interrupted. Please try again.";
      default:        return "We couldn't reach the assistant. Check your connection and try again.";
    }
  }

  function withTimeout(controller, ms) {
    var timer = setTimeout(function () { controller.timedOut = true; controller.abort(); }, ms);
    return function () { clearTimeout(timer); };
  }

  function rethrow(controller) {
    return function (err) {
      if (err && err.kind) throw err;
      if (controller.timedOut) throw SpaceError("timeout");
      if (err && err.name === "AbortError") throw SpaceError("aborted");
      throw SpaceError("network", String(err && err.message || err));
    };
  }

  function callChat(text, cid, controller, onPartial) {
    var stopStart = withTimeout(controller, START_TIMEOUT_MS);
    return fetch(SPACE + "/gradio_api/call/chat", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ data: [{ text: text, files: [] }, cid, SOURCE] }),
      signal: controller.signal,
      credentials: "omit",
      mode: "cors"
    }).then(function (res) {
      if (!res.ok) {
        return res.json().catch(function () { return null; }).then(function (body) {
          var detail = body && (body.error || body.detail);
          if (typeof detail === "string" && res.status < 500) throw SpaceError("space", detail);
          throw SpaceError("http", "HTTP " + res.status);
        });
      }
      return res.json();
    }).then(function (body) {
      stopStart();
      if (!body || typeof body.event_id !== "string") throw SpaceError("http", "unexpected answer");
      return readStream(SPACE + "/gradio_api/call/chat/" + encodeURIComponent(body.event_id), controller, onPartial)
        .catch(function (err) {
          try { err = rethrow(controller)(err); } catch (e) { err = e; }
          err.started = true; // the Space has the message
          throw err;
        });
    }).catch(function (err) { stopStart(); return rethrow(controller)(err); });
  }

  function sendFeedback(cid, turn, rating) {
    var controller = new AbortController();
    var timer = setTimeout(function () { controller.abort(); }, FEEDBACK_TIMEOUT_MS);
    return fetch(SPACE + "/feedback", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ conversation_id: cid, turn: turn, rating: rating, source: SOURCE }),
      signal: controller.signal,
      credentials: "omit",
      mode: "cors"
    }).then(function (res) {
      clearTimeout(timer);
      if (!res.ok) throw SpaceError("http", "HTTP " + res.status);
      return res.json();
    }, function (err) { clearTimeout(timer); throw err; });
  }

  function readStream(url, controller, onPartial) {
    var stopIdle = function () {};
    function idle() { stopIdle(); stopIdle = withTimeout(controller, IDLE_TIMEOUT_MS); }
    idle();
    return fetch(url, { signal: controller.signal, credentials: "omit", mode: "cors",
                        headers: { Accept: "text/event-stream" } }).then(function (res) {
      if (!res.ok || !res.body) throw SpaceError("http", "HTTP " + res.status);
      var reader = res.body.getReader();
      var decoder = new TextDecoder();
      var buffer = "";
      var latest = "";

      function handle(block) {
        var event = "message", data = [];
        block.split(/\r?\n/).forEach(function (line) {
          if (line.indexOf("event:") === 0) event = line.slice(6).trim();
          else if (line.indexOf("data:") === 0) data.push(line.slice(5).replace(/^ /, ""));
        });
        var payload = null;
        try { payload = data.length ? JSON.parse(data.join("\n")) : null; } catch (e) { payload = null; }
        if (event === "generating" || event === "complete") {
          var value = Array.isArray(payload) ? payload[0] : payload;
          if (value && typeof value === "object") value = value.text || value.content || "";
          if (typeof value === "string") {
            latest = value;
            onPartial(latest);
          }
          if (event === "complete") return { done: true };
        } else if (event === "error") {
          var msg = payload && typeof payload === "object" ? payload.error || payload.message : payload;
          throw SpaceError("space", typeof msg === "string" && msg ? msg
            : "Sorry, something went wrong on our side. Please try again.");
        }
        return null;
      }

      function pump() {
        return reader.read().then(function (chunk) {
          idle();
          if (chunk.done) {
            throw SpaceError("cut");
          }
          buffer += decoder.decode(chunk.value, { stream: true });
          var parts = buffer.split(/\r?\n\r?\n/);
          buffer = parts.pop();
          for (var i = 0; i < parts.length; i++) {
            if (!parts[i].trim()) continue;
            var r = handle(parts[i]);
            if (r && r.done) {
              try { reader.cancel(); } catch (e) { /* already closed */ }
              return latest;
            }
          }
          return pump();
        });
      }
      return pump();
    }).then(function (reply) { stopIdle(); return reply; },
            function (err) { stopIdle(); throw err; });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", mount);
  else mount();
})();
