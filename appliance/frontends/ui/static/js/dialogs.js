/**
 * Modal questions on the page's one <dialog> (confirm, a name, a choice of
 * actions) and short notices (toasts). Every question resolves; closing the
 * dialog answers "no".
 */

import { fill, h } from "./dom.js";

const TOAST_MS = 4000;

function dialog() {
  return /** @type {HTMLDialogElement} */ (document.getElementById("dialog"));
}

/** Show `content` in the dialog; resolves with what `finish` was called with (null when dismissed). */
function ask(build) {
  const el = dialog();
  if (el.open) el.close();
  return new Promise((resolve) => {
    let answered = false;
    const finish = (value) => {
      if (answered) return;
      answered = true;
      if (el.open) el.close();
      resolve(value);
    };
    el.onclose = () => finish(null);
    el.oncancel = () => finish(null);
    fill(el, build(finish));
    el.showModal();
    const first = el.querySelector("[autofocus]") || el.querySelector("input, button");
    if (first) first.focus();
  });
}

/**
 * Ask yes or no.
 *
 * @returns {Promise<boolean>}
 */
export async function confirmAction({ title, message, ok = "OK", danger = false }) {
  const answer = await ask((finish) =>
    h(
      "form",
      { method: "dialog", onsubmit: (e) => { e.preventDefault(); finish(true); } },
      h("h2", { id: "dialog-title" }, title),
      message ? h("p", {}, message) : null,
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", onclick: () => finish(false) }, "Cancel"),
        h("button", { type: "submit", class: danger ? "danger filled" : "primary", autofocus: true }, ok),
      ),
    ),
  );
  return answer === true;
}

/**
 * Ask for a name (and optionally one yes/no option).
 *
 * @returns {Promise<{name: string, option: boolean}|null>}
 */
export async function askName({ title, label = "Name", value = "", ok = "Save", option = null }) {
  let input;
  let check;
  return ask((finish) => {
    input = h("input", { type: "text", value, maxlength: "64", autocomplete: "off", "aria-label": label, autofocus: true, required: true });
    check = option ? h("input", { type: "checkbox", checked: Boolean(option.value) }) : null;
    return h(
      "form",
      {
        method: "dialog",
        onsubmit: (e) => {
          e.preventDefault();
          const name = input.value.trim();
          if (name) finish({ name, option: check ? check.checked : false });
          else input.focus();
        },
      },
      h("h2", { id: "dialog-title" }, title),
      h("label", {}, label, input),
      option ? h("label", { class: "check" }, check, option.label) : null,
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", onclick: () => finish(null) }, "Cancel"),
        h("button", { type: "submit", class: "primary" }, ok),
      ),
    );
  });
}

/**
 * A pedal's range and curve: the value at the heel (`minimum`) and at the toe
 * (`maximum`; below the minimum turns the pedal round), and how it moves between.
 *
 * @returns {Promise<{minimum: number, maximum: number, curve: string}|null>}
 */
export async function editRange({ title, minimum, maximum, curve = "linear", unit = "" }) {
  const suffix = unit ? ` (${unit})` : "";
  return ask((finish) => {
    const low = h("input", { type: "number", step: "any", value: String(minimum), "aria-label": `At the heel${suffix}`, required: true, autofocus: true });
    const high = h("input", { type: "number", step: "any", value: String(maximum), "aria-label": `At the toe${suffix}`, required: true });
    const shape = h(
      "select",
      { "aria-label": "Curve" },
      [
        ["linear", "Straight"],
        ["exp", "Slow at the heel (volume)"],
        ["log", "Fast at the heel"],
      ].map(([value, label]) => h("option", { value, selected: value === curve }, label)),
    );
    return h(
      "form",
      {
        method: "dialog",
        onsubmit: (e) => {
          e.preventDefault();
          const a = Number(low.value);
          const b = Number(high.value);
          if (low.value === "" || high.value === "" || !Number.isFinite(a) || !Number.isFinite(b)) return;
          finish({ minimum: a, maximum: b, curve: shape.value });
        },
      },
      h("h2", { id: "dialog-title" }, title),
      h("label", {}, `At the heel${suffix}`, low),
      h("label", {}, `At the toe${suffix}`, high),
      h("label", {}, "Curve", shape),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", onclick: () => finish(null) }, "Cancel"),
        h("button", { type: "submit", class: "primary" }, "Save"),
      ),
    );
  });
}

/**
 * Offer a list of actions.
 *
 * @param {{title: string, actions: {label: string, value: string, danger?: boolean}[]}} options
 * @returns {Promise<string|null>} the chosen action's value.
 */
export function chooseAction({ title, actions }) {
  return ask((finish) =>
    h(
      "div",
      { class: "sheet" },
      h("h2", { id: "dialog-title" }, title),
      actions.map((a) => h("button", { type: "button", class: a.danger ? "danger" : "", onclick: () => finish(a.value) }, a.label)),
      h("button", { type: "button", class: "quiet", onclick: () => finish(null) }, "Cancel"),
    ),
  );
}

/**
 * Say what the page waits for, until `until` settles or the player cancels.
 *
 * @returns {Promise<boolean>} true when `until` came first.
 */
export function waitFor({ title, message, until }) {
  return ask((finish) => {
    until.then(() => finish(true), () => finish(false));
    return h(
      "div",
      { class: "sheet", role: "status" },
      h("h2", { id: "dialog-title" }, title),
      h("p", {}, message),
      h("button", { type: "button", class: "quiet", onclick: () => finish(false) }, "Cancel"),
    );
  }).then((answer) => answer === true);
}

/** A short notice at the bottom of the screen. */
export function toast(text, { bad = false } = {}) {
  const box = document.getElementById("toasts");
  if (!box) return;
  const note = h("div", { class: bad ? "toast bad" : "toast" }, text);
  box.append(note);
  while (box.children.length > 3) box.firstElementChild.remove();
  setTimeout(() => note.remove(), TOAST_MS);
}

/** Report a failed request (a BoxError's sentence, or the connection's). */
export function toastError(error) {
  toast(error && error.message ? error.message : "The box refused that.", { bad: true });
}
