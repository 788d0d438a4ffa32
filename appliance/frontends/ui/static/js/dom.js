/**
 * Tiny DOM helpers: build elements without a framework.
 */

/**
 * Make an element.
 *
 * @param {string} tag the tag name.
 * @param {Object<string, any>} [props] attributes; `class`, `text`, `dataset`,
 *   `value`, `checked` and `on<event>` functions are handled specially; `null`,
 *   `undefined` and `false` leave the attribute out, `true` sets it empty.
 * @param {...any} children nodes, strings or (nested) arrays of them; `null` and `false` are skipped.
 * @returns {HTMLElement}
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "value" || key === "checked") el[key] = value;
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Replace everything in `el` with `children`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Run `fn` on the next animation frame, once, however often it is asked for before then. */
export function coalesce(fn) {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      fn();
    });
  };
}
