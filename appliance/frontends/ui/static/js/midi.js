/**
 * MIDI on the phone (docs/protocol.md §18): how a mapping reads, learning
 * one (the box waits for the controller; the page waits for the box), and
 * editing a mapping's range and curve.
 */

import { editRange, toast, waitFor } from "./dialogs.js";

/** `CC 7 · ch 2`, `PC any · any channel`, `Note 60 · ch 1`. */
export function midiMessage(m) {
  const kind = m.message === "cc" ? "CC" : m.message === "pc" ? "PC" : "Note";
  const number = m.number === null || m.number === undefined ? "any" : m.number;
  return `${kind} ${number} · ${m.channel ? `ch ${m.channel}` : "any channel"}`;
}

/** Actions that take a pedal's range (the rest act on a press). */
export const CONTINUOUS = new Set(["parameter", "mixer"]);

/**
 * Learn `mapping` (its action and target): the next message the controller
 * sends makes it. Says what it learned; cancels the learn when dismissed.
 *
 * @returns {Promise<object|null>} the mapping learned.
 */
export async function learnMidi({ store, actions, mapping, label }) {
  let stop = () => {};
  const learned = new Promise((resolve, reject) => {
    const onChange = (event) => {
      if (event.detail.kind === "midi-learned") resolve(event.detail.mapping);
      else if (event.detail.kind === "midi" && store.midi.learning === null && event.detail.reply_to === undefined) reject(new Error("ended"));
    };
    store.addEventListener("change", onChange);
    stop = () => store.removeEventListener("change", onChange);
  });
  learned.catch(() => {});
  if (!(await actions.midiLearn(mapping))) {
    stop();
    return null;
  }
  const done = await waitFor({
    title: "MIDI learn",
    message: `Move a pedal or press a switch on your controller for ${label}.`,
    until: learned,
  });
  stop();
  if (!done) {
    actions.midiCancel();
    return null;
  }
  const made = await learned;
  toast(`${midiMessage(made)} → ${label}`);
  return made;
}

/**
 * Edit a pedal mapping's range (heel and toe values, over the control's own
 * `range` {min, max, unit} by default) and curve; the box is sent the result.
 */
export async function editMidiRange({ actions, mapping, range, title }) {
  const edited = await editRange({
    title,
    minimum: mapping.minimum ?? range.min,
    maximum: mapping.maximum ?? range.max,
    curve: mapping.curve || "linear",
    unit: range.unit || "",
  });
  if (edited) actions.midiMap({ ...mapping, ...edited });
}
