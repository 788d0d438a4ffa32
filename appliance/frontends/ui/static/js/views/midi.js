/**
 * MIDI controllers (`#/midi`): what the box hears, every mapping it has (with
 * its range and curve to edit, or ✕ to forget it), and learn for the box's
 * own actions: the setlist, the tuner, tap tempo, each snapshot of the
 * pedalboard playing and each pedalboard. A knob's learn is on its effect's
 * page.
 */

import { fill, h } from "../dom.js";
import { backButton } from "../router.js";
import { CONTINUOUS, editMidiRange, learnMidi, midiMessage } from "../midi.js";
import { trackName } from "./board.js";

export function midiView({ store, actions, router }) {
  let main = null;
  let inputs = null;
  let list = null;
  let learnBox = null;

  function render() {
    inputs = h("div", { id: "midi-inputs" });
    list = h("ul", { class: "midi-maps midi-all", "aria-label": "Every MIDI mapping" });
    learnBox = h("div", { class: "midi-learn", role: "group", "aria-label": "Learn a switch for" });
    fill(
      main,
      h(
        "div",
        { class: "plugin-head" },
        backButton(router, "health", "Back to health"),
        h("h1", {}, "MIDI"),
      ),
      h("section", { class: "card" }, h("h2", {}, "Controllers"), inputs),
      h("section", { class: "card" }, h("h2", {}, "Learn a switch for…"), learnBox),
      h("section", { class: "card" }, h("h2", {}, "Every mapping"), list),
    );
    update();
  }

  /** What a mapping drives, in the player's words. */
  function target(m) {
    const plugin = m.plugin_id ? store.plugins.get(m.plugin_id) : null;
    const entry = store.describe(plugin);
    const where = plugin ? `${plugin.name} (${trackName(plugin.track_id)})` : `${m.plugin_id} (not on the board)`;
    switch (m.action) {
      case "parameter": {
        const meta = entry && entry.parameters.find((p) => p.id === m.parameter_id);
        return `${where}: ${meta ? meta.name || meta.id : m.parameter_id}`;
      }
      case "bypass":
        return `${where}: on/off${m.momentary ? " (held)" : ""}`;
      case "mixer":
        return `Mixer: ${m.control}`;
      case "pedalboard":
        return `Pedalboard ${m.name}`;
      case "snapshot":
        return `Snapshot ${m.name}`;
      case "setlist_go":
        return m.position === null || m.position === undefined ? "Setlist entry of the program" : `Setlist entry ${m.position + 1}`;
      case "setlist_next":
        return "Next in the setlist";
      case "setlist_previous":
        return "Previous in the setlist";
      case "tuner":
        return "Tuner on/off";
      case "tap_tempo":
        return "Tap tempo";
      default:
        return m.action;
    }
  }

  /** The control's own range, for a pedal's default range. */
  function ownRange(m) {
    if (m.action === "mixer") return { min: 0, max: 100, unit: "%" };
    const plugin = store.plugins.get(m.plugin_id);
    const entry = store.describe(plugin);
    const meta = entry && entry.parameters.find((p) => p.id === m.parameter_id);
    return meta ? { min: meta.min, max: meta.max, unit: meta.unit || "" } : null;
  }

  function learnButton(label, mapping) {
    return h("button", {
      type: "button",
      class: "needs-live",
      text: label,
      "aria-label": `Learn ${label}`,
      onclick: () => learnMidi({ store, actions, mapping, label }),
    });
  }

  function update() {
    if (!main || !list) return;
    const midi = store.midi;
    fill(
      inputs,
      !midi.present
        ? h("p", { class: "muted" }, "This box hears no MIDI (its JACK server is not reachable, or midi: false is set).")
        : midi.inputs.length
          ? h("ul", { "aria-label": "MIDI inputs" }, midi.inputs.map((port) => h("li", {}, port)))
          : h("p", { class: "muted" }, "No controller is plugged in. Plug one in: it is heard at once."),
    );
    const library = store.library || { snapshots: [] };
    const boards = store.pedalboards.map((p) => (typeof p === "string" ? p : p.name)).filter(Boolean);
    fill(
      learnBox,
      learnButton("Next in the setlist", { action: "setlist_next" }),
      learnButton("Previous in the setlist", { action: "setlist_previous" }),
      learnButton("Tuner", { action: "tuner" }),
      learnButton("Tap tempo", { action: "tap_tempo" }),
      (library.snapshots || []).map((name) => learnButton(`Snapshot ${name}`, { action: "snapshot", name })),
      boards.map((name) => learnButton(`Pedalboard ${name}`, { action: "pedalboard", name })),
    );
    fill(
      list,
      midi.mappings.length
        ? midi.mappings.map((m) => {
            const text = `${midiMessage(m)} → ${target(m)}`;
            return h(
              "li",
              {},
              h("span", {}, text),
              CONTINUOUS.has(m.action) && ownRange(m)
                ? h("button", { type: "button", class: "quiet needs-live", "aria-label": `Range of ${text}`, text: "Range", onclick: () => editMidiRange({ actions, mapping: m, range: ownRange(m), title: text }) })
                : null,
              h("button", { type: "button", class: "quiet needs-live", "aria-label": `Forget ${text}`, text: "✕", onclick: () => actions.midiForget(m.id) }),
            );
          })
        : h("li", { class: "muted" }, "No mappings yet."),
    );
  }

  function onChange(event) {
    const kind = event.detail.kind;
    if (kind === "midi" || kind === "library" || kind === "pedalboards" || kind === "structure" || kind === "catalog") update();
  }

  return {
    mount(container) {
      main = container;
      store.addEventListener("change", onChange);
      actions.listPedalboards();
      render();
    },
    unmount() {
      store.removeEventListener("change", onChange);
      main = null;
      list = null;
    },
  };
}
