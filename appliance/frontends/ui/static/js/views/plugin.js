/**
 * One effect's controls, drawn from the catalog's metadata: a big on/off
 * switch, a visible fine-mode toggle, factory presets, remove (confirmed),
 * and every control as a slider, switch or choice.
 */

import { fill, h } from "../dom.js";
import { backButton } from "../router.js";
import { chooseAction, confirmAction, toast } from "../dialogs.js";
import { controlFor } from "../controls.js";
import { number } from "../format.js";
import { editMidiRange, learnMidi, midiMessage } from "../midi.js";
import { bypassSwitch, showBypass } from "./board.js";

export function pluginView({ store, actions, router }) {
  let main = null;
  let pluginId = null;
  let fine = false;
  /** parameter_id → control */
  let controls = new Map();
  let bypassButton = null;
  let grLabel = null;
  let fineButton = null;
  let midiList = null;
  let fileList = null;

  function render() {
    if (!main) return;
    controls = new Map();
    const plugin = store.plugins.get(pluginId);
    if (!plugin) {
      fill(
        main,
        h("div", { class: "plugin-head" }, backButton(router, "board", "Back to the board"), h("h1", {}, "Not on the board")),
        h("p", { class: "muted" }, store.synced ? "This effect is no longer on the board." : "Waiting for the box…"),
      );
      return;
    }
    const entry = store.describe(plugin);
    bypassButton = bypassSwitch(plugin, actions, store);
    fineButton = h("button", {
      type: "button",
      "aria-pressed": String(fine),
      text: "Fine",
      title: "Fine adjustment: drags and arrow keys move ten times less",
      onclick: () => {
        fine = !fine;
        fineButton.setAttribute("aria-pressed", String(fine));
        for (const control of controls.values()) if (control.refresh) control.refresh();
      },
    });
    const presets = entry && Array.isArray(entry.presets) ? entry.presets : [];
    grLabel = h("span", { class: "gr", "aria-live": "off" });
    midiList = h("ul", { class: "midi-maps", "aria-label": "MIDI controls" });
    fileList = h("ul", { class: "plugin-files", "aria-label": "Files" });
    const list = h("div", { class: "controls" });
    const described = new Set();
    for (const meta of entry ? entry.parameters : []) {
      if (!(meta.id in plugin.parameters)) continue;
      described.add(meta.id);
      list.append(makeControl(plugin, meta.id, meta.name || meta.id, meta));
    }
    for (const id of Object.keys(plugin.parameters)) {
      if (!described.has(id)) list.append(makeControl(plugin, id, id, null));
    }
    if (!list.children.length) list.append(h("p", { class: "muted" }, "This effect has no controls."));
    fill(
      main,
      h("div", { class: "plugin-head" }, backButton(router, "board", "Back to the board"), h("h1", {}, plugin.name), grLabel),
      h(
        "div",
        { class: "plugin-bar" },
        bypassButton,
        fineButton,
        presets.length
          ? h("button", { type: "button", class: "needs-live", text: "Presets", onclick: () => pickPreset(plugin, presets) })
          : null,
        h("button", {
          type: "button",
          class: "needs-live",
          text: "MIDI learn",
          title: "Drive this effect from a MIDI pedal or switch",
          onclick: () => learn(plugin, entry),
        }),
        h("button", { type: "button", class: "danger needs-live", text: "Remove", onclick: () => remove(plugin) }),
      ),
      midiList,
      fileList,
      h("p", { class: "control-hint" }, "Drag a slider sideways (Fine: ten times finer) · double-tap it for its default · tap a value to type one."),
      list,
    );
    updateMeters();
    updateMidi();
    updateFiles();
  }

  /** The files the effect loads (a cabinet IR, an amp model): each with the one picked. */
  function updateFiles() {
    if (!fileList) return;
    const plugin = store.plugins.get(pluginId);
    const entry = store.describe(plugin);
    fill(
      fileList,
      Object.entries((plugin && plugin.files) || {}).map(([id, file]) => {
        const meta = entry && Array.isArray(entry.files) ? entry.files.find((f) => f.id === id) : null;
        const label = (meta && meta.label) || id;
        return h(
          "li",
          {},
          h("span", {}, `${label}: `, h("strong", {}, file ? file.split("/").slice(1).join("/") : "none")),
          h("button", {
            type: "button",
            class: "needs-live",
            "aria-label": `Choose the ${label}`,
            text: "Choose…",
            onclick: () => pickFile(plugin, id, label, meta),
          }),
        );
      }),
    );
  }

  async function pickFile(plugin, id, label, meta) {
    const files = await actions.listFiles();
    if (!files) return;
    const folders = meta && Array.isArray(meta.folders) ? new Set(meta.folders) : null; // the box says which
    const names = Object.entries(files)
      .filter(([folder]) => !folders || folders.has(folder))
      .flatMap(([, list]) => list);
    if (!names.length) {
      toast(`No files for the ${label} yet: put them in the box's files folder.`);
      return;
    }
    const choice = await chooseAction({ title: `${plugin.name}: ${label}`, actions: names.map((n) => ({ label: n, value: n })) });
    if (choice && (await actions.setFile(plugin, id, choice))) toast(`Loading ${choice}`);
  }

  /** What a parameter (or the bypass) of the shown effect is called on its page. */
  function targetName(entry, mapping) {
    if (mapping.action === "bypass") return "On/off";
    const meta = entry && entry.parameters.find((p) => p.id === mapping.parameter_id);
    return meta ? meta.name || meta.id : mapping.parameter_id;
  }

  function updateMidi() {
    if (!midiList) return;
    const plugin = store.plugins.get(pluginId);
    const entry = store.describe(plugin);
    const mine = store.midi.mappings.filter((m) => m.plugin_id === pluginId);
    fill(
      midiList,
      mine.map((m) => {
        const text = `${midiMessage(m)} → ${targetName(entry, m)}`;
        const meta = entry && m.action === "parameter" ? entry.parameters.find((p) => p.id === m.parameter_id) : null;
        return h(
          "li",
          {},
          h("span", {}, text),
          meta
            ? h("button", {
                type: "button",
                class: "quiet needs-live",
                "aria-label": `Range of ${text}`,
                text: "Range",
                onclick: () => editMidiRange({ actions, mapping: m, range: meta, title: text }),
              })
            : null,
          h("button", {
            type: "button",
            class: "quiet needs-live",
            "aria-label": `Forget ${text}`,
            text: "✕",
            onclick: () => actions.midiForget(m.id),
          }),
        );
      }),
    );
  }

  async function learn(plugin, entry) {
    const targets = [{ label: "On/off", value: "" }].concat(
      (entry ? entry.parameters : []).filter((p) => p.id in plugin.parameters).map((p) => ({ label: p.name || p.id, value: p.id })),
    );
    const choice = await chooseAction({ title: `${plugin.name}: which control?`, actions: targets });
    if (choice === null) return;
    const mapping = choice
      ? { action: "parameter", plugin_id: plugin.plugin_id, parameter_id: choice }
      : { action: "bypass", plugin_id: plugin.plugin_id };
    await learnMidi({ store, actions, mapping, label: targets.find((t) => t.value === choice).label });
  }

  function makeControl(plugin, id, name, meta) {
    const control = controlFor({
      name,
      meta,
      value: plugin.parameters[id],
      send: (value) => actions.setParameter(plugin, id, value),
      isFine: () => fine,
      parameterId: id,
    });
    controls.set(id, control);
    return control.el;
  }

  async function pickPreset(plugin, presets) {
    const choice = await chooseAction({
      title: `${plugin.name}: factory presets`,
      actions: presets.map((p) => ({ label: p.label, value: p.uri })),
    });
    if (choice) {
      const done = await actions.loadPreset(plugin, choice);
      if (done) toast(`Loaded ${presets.find((p) => p.uri === choice).label}`);
    }
  }

  async function remove(plugin) {
    const sure = await confirmAction({
      title: `Remove ${plugin.name}?`,
      message: "Its settings go with it (a saved pedalboard keeps its own copy).",
      ok: "Remove",
      danger: true,
    });
    if (sure && (await actions.remove(plugin))) router.go("board");
  }

  function updateMeters() {
    if (!grLabel) return;
    const monitor = store.meters && store.meters.monitors && store.meters.monitors[pluginId];
    grLabel.textContent = monitor && typeof monitor.gr === "number" ? `GR ${number(monitor.gr, 1)} dB` : "";
  }

  function onChange(event) {
    const detail = event.detail;
    const plugin = store.plugins.get(pluginId);
    switch (detail.kind) {
      case "param":
        if (detail.plugin_id === pluginId && plugin) {
          const control = controls.get(detail.parameter_id);
          if (control) control.update(plugin.parameters[detail.parameter_id], detail.reply_to);
        }
        break;
      case "values":
        if (detail.plugin_id === pluginId && plugin) {
          for (const [id, control] of controls) control.update(plugin.parameters[id], detail.reply_to);
        }
        break;
      case "bypass":
        if (detail.plugin_id === pluginId && plugin && bypassButton) showBypass(bypassButton, plugin);
        break;
      case "file":
        if (detail.plugin_id === pluginId) updateFiles();
        break;
      case "structure":
        if (!plugin) {
          if (detail.removed && detail.plugin_id === pluginId) toast("That effect was removed from the board.");
          router.go("board");
        } else if (!controls.size) {
          render();
        } else if (detail.plugin_id === undefined) {
          // A whole new board (a resync): values may have changed; a held control keeps its finger.
          for (const [id, control] of controls) control.update(plugin.parameters[id]);
          if (bypassButton) showBypass(bypassButton, plugin);
        }
        break;
      case "catalog":
        render();
        break;
      case "meters":
        updateMeters();
        break;
      case "midi":
        updateMidi();
        break;
      default:
        break;
    }
  }

  return {
    mount(container, args) {
      main = container;
      pluginId = args[0] || null;
      store.addEventListener("change", onChange);
      render();
    },
    unmount() {
      store.removeEventListener("change", onChange);
      main = null;
      midiList = null;
      fileList = null;
      controls = new Map();
    },
  };
}
