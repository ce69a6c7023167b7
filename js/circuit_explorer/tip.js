// Where a hover card goes: next to the pointer, flipped to the other side near an edge of the
// box and clamped inside it (never squeezed). Pure.

export function placeTip(px, py, tipW, tipH, boxW, boxH, gap = 14) {
  let left = px + gap, top = py + 12;
  if (left + tipW > boxW - 4) left = px - gap - tipW;          // flip to the left
  if (top + tipH > boxH - 4) top = py - 12 - tipH;             // flip above
  left = Math.max(4, Math.min(left, boxW - tipW - 4));
  top = Math.max(4, Math.min(top, boxH - tipH - 4));
  return { left, top };
}
