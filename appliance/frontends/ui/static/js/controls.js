/**
 * Controls drawn from the catalog's metadata: a large slider for continuous
 * controls, a switch for toggles, choices for enumerations.
 *
 * A slider never fights another client: while a finger (or the keyboard) is
 * on it, values from the box are kept but not shown; on release the last
 * value is sent, and once the box has echoed it the slider shows the box's
 * value. While dragging it sends at most every SEND_INTERVAL_MS, and always
 * the last value.
 */

import { h } from "./dom.js";
import { formatValue, fromPosition, labelFor, number, parseTyped, snap, toPosition } from "./format.js";

/** Smallest time between two values sent while dragging (≤ 30 per second). */
export const SEND_INTERVAL_MS = 34;
/** How long a released slider waits for the echo of its last value before showing the box's. */
const SETTLE_TIMEOUT_MS = 1500;
/** Keyboard: how long after the last key press the slider counts as released. */
const KEY_IDLE_MS = 600;
/** Two taps closer than this are a double tap (back to the default). */
const DOUBLE_TAP_MS = 350;
/** A touch that moves less than this is a tap, not a drag. */
const TAP_SLOP_PX = 8;
/** Fine mode divides drag and key steps by this. */
const FINE_FACTOR = 10;

let serial = 0;

/**
 * A continuous (or many-valued integer) control.
 *
 * @param {{name: string, meta: object, value: number, send: (v: number) => (string|null),
 *          isFine?: () => boolean, parameterId?: string}} options
 *   send returns the id of the request it sent (null when not connected).
 */
export class Slider {
  constructor({ name, meta, value, send, isFine, parameterId }) {
    this.meta = meta;
    this.name = name;
    this.sendValue = send;
    this.isFine = isFine || (() => false);
    this.boxValue = value;
    this.shown = value;
    this.held = 0; // how many holders (a pointer, the keyboard, the typed entry)
    this.pointerId = null;
    this.settling = false;
    this.settleTimer = 0;
    this.keyTimer = 0;
    this.sendTimer = 0;
    this.pending = null;
    this.finishing = false;
    this.lastSentAt = 0;
    this.lastSentId = null;
    this.lastSentValue = null;
    this.lastEchoed = null;
    this.lastTapAt = 0;
    this.lastTapX = 0;
    this._build(parameterId);
    this._render();
  }

  /** The box says the value is `value` (`replyTo`: the request it answers, if any). */
  update(value, replyTo) {
    this.boxValue = value;
    if (replyTo !== undefined && replyTo === this.lastSentId) this.lastEchoed = replyTo;
    if (this.held || this.finishing) return;
    if (this.settling) {
      if (this.lastEchoed === this.lastSentId) this._settle();
      return;
    }
    this.shown = value;
    this._render();
  }

  /** Redraw (after the fine mode changed). */
  refresh() {
    this.track.classList.toggle("fine", this.isFine());
    this._render();
  }

  // -- building -------------------------------------------------------------------

  _build(parameterId) {
    const id = `slider-${++serial}`;
    this.valueButton = h("button", {
      type: "button",
      class: "value-button",
      "aria-label": `Type a value for ${this.name}`,
      onclick: () => this._openEntry(),
    });
    this.head = h("div", { class: "control-head" }, h("span", { class: "control-name", id: `${id}-name` }, this.name), this.valueButton);
    this.fill = h("div", { class: "fill" });
    this.thumb = h("div", { class: "thumb" });
    const mark = h("div", { class: "default-mark" });
    mark.style.left = `${toPosition(this.meta, this.meta.default ?? this.meta.min) * 100}%`;
    this.track = h(
      "div",
      {
        class: "slider needs-live",
        role: "slider",
        tabindex: "0",
        "aria-labelledby": `${id}-name`,
        "aria-valuemin": this.meta.min,
        "aria-valuemax": this.meta.max,
        "aria-orientation": "horizontal",
      },
      mark,
      this.fill,
      this.thumb,
    );
    this.track.addEventListener("pointerdown", (e) => this._down(e));
    this.track.addEventListener("pointermove", (e) => this._move(e));
    this.track.addEventListener("pointerup", (e) => this._up(e, false));
    this.track.addEventListener("pointercancel", (e) => this._up(e, true));
    this.track.addEventListener("lostpointercapture", (e) => this._up(e, true));
    this.track.addEventListener("keydown", (e) => this._key(e));
    this.track.addEventListener("contextmenu", (e) => e.preventDefault());
    this.el = h("div", { class: "control", dataset: { parameterId: parameterId || "" } }, this.head, this.track);
  }

