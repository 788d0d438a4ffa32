/**
 * The stage tuner, readable from a metre away: the note in huge type, a
 * cents bar (−50…+50, green within ±3 cents) and the frequency. Opening the
 * view turns the box's tuner on (the box mutes its outputs meanwhile);
 * leaving it turns it off. The readings come with the METERS events.
 */

import { fill, h } from "../dom.js";
import { number } from "../format.js";

/** Within this many cents a string is in tune. */
export const IN_TUNE_CENTS = 3;

export function tunerView({ store, actions, router }) {
  let main = null;
  let els = null;

  function render() {
    const note = h("div", { class: "tuner-note", id: "tuner-note", "aria-live": "off" }, "–");
    const needle = h("div", { class: "needle" });
    const bar = h(
      "div",
      { class: "cents", role: "meter", "aria-label": "Cents off pitch", "aria-valuemin": "-50", "aria-valuemax": "50", "aria-valuenow": "0" },
      h("div", { class: "zone" }),
      h("div", { class: "center" }),
      needle,
    );
    const readout = h("div", { class: "tuner-readout", id: "tuner-readout" }, "Play a string");
    const stateLine = h("p", { class: "tuner-state", id: "tuner-state", role: "status" });
    els = { note, needle, bar, readout, stateLine };
    fill(
      main,
      h(
        "div",
        { class: "tuner" },
        h("h1", { class: "visually-hidden" }, "Tuner"),
        stateLine,
        note,
        bar,
        h("div", { class: "cents-scale", "aria-hidden": "true" }, h("span", {}, "−50"), h("span", {}, "0"), h("span", {}, "+50")),
        readout,
        h("button", { type: "button", class: "done primary", text: "Done", onclick: () => router.back() }),
      ),
    );
    showState();
    showReading();
  }

  function showState() {
    if (!els) return;
    const on = store.tuner.on;
    els.stateLine.textContent = on ? "Tuner on · outputs muted" : "Tuner";
    els.stateLine.classList.toggle("on", on);
  }

  function showReading() {
    if (!els) return;
    const reading = store.meters && store.meters.tuner;
    if (!reading || typeof reading.frequency !== "number" || !reading.note) {
      els.note.textContent = "–";
      els.note.classList.add("idle");
      els.note.classList.remove("in-tune");
      els.bar.classList.remove("in-tune");
      els.needle.style.left = "50%";
      els.bar.setAttribute("aria-valuenow", "0");
      els.readout.textContent = "Play a string";
      return;
    }
    const cents = Math.max(-50, Math.min(50, Number(reading.cents) || 0));
    const inTune = Math.abs(cents) <= IN_TUNE_CENTS;
    els.note.classList.remove("idle");
    fill(els.note, reading.note, typeof reading.octave === "number" ? h("sub", {}, String(reading.octave)) : null);
    els.note.classList.toggle("in-tune", inTune);
    els.bar.classList.toggle("in-tune", inTune);
    els.needle.style.left = `${50 + cents}%`;
    els.bar.setAttribute("aria-valuenow", cents.toFixed(1));
    els.bar.setAttribute("aria-valuetext", `${number(cents, 1)} cents`);
    els.readout.textContent = `${cents > 0 ? "+" : ""}${number(cents, 1)} cents · ${number(reading.frequency, 1)} Hz`;
  }

  function onChange(event) {
    if (event.detail.kind === "meters") showReading();
    else if (event.detail.kind === "tuner") showState();
  }

  return {
    mount(container) {
      main = container;
      store.addEventListener("change", onChange);
      render();
      actions.setTuner(true);
    },
    unmount() {
      store.removeEventListener("change", onChange);
      actions.setTuner(false);
      main = null;
      els = null;
    },
    /** After a reconnection: the box forgot that this page wants the tuner on. */
    resume() {
      if (main) actions.setTuner(true);
    },
  };
}
