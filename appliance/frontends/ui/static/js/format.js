/**
 * Controls' values: slider positions, snapping and readouts, from the
 * catalog's metadata (protocol.md §6 CATALOG: min, max, default, unit, kind,
 * logarithmic, labels) and the box's snapping rules (§8).
 */

const clamp = (x, lo, hi) => Math.min(Math.max(x, lo), hi);

/** Is the control drawn on a logarithmic scale? (only with a positive range) */
export function isLog(meta) {
  return Boolean(meta.logarithmic) && meta.min > 0 && meta.max > meta.min;
}

/** A value's position along the slider, 0..1. */
export function toPosition(meta, value) {
  const { min, max } = meta;
  if (!(max > min)) return 0;
  const v = clamp(value, min, max);
  if (isLog(meta)) return Math.log(v / min) / Math.log(max / min);
  return (v - min) / (max - min);
}

/** The value at a slider position (0..1), snapped as the box would. */
export function fromPosition(meta, position) {
  const { min, max } = meta;
  const t = clamp(position, 0, 1);
  const value = isLog(meta) ? min * Math.pow(max / min, t) : min + t * (max - min);
  return snap(meta, value);
}

/** Clamp and snap a value to what the box would apply (protocol.md §8). */
export function snap(meta, value) {
  let v = clamp(value, meta.min, meta.max);
  if (meta.kind === "integer") v = Math.round(v);
  else if (meta.kind === "toggle") v = v >= (meta.min + meta.max) / 2 ? meta.max : meta.min;
  else if (meta.kind === "enum" && Array.isArray(meta.labels) && meta.labels.length) {
    v = meta.labels.reduce((best, l) => (Math.abs(l.value - v) < Math.abs(best - v) ? l.value : best), meta.labels[0].value);
  } else {
    v = Number(v.toPrecision(9));
  }
  return v;
}

/** How many decimals a readout of this control shows. */
export function decimals(meta, fine = false) {
  if (meta.kind === "integer" || meta.kind === "toggle" || meta.kind === "enum") return 0;
  const span = Math.abs(meta.max - meta.min) || 1;
  let d;
  if (span >= 200) d = 0;
  else if (span >= 20) d = 1;
  else if (span >= 2) d = 2;
  else d = 3;
  if (meta.unit === "dB") d = Math.max(d, 1);
  if (meta.unit === "%" && span >= 50) d = 0;
  return Math.min(d + (fine ? 1 : 0), 5);
}

/** The readout of a value, with its unit ("−6.0 dB", "1.60 kHz", "30 ms"). */
export function formatValue(meta, value, fine = false) {
  if (typeof value !== "number" || !Number.isFinite(value)) return "–";
  const label = labelFor(meta, value);
  if (label !== null) return label;
  const unit = meta.unit || "";
  const extra = fine ? 1 : 0;
  if (unit === "Hz" && Math.abs(value) >= 1000) {
    return `${number(value / 1000, (Math.abs(value) >= 10000 ? 1 : 2) + extra)} kHz`;
  }
  if (unit === "s" && Math.abs(value) < 1) {
    const ms = value * 1000;
    return `${number(ms, (Math.abs(ms) < 10 ? 2 : Math.abs(ms) < 100 ? 1 : 0) + extra)} ms`;
  }
  if (unit === "ms" && meta.kind !== "integer") {
    return `${number(value, (Math.abs(value) < 10 ? 2 : Math.abs(value) < 100 ? 1 : 0) + extra)} ms`;
  }
  const text = number(value, decimals(meta, fine));
  return unit ? `${text} ${unit}` : text;
}

/** The label the catalog gives this value, if any. */
export function labelFor(meta, value) {
  if (!Array.isArray(meta.labels)) return null;
  const found = meta.labels.find((l) => Math.abs(l.value - value) < 1e-9);
  return found ? found.label : null;
}

/** A number with a real minus sign. */
export function number(value, places) {
  const text = value.toFixed(places);
  return text.startsWith("-") && Number(text) !== 0 ? `−${text.slice(1)}` : text.replace(/^-/, "");
}

/** Parse what a user typed ("−6", "-6 dB", "0,5"); NaN when it is not a number. */
export function parseTyped(text) {
  const cleaned = String(text).trim().replace(/\u2212/g, "-").replace(",", ".").replace(/[a-zA-Z%\s]+$/, "");
  if (cleaned === "") return NaN;
  return Number(cleaned);
}