  _render() {
    const fine = this.isFine();
    const position = toPosition(this.meta, this.shown);
    this.fill.style.width = `${position * 100}%`;
    this.thumb.style.left = `${position * 100}%`;
    const text = formatValue(this.meta, this.shown, fine);
    if (!this.entry) this.valueButton.textContent = text;
    this.track.setAttribute("aria-valuenow", String(this.shown));
    this.track.setAttribute("aria-valuetext", text);
    this.track.classList.toggle("held", this.held > 0);
  }

  // -- sending ----------------------------------------------------------------------

  _hold() {
    this.held += 1;
    this.settling = false;
    this.finishing = false;
    clearTimeout(this.settleTimer);
  }

  _release() {
    this.held = Math.max(0, this.held - 1);
    if (this.held) return;
    if (this.pending !== null) {
      // The last value goes out as soon as the rate allows (within SEND_INTERVAL_MS).
      const wait = SEND_INTERVAL_MS - (performance.now() - this.lastSentAt);
      if (wait > 0) {
        this.finishing = true;
        if (!this.sendTimer) this.sendTimer = setTimeout(() => this._flush(), wait);
        return;
      }
      this._flush();
    }
    this._released();
  }

  /** The gesture is over and its last value sent: show the box's value once it has echoed it. */
  _released() {
    if (this.lastSentId !== null && this.lastEchoed !== this.lastSentId) {
      this.settling = true;
      clearTimeout(this.settleTimer);
      this.settleTimer = setTimeout(() => this._settle(), SETTLE_TIMEOUT_MS);
      this._render();
    } else {
      this._settle();
    }
  }

  _settle() {
    this.settling = false;
    clearTimeout(this.settleTimer);
    this.shown = this.boxValue;
    this._render();
  }

  /** Show `value` now and send it at the bounded rate. */
  _input(value) {
    this.shown = value;
    this._render();
    this.pending = value;
    if (this.sendTimer) return;
    const wait = SEND_INTERVAL_MS - (performance.now() - this.lastSentAt);
    if (wait <= 0) this._flush();
    else this.sendTimer = setTimeout(() => this._flush(), wait);
  }

  _flush() {
    clearTimeout(this.sendTimer);
    this.sendTimer = 0;
    if (this.pending !== null) {
      const value = this.pending;
      this.pending = null;
      if (value !== this.lastSentValue || this.lastSentId === null) {
        this.lastSentAt = performance.now();
        this.lastSentValue = value;
        this.lastSentId = this.sendValue(value);
      }
    }
    if (this.finishing) {
      this.finishing = false;
      this._released();
    }
  }

  // -- pointer ---------------------------------------------------------------------

  _down(e) {
    if (this.pointerId !== null || (e.pointerType === "mouse" && e.button !== 0)) return;
    this.pointerId = e.pointerId;
    try {
      this.track.setPointerCapture(e.pointerId);
    } catch {
      /* the pointer is gone already */
    }
    this.startX = e.clientX;
    this.downX = e.clientX;
    this.startPosition = toPosition(this.meta, this.shown);
    this.width = Math.max(this.track.getBoundingClientRect().width, 1);
    this.moved = false;
    this._hold();
  }

