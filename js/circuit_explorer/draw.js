// Drawing the diagram, given a layout and what is in the circuit: SVG markup for the frame
// (span columns, level labels), edges, ghosts (pruned edges) and nodes, and the canvas used
// above 1,500 drawn edges. Span shading always goes underneath the edges.
import { NODE, KINDS } from "./logic.js";
import { edgeCurve, strokeWidth, edgeColor, DASH, levelOf } from "./layout.js";

export const GHOST = "#9ca3af";
export const STRONG = 400;      // at larger sizes only the strongest this many edges are drawn fully

export const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

export function edgeName(d, r) {
  const info = d.info, kind = KINDS[d.kind[r]];
  const src = info.forward_names[d.src[r]];
  const s1 = info.spans[d.srcSpan[r]], s2 = info.spans[d.dstSpan[r]];
  if (kind === "resid") return `${src}->${info.backward_names[d.dst[r]]}@${s1}`;
  const read = kind === "q" ? s2 : s1;
  return `${src}<${kind}>@${read}->${src}@${s2}` + (kind === "q" ? `[${s1}]` : "");
}

export function edgeLabel(d, r, ghost = false) {
  const kind = KINDS[d.kind[r]];
  return `${ghost ? "pruned edge" : "edge"} ${edgeName(d, r)}, ${kind === "resid" ? "residual" : `crossing ${kind}`}, score ${d.score[r].toPrecision(3)}`;
}

/** |score| below which a drawn edge is faint (0: all drawn fully). */
export function strongCut(d, drawn) {
  if (drawn.length <= 2 * STRONG) return 0;
  const a = Float64Array.from(drawn, (r) => Math.abs(d.score[r])).sort();
  return a[a.length - STRONG];
}

function pathD(d, pos, r) {
  const b = edgeCurve(d, pos, r);
  return `M${b[0].toFixed(1)},${b[1].toFixed(1)}C${b[2].toFixed(1)},${b[3].toFixed(1)} ${b[4].toFixed(1)},${b[5].toFixed(1)} ${b[6].toFixed(1)},${b[7].toFixed(1)}`;
}

/** Opacity of an edge: full for strong ones, faint for the rest; with a highlighted node, full
 * for its own edges and dim for everything else. */
export function edgeAlpha(d, r, s) {
  if (s.focus) return s.focus.has(d.parent[r]) || s.focus.has(d.child[r]) ? 0.95 : 0.06;
  return Math.abs(d.score[r]) >= s.cut ? 0.78 : 0.16;
}

export function edgeMarkup(d, pos, s) {
  const out = [];
  for (const r of s.drawn) {
    const dash = DASH[d.kind[r]] ? ` stroke-dasharray="${DASH[d.kind[r]].join(" ")}"` : "";
    const hl = s.focus && (s.focus.has(d.parent[r]) || s.focus.has(d.child[r])) ? ' class="hl"' : "";
    out.push(`<path data-row="${d.rowId[r]}" data-local="${r}"${hl} aria-label="${esc(edgeLabel(d, r))}" d="${pathD(d, pos, r)}" stroke="${edgeColor(d.score[r])}" stroke-width="${strokeWidth(d.score[r], s.maxAbs, s.drawn.length).toFixed(2)}" stroke-opacity="${edgeAlpha(d, r, s)}" fill="none"${dash}/>`);
  }
  return out.join("");
}

export function ghostMarkup(d, pos, s) {
  return Array.from(s.ghosts, (r) => `<path data-ghost="${d.rowId[r]}" aria-label="${esc(edgeLabel(d, r, true))}" d="${pathD(d, pos, r)}" stroke="${GHOST}" stroke-width="1.2" stroke-dasharray="1.5 2.5" fill="none"/>`).join("");
}

const TYPE_WORD = ["input", "head", "MLP", "q input", "k input", "v input", "logits"];

export function nodeLabel(d, n, on, removed) {
  return `${d.nodeNames[n]}, ${TYPE_WORD[d.nodeType[n]]}, ${removed ? "pruned: Enter restores it" : on ? "in the circuit: Enter prunes it, E visits its edges" : "not in the circuit"}`;
}

