// Small helpers shared by the widgets for reading anywidget models.

/** A typed array view of a bytes trait (DataView in Jupyter and on exported pages). */
export function typed(value, Ctor) {
  if (value == null) return new Ctor(0);
  if (value instanceof Ctor) return value;
  if (Array.isArray(value)) return Ctor.from(value);
  const buffer = value.buffer ?? value;
  const offset = value.byteOffset ?? 0;
  const length = value.byteLength ?? buffer.byteLength;
  if (offset % Ctor.BYTES_PER_ELEMENT === 0) {
    return new Ctor(buffer, offset, length / Ctor.BYTES_PER_ELEMENT);
  }
  // unaligned (possible with some transports): copy
  return new Ctor(buffer.slice(offset, offset + length));
}

/** Call `fn` whenever one of `names` changes; returns the function that stops listening. */
export function onChange(model, names, fn) {
  const events = names.map((n) => `change:${n}`);
  for (const e of events) model.on(e, fn);
  return () => { for (const e of events) model.off(e, fn); };
}

/** Set several traits and sync them once. */
export function update(model, values) {
  for (const [k, v] of Object.entries(values)) model.set(k, v);
  model.save_changes();
}