  _move(e) {
    if (e.pointerId !== this.pointerId) return;
    let dx = e.clientX - this.startX;
    if (!this.moved) {
      if (Math.abs(dx) < TAP_SLOP_PX) return;
      this.moved = true;
      this.startX += Math.sign(dx) * TAP_SLOP_PX;
      dx = e.clientX - this.startX;
    }
    const scale = this.isFine() ? 1 / FINE_FACTOR : 1;
    let position = this.startPosition + (dx / this.width) * scale;
    if (position < 0 || position > 1) {
      // Pushed past an end: rebase, so that moving back acts at once.
      position = Math.min(Math.max(position, 0), 1);
      this.startPosition = position;
      this.startX = e.clientX;
    }
    const value = fromPosition(this.meta, position);
    if (value !== this.shown) this._input(value);
  }

  _up(e, cancelled) {
    if (e.pointerId !== this.pointerId) return;
    this.pointerId = null;
    if (!cancelled && !this.moved) this._tap(e);
    this._release();
  }

  _tap(e) {
    const now = performance.now();
    if (now - this.lastTapAt < DOUBLE_TAP_MS && Math.abs(e.clientX - this.lastTapX) < 3 * TAP_SLOP_PX) {
      this.lastTapAt = 0;
      const value = snap(this.meta, this.meta.default ?? this.meta.min);
      this.pending = value;
      this.shown = value;
      this.lastSentValue = null; // a double tap always sends
      this._render();
    } else {
      this.lastTapAt = now;
      this.lastTapX = e.clientX;
    }
  }

  // -- keyboard -----------------------------------------------------------------------

  _key(e) {
    const fine = this.isFine();
    const { meta } = this;
    const position = toPosition(meta, this.shown);
    const small = fine ? 0.01 / FINE_FACTOR : 0.01; // 1 % of the range, 0.1 % in fine mode
    const large = fine ? 0.1 / FINE_FACTOR : 0.1;
    const integerStep = meta.kind === "integer" && meta.max - meta.min <= 200;
    let value;
    switch (e.key) {
      case "ArrowRight":
      case "ArrowUp":
        value = integerStep ? snap(meta, this.shown + 1) : fromPosition(meta, position + small);
        break;
      case "ArrowLeft":
      case "ArrowDown":
        value = integerStep ? snap(meta, this.shown - 1) : fromPosition(meta, position - small);
        break;
      case "PageUp":
        value = fromPosition(meta, position + large);
        break;
      case "PageDown":
        value = fromPosition(meta, position - large);
        break;
      case "Home":
        value = snap(meta, meta.min);
        break;
      case "End":
        value = snap(meta, meta.max);
        break;
      default:
        return;
    }
    e.preventDefault();
    if (!this.keyTimer) this._hold();
    clearTimeout(this.keyTimer);
    this.keyTimer = setTimeout(() => {
      this.keyTimer = 0;
      this._release();
    }, KEY_IDLE_MS);
    if (value !== this.shown) this._input(value);
  }

  // -- typed entry ---------------------------------------------------------------------

  _openEntry() {
    if (this.entry) return;
    this._hold();
    const unit = this.meta.unit || "";
    const input = h("input", {
      type: "text",
      inputmode: "decimal",
      enterkeyhint: "done",
      autocomplete: "off",
      "aria-label": `${this.name}${unit ? ` in ${unit}` : ""}`,
      value: String(this.shown),
    });
    const close = (commit) => {
      const entry = this.entry;
      if (!entry) return;
      this.entry = null;
      const typed = parseTyped(input.value);
      entry.replaceWith(this.valueButton);
      if (commit && Number.isFinite(typed)) {
        const value = snap(this.meta, typed);
        this.pending = value;
        this.shown = value;
        this.lastSentValue = null;
      }
      this._release();
      this.track.focus({ preventScroll: true });
    };
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        close(true);
      } else if (e.key === "Escape") {
        e.preventDefault();
        close(false);
      }
    });
    input.addEventListener("blur", () => close(true));
    const range = `${number(this.meta.min, 3).replace(/\.?0+$/, "")} … ${number(this.meta.max, 3).replace(/\.?0+$/, "")}`;
    this.entry = h(
      "span",
      { class: "value-entry" },
      input,
      h("span", { class: "muted small" }, unit || "", h("br"), range),
    );
    this.valueButton.replaceWith(this.entry);
    input.focus();
    input.select();
  }
}