export function nodeMarkup(d, pos, s) {
  const out = [];
  for (let n = 0; n < d.nNodes; n++) {
    const t = d.nodeType[n], x = pos.x[n], y = pos.y[n];
    const on = s.active[n], removed = s.gone.has(n), hit = s.matches.has(n);
    const small = pos.columns[d.nodeSpan[n]]?.collapsed;
    const low = pos.levels[levelOf(d, n)]?.collapsed;
    if ((small || low) && !on && !removed && t !== NODE.INPUT && t !== NODE.LOGITS) continue;
    const fill = removed ? "#f3f4f6" : on ? "#374151" : "#e5e7eb";
    const stroke = hit ? "#f59e0b" : removed ? "#9ca3af" : on ? "#111827" : "#cbd5e1";
    const sw = hit ? 3 : 1;
    const focusable = (on || removed) && t !== NODE.Q && t !== NODE.K && t !== NODE.V;
    const kb = focusable ? ` tabindex="${n === s.tabNode ? 0 : -1}" role="button" focusable="true" aria-label="${esc(nodeLabel(d, n, on, removed))}"` : "";
    const attrs = `data-node="${n}" data-name="${esc(d.nodeNames[n])}" class="pe-node${on ? " on" : ""}${removed ? " removed" : ""}${hit ? " match" : ""}"${kb}`;
    if (t === NODE.HEAD) {
      out.push(`<circle ${attrs} cx="${x}" cy="${y}" r="5" fill="${fill}" stroke="${stroke}" stroke-width="${sw}"/>`);
    } else if (t === NODE.MLP) {
      out.push(`<rect ${attrs} x="${x - 5}" y="${y - 5}" width="10" height="10" rx="2" fill="${on && !removed ? "#6b7280" : fill}" stroke="${stroke}" stroke-width="${sw}"/>`);
    } else if (t === NODE.INPUT || t === NODE.LOGITS) {
      const w = small ? 18 : 44;
      out.push(`<rect ${attrs} x="${x - w / 2}" y="${y - 8}" width="${w}" height="16" rx="4" fill="${on ? "#eef2ff" : "#f9fafb"}" stroke="${stroke}" stroke-width="${sw}"/>`);
      if (!small) out.push(`<text x="${x}" y="${y + 4}" text-anchor="middle" font-size="10" fill="${on ? "#1e3a8a" : "#9ca3af"}" aria-hidden="true">${t === NODE.INPUT ? "input" : "logits"}</text>`);
    } else if (on) {
      out.push(`<circle ${attrs} cx="${x}" cy="${y}" r="1.8" fill="#6b7280"/>`);
    }
    if (removed && (t === NODE.HEAD || t === NODE.MLP)) {
      out.push(`<path d="M${x - 4},${y - 4}L${x + 4},${y + 4}M${x + 4},${y - 4}L${x - 4},${y + 4}" stroke="#b91c1c" stroke-width="1.5"/>`);
    }
  }
  return out.join("");
}

/** Span column shading (every other span), for SVG. */
export function shadeMarkup(pos) {
  return pos.columns.map((c, s) => (s % 2 === 1
    ? `<rect data-role="span-shade" x="${c.x0}" y="0" width="${c.x1 - c.x0}" height="${pos.height}" fill="#f1f5f9"/>` : "")).join("");
}

