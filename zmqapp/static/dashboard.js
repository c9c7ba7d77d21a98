/* zmqapp dashboard: polls a status source every second and draws the apps, their channels
 * and the messages between them as SVG. No framework, no build step, nothing from the network.
 *
 * The source is given by <meta name="zmqapp-source">: "status" on an app's own HTTP server
 * (one app, or a --workers pool), "api/system" under `zmqapp dashboard` (several apps, with the
 * edges between them worked out by the server). Rates are the change of the counters over the
 * last few seconds; latency comes from the change of each channel's `timing` histogram.
 */
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const SOURCE = document.querySelector('meta[name="zmqapp-source"]').content;
  const MULTI = SOURCE !== "status";
  const POLL_MS = 1000;
  const WINDOW = 3.2; // seconds a rate is measured over
  const KEEP = 60; // samples kept per channel: the sparklines show the last minute
  const L = {
    boxW: 340, inset: 12, sendMargin: 58, headerH: 62, cardH: 84, cardGap: 10, boxPad: 12,
    gapX: 250, gapY: 44, pad: 30, outW: 220, outH: 44, lane: 30,
  };

  // An app's own page may tap its channels (the app guards /tap with its token); the
  // multi-app dashboard shows numbers only, never message bodies.
  const TAPS = !MULTI;
  const TAP_KEEP = 300; // lines the tap panel keeps

  const history = new Map();
  let updates = 0;
  let shape = "";
  let refs = null;

  // -- numbers ---------------------------------------------------------------------------------

  function fmtRate(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    if (v <= 0) return "0";
    if (v >= 9950) return (v / 1000).toFixed(v >= 99500 ? 0 : 1) + "k";
    if (v >= 99.95) return v.toFixed(0);
    if (v >= 9.995) return v.toFixed(1);
    return v.toFixed(2).replace(/0$/, "");
  }

  function fmtSeconds(v) {
    if (v === null || v === undefined) return "–";
    if (v < 0.001) return (v * 1e6).toFixed(0) + "µs";
    if (v < 1) return (v * 1000).toFixed(v < 0.01 ? 2 : 1) + "ms";
    return v.toFixed(2) + "s";
  }

  function percentile(timing, q) {
    if (!timing) return null;
    const counts = timing.counts || [];
    const bounds = timing.buckets || [];
    const total = counts.reduce((a, b) => a + b, 0);
    if (total <= 0) return null;
    const rank = q * total;
    let seen = 0;
    for (let i = 0; i < counts.length; i++) {
      const n = counts[i];
      if (n && seen + n >= rank) {
        const low = i > 0 ? bounds[i - 1] : 0;
        if (i >= bounds.length) return low;
        return low + (bounds[i] - low) * Math.max(0, rank - seen) / n;
      }
      seen += n;
    }
    return bounds.length ? bounds[bounds.length - 1] : null;
  }

  function timingChange(before, after) {
    if (!after) return null;
    if (!before || before.counts.length !== after.counts.length) return after;
    const counts = after.counts.map((n, i) => n - before.counts[i]);
    if (counts.some((n) => n < 0)) return after; // the process restarted
    return { buckets: after.buckets, counts: counts, sum: after.sum - before.sum };
  }

  // -- rates -----------------------------------------------------------------------------------

  function remember(key, t, ch) {
    let list = history.get(key);
    if (!list) history.set(key, (list = []));
    if (list.length && list[list.length - 1].t >= t) return list; // the same poll, shown again
    list.push({
      t: t,
      received: ch.received || 0,
      handled: ch.handled || 0,
      errors: (ch.errors || 0) + (ch.decode_failed || 0),
      sent: ch.sent || 0,
      dropped: ch.dropped || 0,
      timing: ch.timing || null,
    });
    while (list.length > KEEP) list.shift();
    return list;
  }

  function measure(list) {
    const none = { in: null, out: null, err: null, handled: null, dropped: null, p50: null, p99: null, spark: [] };
    if (!list || list.length < 2) return none;
    const last = list[list.length - 1];
    let i = list.length - 2;
    while (i > 0 && last.t - list[i - 1].t <= WINDOW) i--;
    const first = list[i];
    const dt = last.t - first.t;
    if (dt <= 0) return none;
    const rate = (k) => Math.max(0, (last[k] - first[k]) / dt); // below zero: it restarted
    const timing = timingChange(first.timing, last.timing);
    const spark = [];
    for (let j = 1; j < list.length; j++) {
      const d = list[j].t - list[j - 1].t;
      const moved = list[j].received - list[j - 1].received + list[j].sent - list[j - 1].sent;
      spark.push(d > 0 ? Math.max(0, moved / d) : 0);
    }
    return {
      in: rate("received"), out: rate("sent"), err: rate("errors"), handled: rate("handled"),
      dropped: rate("dropped"), p50: percentile(timing, 0.5), p99: percentile(timing, 0.99),
      spark: spark,
    };
  }

  function family(type) {
    if (/^(PUSH|PULL)$/.test(type)) return "pipeline";
    if (/^X?(PUB|SUB)$/.test(type)) return "pubsub";
    if (/^(REQ|REP|DEALER|ROUTER)$/.test(type)) return "reqrep";
    return "pair";
  }

  function hostPort(url) {
    try { return new URL(url).host; } catch (e) { return url; }
  }

  // -- the model: apps, channels, workers, edges ---------------------------------------------------

  function shownEndpoints(ch) {
    const bound = (ch.bound || []).slice();
    return (ch.endpoints || []).map((e) => (e[0] === "@" && bound.length ? "@" + bound.shift() : e));
  }

  function model(system, now) {
    const names = new Map();
    for (const a of system.apps) {
      const n = a.status ? a.status.app : hostPort(a.url);
      names.set(n, (names.get(n) || 0) + 1);
    }
    const apps = [];
    const channels = new Map();
    for (const a of system.apps) {
      const st = a.status;
      const base = st ? st.app : hostPort(a.url);
      const app = {
        id: a.id, url: a.url, error: a.error, status: st, name: names.get(base) > 1 ? base + " · " + hostPort(a.url) : base,
        stale: !!a.error, channels: [], workers: [], totals: { in: 0, out: 0, err: 0, queue: 0, inFlight: 0 },
      };
      if (st) {
        const t = a.fetched || now;
        for (const [name, ch] of Object.entries(st.channels || {})) {
          const m = app.stale ? measure(null) : measure(remember(a.id + "/" + name, t, ch));
          const c = {
            key: a.id + "/" + name, app: app, name: name, type: ch.type || "", raw: ch, rates: m,
            endpoints: shownEndpoints(ch), sendTo: ch.send_to || null,
          };
          app.channels.push(c);
          channels.set(c.key, c);
          app.totals.in += m.in || 0;
          app.totals.out += m.out || 0;
          app.totals.err += m.err || 0;
          app.totals.queue += ch.queue || 0;
          app.totals.inFlight += ch.in_flight || 0;
        }
        for (const w of st.workers || []) {
          const row = { worker: w.worker, pid: w.pid, ready: w.ready, state: w.state, lag: w.loop_lag, in: 0, out: 0, err: 0, queue: 0, inFlight: 0 };
          for (const [name, ch] of Object.entries(w.channels || {})) {
            const m = app.stale ? measure(null) : measure(remember(a.id + "#" + w.worker + "/" + name, t, ch));
            row.in += m.in || 0;
            row.out += m.out || 0;
            row.err += m.err || 0;
            row.queue += ch.queue || 0;
            row.inFlight += ch.in_flight || 0;
          }
          app.workers.push(row);
        }
      }
      apps.push(app);
    }
    const edges = [];
    for (const e of system.edges || []) {
      const via = channels.get(e.via.app + "/" + e.via.channel);
      const r = via ? (e.via.counter === "received" ? via.rates.in : via.rates.out) : null;
      edges.push({
        kind: "connect", from: e.from, to: e.to, address: e.address, types: e.types, topics: e.topics || [],
        rate: r === null ? null : r * e.via.share,
      });
    }
    // send_to inside each app: the target's sends, shared among the channels forwarding to it
    for (const app of apps) {
      const into = new Map();
      for (const c of app.channels) {
        if (c.sendTo && channels.has(app.id + "/" + c.sendTo)) {
          if (!into.has(c.sendTo)) into.set(c.sendTo, []);
          into.get(c.sendTo).push(c);
        }
      }
      for (const [target, sources] of into) {
        const t = channels.get(app.id + "/" + target);
        const handled = sources.reduce((s, c) => s + (c.rates.handled || 0), 0);
        for (const c of sources) {
          const share = handled > 0 ? (c.rates.handled || 0) / handled : 1 / sources.length;
          edges.push({
            kind: "send_to", from: { app: app.id, channel: c.name }, to: { app: app.id, channel: target },
            address: "send_to", types: ["", ""], topics: [],
            rate: t.rates.out === null ? null : t.rates.out * share,
          });
        }
      }
    }
    return { apps: apps, channels: channels, edges: edges };
  }

  // -- layout ------------------------------------------------------------------------------------

  function layout(m) {
    const index = new Map(m.apps.map((a, i) => [a.id, i]));
    const n = m.apps.length;
    const next = m.apps.map(() => new Set());
    const incoming = m.apps.map(() => 0);
    for (const e of m.edges) {
      if (e.from.app && e.to.app && e.from.app !== e.to.app) {
        const i = index.get(e.from.app), j = index.get(e.to.app);
        if (!next[i].has(j)) { next[i].add(j); incoming[j]++; }
      }
    }
    // Drop the edges that close a cycle (found by a depth-first walk from the sources), then
    // rank each app by the longest path that reaches it.
    const seen = m.apps.map(() => 0);
    const dag = m.apps.map(() => []);
    const visit = (i) => {
      seen[i] = 1;
      for (const j of next[i]) {
        if (seen[j] === 1) continue;
        dag[i].push(j);
        if (!seen[j]) visit(j);
      }
      seen[i] = 2;
    };
    m.apps.forEach((a, i) => { if (!incoming[i] && !seen[i]) visit(i); });
    m.apps.forEach((a, i) => { if (!seen[i]) visit(i); });
    const rank = m.apps.map(() => 0);
    for (let round = 0; round < n; round++) {
      for (let i = 0; i < n; i++) for (const j of dag[i]) rank[j] = Math.max(rank[j], rank[i] + 1);
    }
    // Outside peers: sources to the left of everything, sinks to the right.
    const outside = new Map();
    for (const e of m.edges) {
      for (const end of [e.from, e.to]) {
        if (end.outside && !outside.has(end.outside)) outside.set(end.outside, { address: end.outside, source: end === e.from });
      }
    }
    const hasSources = [...outside.values()].some((o) => o.source);
    const shift = hasSources ? 1 : 0;
    const maxRank = n ? Math.max(...rank) + shift : 0;
    const columns = [];
    const put = (col, node) => { (columns[col] = columns[col] || []).push(node); };
    m.apps.forEach((a, i) => {
      const h = L.headerH + (a.channels.length ? a.channels.length * (L.cardH + L.cardGap) - L.cardGap : 34) + L.boxPad;
      put(rank[i] + shift, { kind: "app", app: a, w: L.boxW, h: h });
    });
    for (const o of outside.values()) put(o.source ? 0 : maxRank + 1, { kind: "outside", outside: o, w: L.outW, h: L.outH });
    const heights = columns.map((col) => (col || []).reduce((s, node) => s + node.h, 0) + Math.max(0, (col || []).length - 1) * L.gapY);
    const tallest = Math.max(0, ...heights);
    const boxes = new Map();
    const outs = new Map();
    const colX = [];
    let x = L.pad;
    columns.forEach((col, c) => {
      colX[c] = x;
      if (!col) return;
      let y = L.pad + 10 + (tallest - heights[c]) / 2;
      const width = Math.max(...col.map((node) => node.w));
      for (const node of col) {
        const nx = x + (width - node.w) / 2;
        const box = { x: nx, y: y, w: node.w, h: node.h, col: c };
        if (node.kind === "app") {
          box.app = node.app;
          box.cards = new Map();
            const forwards = node.app.channels.some((ch) => ch.sendTo);
          node.app.channels.forEach((ch, k) => {
            box.cards.set(ch.name, {
              x: nx + L.inset, y: y + L.headerH + k * (L.cardH + L.cardGap),
              w: L.boxW - L.inset - (forwards ? L.sendMargin : L.inset), h: L.cardH, channel: ch,
            });
          });
          boxes.set(node.app.id, box);
        } else {
          box.outside = node.outside;
          outs.set(node.outside.address, box);
        }
        y += node.h + L.gapY;
      }
      x += width + L.gapX;
    });
    const width = Math.max(x - L.gapX + L.pad, 400);
    return { boxes: boxes, outs: outs, width: width, top: L.pad + 10 + tallest, colX: colX };
  }

  // -- drawing -------------------------------------------------------------------------------------

  function el(tag, attrs, parent) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  function text(parent, x, y, cls, content, anchor) {
    const t = el("text", { x: x, y: y, class: cls }, parent);
    if (anchor) t.setAttribute("text-anchor", anchor);
    if (content !== undefined) t.textContent = content;
    return t;
  }

  function pill(parent, x, y, cls, content, anchorRight) {
    const g = el("g", { class: "pill " + cls }, parent);
    const w = 12 + content.length * 6.6;
    el("rect", { x: anchorRight ? x - w : x, y: y - 13, width: w, height: 18, rx: 9 }, g);
    text(g, anchorRight ? x - w / 2 : x + w / 2, y, "", content, "middle");
    return g;
  }

  function rounded(points, r) {
    let d = "M" + points[0][0] + " " + points[0][1];
    for (let i = 1; i < points.length - 1; i++) {
      const [px, py] = points[i - 1], [cx, cy] = points[i], [nx, ny] = points[i + 1];
      const a = Math.min(r, Math.hypot(cx - px, cy - py) / 2), b = Math.min(r, Math.hypot(nx - cx, ny - cy) / 2);
      const ux = Math.sign(cx - px), uy = Math.sign(cy - py), vx = Math.sign(nx - cx), vy = Math.sign(ny - cy);
      d += " L" + (cx - ux * a) + " " + (cy - uy * a) + " Q" + cx + " " + cy + " " + (cx + vx * b) + " " + (cy + vy * b);
    }
    const last = points[points.length - 1];
    return d + " L" + last[0] + " " + last[1];
  }

  function endpointOf(lay, end) {
    if (end.outside) {
      const b = lay.outs.get(end.outside);
      return b ? { box: b, card: { x: b.x, y: b.y, w: b.w, h: b.h }, col: b.col } : null;
    }
    const b = lay.boxes.get(end.app);
    const card = b && b.cards.get(end.channel);
    return card ? { box: b, card: card, col: b.col } : null;
  }

  function edgePath(lay, e, lane) {
    const a = endpointOf(lay, e.from), b = endpointOf(lay, e.to);
    if (!a || !b) return null;
    const y1 = a.card.y + a.card.h / 2, y2 = b.card.y + b.card.h / 2;
    if (e.kind === "send_to") {
      // An arc in the box's right margin, clear of where edges leave the channels.
      const xr = a.card.x + a.card.w, bulge = xr + 44;
      const s1 = y1 + (y2 > y1 ? 12 : -12), s2 = y2 - (y2 > y1 ? 12 : -12);
      return { d: "M" + xr + " " + s1 + " C" + bulge + " " + s1 + " " + bulge + " " + s2 + " " + (xr + 3) + " " + s2, label: [xr + 33, (y1 + y2) / 2] };
    }
    const aRight = a.box.x + a.box.w, bLeft = b.box.x;
    if (a.col < b.col) {
      const dx = Math.max(70, (bLeft - aRight) / 2);
      return {
        d: "M" + (a.card.x + a.card.w) + " " + y1 + " L" + aRight + " " + y1 + " C" + (aRight + dx) + " " + y1 + " " + (bLeft - dx) + " " + y2 + " " + bLeft + " " + y2 + " L" + (b.card.x - 3) + " " + y2,
      };
    }
    if (a.col === b.col) {
      const bRight = b.box.x + b.box.w, out = Math.max(aRight, bRight) + 80;
      return { d: "M" + (a.card.x + a.card.w) + " " + y1 + " L" + aRight + " " + y1 + " C" + out + " " + y1 + " " + out + " " + y2 + " " + bRight + " " + y2 + " L" + (b.card.x + b.card.w + 3) + " " + y2 };
    }
    // Against the flow: out of the left side, along a lane under everything, into the right side.
    const y = lay.top + 26 + lane * L.lane;
    const x1 = a.box.x - 30, x2 = b.box.x + b.box.w + 30;
    const pts = [[a.card.x, y1], [x1, y1], [x1, y], [x2, y], [x2, y2], [b.card.x + b.card.w + 3, y2]];
    return { d: rounded(pts, 16), label: [(x1 + x2) / 2, y], back: true };
  }

  function build(svg, m, lay) {
    svg.textContent = "";
    const r = { cards: new Map(), edges: [], boxes: new Map() };
    const defs = el("defs", {}, svg);
    for (const fam of ["pipeline", "pubsub", "reqrep", "pair", "sendto"]) {
      const mk = el("marker", { id: "arrow-" + fam, class: "fam-" + fam, viewBox: "0 0 10 10", refX: "8", refY: "5", markerWidth: "9", markerHeight: "9", markerUnits: "userSpaceOnUse", orient: "auto" }, defs);
      el("path", { d: "M0 0 L10 5 L0 10 z" }, mk);
    }
    // Boxes, then the edges between them (over the boxes, so that an arrow shows where it
    // enters a channel), then the channels, then send_to arcs and every label.
    const nodeLayer = el("g", { class: "nodes" }, svg);
    const edgeLayer = el("g", { class: "edges" }, svg);
    const cardLayer = el("g", { class: "cards" }, svg);
    const innerLayer = el("g", { class: "edges inner" }, svg); // send_to, drawn inside a box
    const labelLayer = el("g", { class: "labels" }, svg);
    let lanes = 0;
    for (const b of lay.boxes.values()) {
      const a = b.app;
      const g = el("g", { class: "box", "data-app": a.name }, nodeLayer);
      el("rect", { class: "frame", x: b.x, y: b.y, width: b.w, height: b.h, rx: 12 }, g);
      text(g, b.x + 16, b.y + 27, "appname", a.name);
      const meta = text(g, b.x + 16, b.y + 47, "meta", "");
      const stateSlot = el("g", {}, g);
      const workers = el("g", {}, g);
      const error = text(g, b.x + 16, b.y + L.headerH + 14, "error", "");
      r.boxes.set(a.id, { g: g, meta: meta, stateSlot: stateSlot, workers: workers, error: error, box: b });
      for (const card of b.cards.values()) {
        const ch = card.channel;
        const fam = family(ch.type);
        const cg = el("g", { class: "card fam-" + fam, "data-app": a.name, "data-channel": ch.name }, cardLayer);
        const clip = "clip-" + a.id + "-" + ch.name.replace(/[^A-Za-z0-9_-]/g, "_");
        const cp = el("clipPath", { id: clip }, defs);
        el("rect", { x: card.x, y: card.y, width: card.w, height: card.h, rx: 8 }, cp);
        el("rect", { class: "frame", x: card.x, y: card.y, width: card.w, height: card.h, rx: 8 }, cg);
        const spark = el("path", { class: "spark", "clip-path": "url(#" + clip + ")" }, cg);
        const title = el("title", {}, cg);
        text(cg, card.x + 12, card.y + 22, "name", ch.name);
        const badge = el("g", { class: "badge" }, cg);
        const bw = 12 + ch.type.length * 7.4;
        el("rect", { x: card.x + card.w - 10 - bw, y: card.y + 9, width: bw, height: 17, rx: 4 }, badge);
        text(badge, card.x + card.w - 10 - bw / 2, card.y + 21.5, "", ch.type, "middle");
        const rates = text(cg, card.x + 12, card.y + 48, "rates");
        const small = text(cg, card.x + 12, card.y + 70, "small");
        if (TAPS) cg.addEventListener("click", () => openTap(ch.name));
        r.cards.set(ch.key, { g: cg, spark: spark, rates: rates, small: small, title: title, card: card });
      }
    }
    for (const o of lay.outs.values()) {
      const g = el("g", { class: "outside" }, nodeLayer);
      el("rect", { x: o.x, y: o.y, width: o.w, height: o.h, rx: 22 }, g);
      text(g, o.x + o.w / 2, o.y + 18, "", "outside these apps", "middle");
      text(g, o.x + o.w / 2, o.y + 34, "", o.outside.address, "middle");
    }
    for (const e of m.edges) {
      const p = edgePath(lay, e, lanes);
      if (!p) continue;
      if (p.back) lanes++;
      const fam = e.kind === "send_to" ? "sendto" : family(e.types[0] || e.types[1]);
      const from = e.from.outside ? e.from.outside : m.channels.get(e.from.app + "/" + e.from.channel).app.name + "/" + e.from.channel;
      const to = e.to.outside ? e.to.outside : m.channels.get(e.to.app + "/" + e.to.channel).app.name + "/" + e.to.channel;
      const g = el("g", { class: "edge idle fam-" + fam, "data-kind": e.kind, "data-from": from, "data-to": to, "data-rate": "0" }, e.kind === "send_to" ? innerLayer : edgeLayer);
      const base = el("path", { class: "base", d: p.d }, g);
      const flow = el("path", { class: "flow", d: p.d, "marker-end": "url(#arrow-" + fam + ")" }, g);
      let at = p.label;
      if (!at) {
        const len = flow.getTotalLength();
        const pt = flow.getPointAtLength(len / 2);
        at = [pt.x, pt.y];
      }
      const lg = el("g", { class: "label fam-" + fam }, labelLayer);
      const where = e.kind === "send_to" ? "" : (e.topics.length ? "topics " + e.topics.map((t) => '"' + t + '"').join(", ") : e.address);
      const rect = el("rect", { rx: 10 }, lg);
      const rate = text(lg, at[0], at[1] + (where ? -1 : 4.5), "rate", "", "middle");
      const whereText = where ? text(lg, at[0], at[1] + 13, "where", where, "middle") : null;
      r.edges.push({ g: g, base: base, flow: flow, rate: rate, rect: rect, where: whereText, at: at, edge: e, speed: "" });
    }
    const height = lay.top + (lanes ? 26 + lanes * L.lane + 20 : 0) + L.pad;
    svg.setAttribute("viewBox", "0 0 " + lay.width + " " + height);
    svg.style.maxWidth = lay.width + "px";
    return r;
  }

  function sparkPath(card, values) {
    if (values.length < 2) return "";
    const max = Math.max(...values);
    if (max <= 0) return "";
    const step = card.w / (KEEP - 1);
    const x0 = card.x + card.w - step * (values.length - 1);
    const floor = card.y + card.h, top = card.y + card.h * 0.45;
    let d = "M" + x0 + " " + floor;
    values.forEach((v, i) => { d += " L" + (x0 + i * step).toFixed(1) + " " + (floor - (floor - top) * v / max).toFixed(1); });
    return d + " L" + (card.x + card.w) + " " + floor + " Z";
  }

  function tspan(parent, cls, content) {
    const t = el("tspan", { class: cls }, parent);
    t.textContent = content;
    return t;
  }

  function update(m) {
    for (const a of m.apps) {
      const r = refs.boxes.get(a.id);
      if (!r) continue;
      const st = a.status;
      r.g.classList.toggle("down", !!a.error);
      const lag = st ? fmtSeconds(st.loop_lag) : "–";
      r.meta.textContent = hostPort(a.url) + (st ? "  ·  pid " + st.pid + "  ·  loop lag " + lag : "");
      r.stateSlot.textContent = "";
      const b = r.box;
      const state = a.error ? "down" : st ? st.state : "down";
      const word = a.error ? "not answering" : st && !st.ready && st.state === "running" ? "not ready" : state;
      pill(r.stateSlot, b.x + b.w - 14, b.y + 27, "state-" + (state === "running" && st && !st.ready ? "starting" : state), word, true);
      r.workers.textContent = "";
      if (a.workers.length) {
        // Left of the state pill: one dot per worker, green when ready.
        const right = b.x + b.w - 14 - (12 + word.length * 6.6) - 12;
        text(r.workers, right - a.workers.length * 13 - 4, b.y + 26, "meta", a.workers.length + " workers", "end");
        a.workers.forEach((w, i) => {
          const c = el("circle", { class: "worker-dot" + (w.ready ? "" : " not-ready"), cx: right - (a.workers.length - 1 - i) * 13 - 5, cy: b.y + 22, r: 4.5 }, r.workers);
          el("title", {}, c).textContent = "worker " + w.worker + " · pid " + w.pid + " · " + w.state;
        });
      }
      r.error.textContent = a.error ? a.error.slice(0, 64) + (a.error.length > 64 ? "…" : "") : (st && !a.channels.length ? "no channels" : "");
    }
    for (const [key, r] of refs.cards) {
      const ch = m.channels.get(key);
      if (!ch) continue;
      const raw = ch.raw, rt = ch.rates;
      r.g.setAttribute("data-in", (rt.in || 0).toFixed(3));
      r.g.setAttribute("data-out", (rt.out || 0).toFixed(3));
      r.g.setAttribute("data-errors", (rt.err || 0).toFixed(3));
      r.g.classList.toggle("failing", (rt.err || 0) > 0 || (rt.dropped || 0) > 0);
      r.g.classList.toggle("waiting", !(rt.err > 0) && ((raw.queue || 0) > 0 || ((raw.peers || 0) === 0 && ch.endpoints.length > 0)));
      r.rates.textContent = "";
      tspan(r.rates, "in", "▼ " + fmtRate(rt.in) + "/s");
      tspan(r.rates, "", "   ");
      tspan(r.rates, "out", "▲ " + fmtRate(rt.out) + "/s");
      if (rt.err > 0) {
        tspan(r.rates, "", "   ");
        tspan(r.rates, "err", "✖ " + fmtRate(rt.err) + "/s");
      }
      const parts = ["q " + (raw.queue || 0), "busy " + (raw.in_flight || 0), "peers " + (raw.peers || 0)];
      if (rt.p50 !== null) parts.push("p50 " + fmtSeconds(rt.p50), "p99 " + fmtSeconds(rt.p99));
      r.small.textContent = parts.join("  ·  ");
      r.spark.setAttribute("d", sparkPath(r.card, rt.spark));
      r.g.classList.toggle("tapped", !!tap && tap.channel === ch.name);
      r.title.textContent = (TAPS ? "click to tap " : "") + ch.name + " (" + ch.type + ")\n" + ch.endpoints.join("\n") +
        (raw.subscribe && raw.subscribe.length ? "\ntopics: " + raw.subscribe.join(", ") : "") +
        "\nreceived " + raw.received + " · sent " + raw.sent + " · errors " + ((raw.errors || 0) + (raw.decode_failed || 0));
    }
    for (const r of refs.edges) {
      const e = findEdge(m, r.edge);
      const rate = e ? e.rate : null;
      const moving = rate !== null && rate > 0;
      r.g.setAttribute("data-rate", (rate || 0).toFixed(3));
      r.g.classList.toggle("idle", !moving);
      r.g.classList.toggle("flowing", moving);
      const width = 1.6 + Math.min(6, Math.log10(1 + (rate || 0)) * 1.7);
      r.base.setAttribute("stroke-width", (width + 4).toFixed(1));
      r.flow.setAttribute("stroke-width", width.toFixed(1));
      const speed = moving ? Math.max(0.3, 2.2 - 0.55 * Math.log10(1 + rate)).toFixed(1) + "s" : "";
      if (speed !== r.speed) { r.g.style.setProperty("--dur", speed || "0s"); r.speed = speed; }
      r.rate.textContent = fmtRate(rate) + "/s";
      const w = Math.max(r.rate.getComputedTextLength(), r.where ? r.where.getComputedTextLength() : 0) + 18;
      const h = r.where ? 34 : 22;
      r.rect.setAttribute("x", r.at[0] - w / 2);
      r.rect.setAttribute("y", r.at[1] - (r.where ? 16 : 11));
      r.rect.setAttribute("width", w);
      r.rect.setAttribute("height", h);
    }
  }

  function findEdge(m, old) {
    const same = (x, y) => (x.outside || "") === (y.outside || "") && x.app === y.app && x.channel === y.channel;
    return m.edges.find((e) => e.kind === old.kind && same(e.from, old.from) && same(e.to, old.to) && e.address === old.address);
  }

  // -- the header and the tables -------------------------------------------------------------------

  function summary(m) {
    const s = document.getElementById("summary");
    const up = m.apps.filter((a) => a.status && !a.error).length;
    const t = m.apps.reduce((acc, a) => {
      acc.in += a.totals.in; acc.out += a.totals.out; acc.err += a.totals.err;
      acc.queue += a.totals.queue; acc.inFlight += a.totals.inFlight;
      return acc;
    }, { in: 0, out: 0, err: 0, queue: 0, inFlight: 0 });
    const chips = [
      [MULTI ? up + " / " + m.apps.length : (m.apps[0] && m.apps[0].status ? m.apps[0].status.state : "–"), MULTI ? "apps up" : "state", up === m.apps.length ? "good" : "bad"],
      [fmtRate(t.in) + "/s", "in", ""],
      [fmtRate(t.out) + "/s", "out", ""],
      [fmtRate(t.err) + "/s", "errors", t.err > 0 ? "bad" : ""],
      [String(t.inFlight), "in flight", ""],
      [String(t.queue), "queued", t.queue > 0 ? "bad" : ""],
    ];
    s.textContent = "";
    for (const [value, label, cls] of chips) {
      const c = document.createElement("div");
      c.className = "chip " + cls;
      const b = document.createElement("b");
      b.textContent = value;
      const span = document.createElement("span");
      span.textContent = label;
      c.append(b, span);
      s.appendChild(c);
    }
    const title = MULTI ? m.apps.length + " apps" : (m.apps[0] && m.apps[0].status ? m.apps[0].status.app : "zmqapp");
    document.getElementById("title").textContent = title;
    document.title = title + " · zmqapp";
  }

  function row(tbody, cells, attrs) {
    const tr = document.createElement("tr");
    for (const [k, v] of Object.entries(attrs || {})) tr.setAttribute(k, v);
    for (const cell of cells) {
      const td = document.createElement("td");
      const [value, cls] = Array.isArray(cell) ? cell : [cell, ""];
      td.textContent = value;
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    tbody.appendChild(tr);
    return tr;
  }

  function tables(m) {
    const procs = document.querySelector("#processes tbody");
    procs.textContent = "";
    for (const a of m.apps) {
      const st = a.status;
      const t = a.totals;
      const state = a.error ? "not answering" : st ? st.state + (st.ready ? "" : " (not ready)") : "–";
      const tr = row(procs, [
        a.name, a.workers.length ? "pool of " + a.workers.length : "–", st ? String(st.pid) : "–",
        [state, a.error ? "bad" : st && st.ready ? "" : "warn"], [st ? fmtSeconds(st.loop_lag) : "–", "num"],
        [fmtRate(t.in), "num"], [fmtRate(t.out), "num"], [fmtRate(t.err), t.err > 0 ? "num bad" : "num"],
        [String(t.queue), "num"], [String(t.inFlight), "num"],
      ], { "data-app": a.name, "data-worker": "" });
      if (a.error) tr.className = "down";
      for (const w of a.workers) {
        row(procs, [
          "", "worker " + w.worker, String(w.pid), [w.state + (w.ready ? "" : " (not ready)"), w.ready ? "" : "warn"],
          [w.lag === null || w.lag === undefined ? "–" : fmtSeconds(w.lag), "num"], [fmtRate(w.in), "num"],
          [fmtRate(w.out), "num"], [fmtRate(w.err), w.err > 0 ? "num bad" : "num"], [String(w.queue), "num"],
          [String(w.inFlight), "num"],
        ], { class: "worker", "data-app": a.name, "data-worker": String(w.worker) });
      }
    }
    const chans = document.querySelector("#channels tbody");
    chans.textContent = "";
    for (const a of m.apps) {
      for (const c of a.channels) {
        const raw = c.raw, rt = c.rates;
        const topics = raw.subscribe && raw.subscribe.length ? "  topics " + raw.subscribe.map((t) => '"' + t + '"').join(", ") : "";
        const tr = row(chans, [
          a.name, c.name, c.type, [c.endpoints.join(", ") + topics, "endpoints"], [String(raw.peers || 0), "num"],
          [fmtRate(rt.in), "num"], [fmtRate(rt.out), "num"], [fmtRate(rt.err), rt.err > 0 ? "num bad" : "num"],
          [String(raw.queue || 0), raw.queue > 0 ? "num warn" : "num"], [String(raw.in_flight || 0), "num"],
          [fmtSeconds(rt.p50), "num"], [fmtSeconds(rt.p99), "num"], [String(raw.received || 0), "num"],
          [String(raw.sent || 0), "num"], [String((raw.errors || 0) + (raw.decode_failed || 0)), "num"],
        ], { "data-app": a.name, "data-channel": c.name, "data-in": (rt.in || 0).toFixed(3), "data-out": (rt.out || 0).toFixed(3) });
        if (TAPS) tr.addEventListener("click", () => openTap(c.name));
      }
    }
  }

  // -- the tap ---------------------------------------------------------------------------------------

  let tap = null; // {channel, controller, paused, hidden}

  function clock(seconds) {
    const d = new Date(seconds * 1000);
    const pad = (n, w) => String(n).padStart(w || 2, "0");
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + "." + pad(d.getMilliseconds(), 3);
  }

  function shown(value) {
    if (typeof value === "string") return value;
    if (value && value.encoding === "base64") return "base64:" + value.data;
    return JSON.stringify(value);
  }

  function tapNote(message, bad) {
    const note = document.getElementById("tap-note");
    note.textContent = message;
    note.className = bad ? "bad" : "";
  }

  function tapLine(record) {
    if (record.dropped !== undefined && record.direction === undefined) {
      tapNote("the app dropped " + record.dropped + " message(s) for this tap: it reads faster than this page shows", true);
      return;
    }
    if (tap.paused) { tap.hidden++; tapNote("paused · " + tap.hidden + " message(s) not shown"); return; }
    const list = document.getElementById("tap-lines");
    const li = document.createElement("li");
    li.className = record.direction;
    const time = document.createElement("time");
    time.textContent = clock(record.time);
    const dir = document.createElement("span");
    dir.className = "dir";
    dir.textContent = record.direction;
    li.append(time, dir);
    if (record.topic !== null && record.topic !== undefined) {
      const topic = document.createElement("span");
      topic.className = "topic";
      topic.textContent = "[" + shown(record.topic) + "]";
      li.appendChild(topic);
    }
    const body = document.createElement("span");
    if (record.error) {
      body.className = "error";
      body.textContent = "not decoded: " + record.error + "  " + (record.frames || []).map(shown).join(" | ");
    } else {
      body.textContent = shown(record.body);
    }
    li.appendChild(body);
    const follow = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
    list.appendChild(li);
    while (list.children.length > TAP_KEEP) list.removeChild(list.firstChild);
    if (follow) list.scrollTop = list.scrollHeight;
  }

  function closeTap() {
    if (tap) tap.controller.abort();
    tap = null;
    document.getElementById("tap").hidden = true;
    document.body.classList.remove("tapping");
    for (const r of refs ? refs.cards.values() : []) r.g.classList.remove("tapped");
  }

  function openTap(channel) {
    closeTap();
    const current = (tap = { channel: channel, controller: new AbortController(), paused: false, hidden: 0 });
    document.getElementById("tap").hidden = false;
    document.body.classList.add("tapping");
    document.getElementById("tap-title").textContent = "tap · " + channel;
    document.getElementById("tap-lines").textContent = "";
    document.getElementById("tap-pause").textContent = "pause";
    tapNote("waiting for messages…");
    (async () => {
      try {
        const response = await fetch("tap/" + encodeURIComponent(channel), {
          signal: current.controller.signal, cache: "no-store", credentials: "same-origin",
        });
        if (!response.ok) { tapNote((await response.text()).trim(), true); return; }
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let end;
          while ((end = buffer.indexOf("\n")) >= 0) {
            const line = buffer.slice(0, end).trim();
            buffer = buffer.slice(end + 1);
            if (line && tap === current) {
              if (current.hidden === 0 && !current.paused && document.getElementById("tap-note").textContent.startsWith("waiting")) tapNote("");
              tapLine(JSON.parse(line));
            }
          }
        }
        if (tap === current) tapNote("the app ended the tap (is it stopping?)", true);
      } catch (err) {
        if (tap === current && err.name !== "AbortError") tapNote("the tap failed: " + err.message, true);
      }
    })();
  }

  if (TAPS) {
    document.body.classList.add("tappable");
    document.getElementById("tap-close").addEventListener("click", closeTap);
    document.getElementById("tap-pause").addEventListener("click", (event) => {
      if (!tap) return;
      tap.paused = !tap.paused;
      tap.hidden = 0;
      event.target.textContent = tap.paused ? "resume" : "pause";
      tapNote(tap.paused ? "paused" : "");
    });
    document.addEventListener("keydown", (event) => { if (event.key === "Escape") closeTap(); });
  } else {
    document.getElementById("tap-hint").hidden = true;
  }

  // -- polling -------------------------------------------------------------------------------------

  function problem(message) {
    const p = document.getElementById("problem");
    p.hidden = !message;
    p.textContent = message || "";
    const pulse = document.getElementById("pulse");
    pulse.className = message ? "stale" : "";
  }

  function shapeOf(m) {
    return JSON.stringify([
      m.apps.map((a) => [a.id, a.name, a.channels.map((c) => c.name + ":" + c.type)]),
      m.edges.map((e) => [e.kind, e.from, e.to, e.address, e.topics]),
    ]);
  }

  function render(system) {
    const m = model(system, Date.now() / 1000);
    const svg = document.getElementById("graph");
    const s = shapeOf(m);
    if (s !== shape || !refs) {
      shape = s;
      refs = build(svg, m, layout(m));
    }
    update(m);
    summary(m);
    tables(m);
    updates++;
    document.body.setAttribute("data-updates", String(updates));
    const pulse = document.getElementById("pulse");
    pulse.className = "";
    void pulse.offsetWidth; // restart the beat
    pulse.className = "live";
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  }

  async function poll() {
    try {
      const response = await fetch(SOURCE, { cache: "no-store", credentials: "same-origin" });
      if (response.status === 401) {
        throw new Error("This dashboard needs the app's HTTP_TOKEN: open it once as ?token=HTTP_TOKEN.");
      }
      if (!response.ok) throw new Error(SOURCE + " answered " + response.status + ": " + (await response.text()).trim());
      const doc = await response.json();
      const system = MULTI ? doc : { apps: [{ id: "a0", url: location.origin, status: doc, error: null, fetched: 0 }], edges: [] };
      problem(null);
      render(system);
    } catch (err) {
      problem("Not updating: " + (err && err.message ? err.message : err));
      document.getElementById("updated").textContent = "last try " + new Date().toLocaleTimeString();
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  poll();
})();