/** A toggle control (kind `toggle`): a labelled switch. */
export class Toggle {
  constructor({ name, meta, value, send, parameterId }) {
    this.meta = meta;
    this.button = h("button", {
      type: "button",
      class: "switch needs-live",
      role: "switch",
      "aria-label": name,
      onclick: () => send(this.on ? meta.min : meta.max),
    });
    this.el = h(
      "div",
      { class: "control", dataset: { parameterId: parameterId || "" } },
      h("div", { class: "control-head" }, h("span", { class: "control-name" }, name), this.button),
    );
    this.update(value);
  }

  update(value) {
    this.on = value >= (this.meta.min + this.meta.max) / 2 && value !== this.meta.min;
    this.button.setAttribute("aria-checked", String(this.on));
    this.button.textContent = this.on ? "On" : "Off";
  }
}

/** An enumeration (or a labelled integer): a row of choices, or a list when there are many. */
export class Choice {
  constructor({ name, meta, value, send, parameterId }) {
    this.meta = meta;
    const labels = meta.labels || [];
    this.buttons = [];
    let body;
    if (labels.length <= 4) {
      body = h("div", { class: "choices", role: "radiogroup", "aria-label": name });
      for (const label of labels) {
        const button = h("button", {
          type: "button",
          role: "radio",
          class: "needs-live",
          text: label.label,
          onclick: () => send(label.value),
        });
        button.dataset.value = String(label.value);
        this.buttons.push(button);
        body.append(button);
      }
    } else {
      this.select = h("select", { "aria-label": name, class: "needs-live" });
      for (const label of labels) this.select.append(h("option", { value: String(label.value), text: label.label }));
      this.select.addEventListener("change", () => send(Number(this.select.value)));
      body = this.select;
    }
    this.el = h(
      "div",
      { class: "control", dataset: { parameterId: parameterId || "" } },
      h("div", { class: "control-head" }, h("span", { class: "control-name" }, name)),
      body,
    );
    this.update(value);
  }

  update(value) {
    for (const button of this.buttons) button.setAttribute("aria-checked", String(Number(button.dataset.value) === value));
    if (this.select) {
      if (labelFor(this.meta, value) === null) {
        let custom = this.select.querySelector("option[data-custom]");
        if (!custom) {
          custom = h("option", { dataset: { custom: "1" } });
          this.select.prepend(custom);
        }
        custom.value = String(value);
        custom.textContent = `${value}`;
      }
      this.select.value = String(value);
    }
  }
}

/** A control the catalog does not describe (a plugin added by URI): typed entry only. */
export class NumberEntry {
  constructor({ name, value, send, parameterId }) {
    this.input = h("input", { type: "text", inputmode: "decimal", "aria-label": name, class: "needs-live" });
    this.input.addEventListener("change", () => {
      const typed = parseTyped(this.input.value);
      if (Number.isFinite(typed)) send(typed);
      else this.update(this.value);
    });
    this.el = h(
      "div",
      { class: "control", dataset: { parameterId: parameterId || "" } },
      h("div", { class: "control-head" }, h("span", { class: "control-name" }, name), h("span", { class: "value-entry" }, this.input)),
      h("div", { class: "control-hint" }, "This plugin's ranges are not in the catalog: type a value."),
    );
    this.update(value);
  }

  update(value) {
    this.value = value;
    if (document.activeElement !== this.input) this.input.value = String(value);
  }
}

/**
 * The control for one parameter, chosen from its metadata.
 *
 * @returns {Slider|Toggle|Choice|NumberEntry}
 */
export function controlFor({ name, meta, value, send, isFine, parameterId }) {
  if (!meta) return new NumberEntry({ name, value, send, parameterId });
  if (meta.kind === "toggle") return new Toggle({ name, meta, value, send, parameterId });
  if (meta.kind === "enum" || (meta.kind === "integer" && Array.isArray(meta.labels) && meta.labels.length && meta.max - meta.min > 200)) {
    return new Choice({ name, meta, value, send, parameterId });
  }
  return new Slider({ name, meta, value, send, isFine, parameterId });
}