/** Span names and level labels and lines (no fills: they go over a canvas). */
export function labelMarkup(d, pos) {
  const out = [];
  pos.columns.forEach((c, s) => {
    const len = d.info.span_lengths && !c.collapsed ? ` (${Number(d.info.span_lengths[s]).toFixed(1)})` : "";
    const name = c.collapsed ? `<title>${esc(c.name)}: no circuit node (collapsed)</title>${esc(c.name.slice(0, 2))}` : esc(c.name);
    out.push(`<text x="${(c.x0 + c.x1) / 2}" y="16" text-anchor="middle" font-size="${c.collapsed ? 9 : 11.5}" font-weight="600" fill="${c.collapsed ? "#9ca3af" : "#374151"}">${name}<tspan font-weight="400" fill="#9ca3af" font-size="10">${len}</tspan></text>`);
  });
  for (const lv of pos.levels) {
    if (!lv.collapsed) out.push(`<text x="8" y="${lv.y + 3.5}" font-size="10" fill="#6b7280">${lv.label}</text>`);
    out.push(`<line x1="${pos.columns[0]?.x0 ?? 0}" x2="${pos.width - 16}" y1="${lv.y}" y2="${lv.y}" stroke="#e9eef4"/>`);
  }
  return out.join("");
}

function paintEdges(ctx, d, pos, s, cull) {
  ctx.fillStyle = "#f1f5f9";
  pos.columns.forEach((c, i) => { if (i % 2 === 1) ctx.fillRect(c.x0, 0, c.x1 - c.x0, pos.height); });
  const order = s.focus ? [0.06, 0.95] : [0.16, 0.78];
  for (const alpha of order) {
    ctx.globalAlpha = alpha;
    for (const r of s.drawn) {
      if (edgeAlpha(d, r, s) !== alpha) continue;
      const b = edgeCurve(d, pos, r);
      if (cull && (Math.max(b[0], b[6]) < cull[0] || Math.min(b[0], b[6]) > cull[2]
        || Math.max(b[1], b[7]) + 80 < cull[1] || Math.min(b[1], b[7]) - 80 > cull[3])) continue;
      ctx.beginPath();
      ctx.moveTo(b[0], b[1]);
      ctx.bezierCurveTo(b[2], b[3], b[4], b[5], b[6], b[7]);
      ctx.strokeStyle = edgeColor(d.score[r]);
      ctx.lineWidth = strokeWidth(d.score[r], s.maxAbs, s.drawn.length);
      ctx.setLineDash(DASH[d.kind[r]] ?? []);
      ctx.stroke();
    }
  }
  ctx.globalAlpha = 1;
}

const CACHE_PIXELS = 24e6;

/** Edges on a 2D canvas (`t`: the view transform {k, x, y}); span shading first, underneath.
 * The whole diagram is rendered once per zoom level and drawn state (`s.key`) into a bitmap
 * that panning only moves; past CACHE_PIXELS the visible part is drawn directly. */
export function drawCanvas(canvas, d, pos, s, t, boxW, boxH, cache = {}) {
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.ceil(boxW * dpr) || canvas.height !== Math.ceil(boxH * dpr)) {
    canvas.width = Math.ceil(boxW * dpr);
    canvas.height = Math.ceil(boxH * dpr);
    canvas.style.width = `${boxW}px`;
    canvas.style.height = `${boxH}px`;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const scale = dpr * t.k;
  const w = Math.ceil(pos.width * scale), h = Math.ceil(pos.height * scale);
  if (w * h <= CACHE_PIXELS) {
    if (!cache.bitmap || cache.k !== t.k || cache.key !== s.key || cache.w !== w || cache.h !== h) {
      const off = cache.bitmap ?? document.createElement("canvas");
      off.width = w; off.height = h;
      const octx = off.getContext("2d");
      octx.setTransform(scale, 0, 0, scale, 0, 0);
      paintEdges(octx, d, pos, s, null);
      Object.assign(cache, { bitmap: off, k: t.k, key: s.key, w, h });
    }
    ctx.drawImage(cache.bitmap, Math.round(t.x * dpr), Math.round(t.y * dpr));
    return;
  }
  ctx.setTransform(scale, 0, 0, scale, dpr * t.x, dpr * t.y);
  const x0 = -t.x / t.k - 80, y0 = -t.y / t.k - 80, x1 = (boxW - t.x) / t.k + 80, y1 = (boxH - t.y) / t.k + 80;
  paintEdges(ctx, d, pos, s, [x0, y0, x1, y1]);
}
