/**
 * The box's health: engine, DSP load, xruns, levels per track, the HAT's
 * mixer when it has one, MIDI controllers (a summary; the page is `#/midi`),
 * the player's files, a backup of everything and its restore, the system (its
 * version, and installing an update), and how to pair another phone.
 */

import { confirmAction, toast } from "../dialogs.js";
import { fill, h } from "../dom.js";
import { Slider } from "../controls.js";
import { number } from "../format.js";
import { MeterBar } from "../meters.js";
import { pairingUrl } from "../pairing.js";
import { qrSvg } from "../qr.js";
import { UPDATE_ACCEPT, backupUrl, installUpdate, pickFiles, progressIn, restoreBackup } from "../uploads.js";
import { trackName } from "./board.js";

export function healthView({ store, conn, meters }) {
  let main = null;
  let facts = null;
  let bars = new Map();
  let mixerBox = null;
  let mixerControls = new Map();
  let system = null;

  function render() {
    facts = h("dl", { class: "facts", id: "health-facts" });
    bars = new Map();
    const levels = h("div", { class: "meters" });
    for (const track of store.tracks) {
      const inBar = new MeterBar(`${trackName(track.track_id)} input level`);
      const outBar = new MeterBar(`${trackName(track.track_id)} output level`);
      bars.set(track.track_id, { in: inBar, out: outBar });
      levels.append(h("span", {}, `${trackName(track.track_id)} in`), inBar.el, h("span", {}, `${trackName(track.track_id)} out`), outBar.el);
    }
    mixerBox = h("div", { class: "controls" });
    const url = pairingUrl();
    const qr = h("div", { class: "qr", "aria-label": "QR code of the pairing address", role: "img" });
    qr.innerHTML = qrSvg(url);
    fill(
      main,
      h("h1", { class: "visually-hidden" }, "Health"),
      h("section", { class: "card" }, h("h2", {}, "The box"), facts),
      h("section", { class: "card" }, h("h2", {}, "Levels"), store.tracks.length ? levels : h("p", { class: "muted" }, "No tracks."), h("p", { class: "muted small", id: "levels-note" })),
      h("section", { class: "card" }, h("h2", {}, "Mixer"), mixerBox),
      h(
        "section",
        { class: "card" },
        h("h2", {}, "MIDI"),
        h("p", { id: "midi-summary" }, midiSummary()),
        h("a", { class: "button", href: "#/midi" }, "MIDI controllers and mappings"),
      ),
      h(
        "section",
        { class: "card" },
        h("h2", {}, "Your files"),
        h("p", {}, "Impulse responses and amp models the effects load."),
        h("a", { class: "button", href: "#/files" }, "Your files"),
      ),
      backupCard(),
      (system = systemCard()).el,
      h(
        "section",
        { class: "card" },
        h("h2", {}, "Pair another phone"),
        h("p", {}, "Scan this code with the other phone's camera, or open this address on it:"),
        qr,
        h("p", {}, h("code", { id: "pairing-url" }, url)),
      ),
    );
    showFacts();
    showLevels();
    showMixer();
    system.show(store.engine && store.engine.system);
  }

  function midiSummary() {
    const midi = store.midi;
    if (!midi.present) return "This box hears no MIDI.";
    const n = midi.inputs.length;
    const m = midi.mappings.length;
    return `${n} controller${n === 1 ? "" : "s"} heard · ${m} mapping${m === 1 ? "" : "s"}`;
  }

  function showFacts() {
    if (!facts) return;
    const e = store.engine || {};
    const rows = [
      ["Connection", conn.state === "live" ? "live" : conn.state],
      ["Engine", e.engine ? `${e.engine}${e.running === false ? " (stopped)" : ""}` : "–"],
      ["Sample rate", e.sample_rate ? `${e.sample_rate} Hz` : "–"],
      ["Buffer", e.buffer_size ? `${e.buffer_size} frames (${number((1000 * e.buffer_size) / (e.sample_rate || 48000), 1)} ms)` : "–"],
      ["DSP load", typeof e.dsp_load === "number" ? `${number(e.dsp_load, 1)} %` : "–"],
      ["Xruns", typeof e.xruns === "number" ? String(e.xruns) : "–"],
      ["Plugins running", e.plugins_running !== undefined ? `${e.plugins_running} of ${e.plugins ?? store.plugins.size}` : String(store.plugins.size)],
      ["Up", typeof e.uptime === "number" ? uptime(e.uptime) : "–"],
    ];
    fill(facts, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  }

  function showLevels() {
    const data = store.meters;
    for (const [trackId, pair] of bars) {
      const levels = data && data.tracks && data.tracks[trackId];
      pair.in.set(levels ? levels.in : -120);
      pair.out.set(levels ? levels.out : -120);
    }
    const note = main && main.querySelector("#levels-note");
    if (note) note.textContent = data && data.tracks && Object.keys(data.tracks).length ? "" : "This box does not report levels.";
  }

  function showMixer() {
    if (!mixerBox) return;
    const mixer = store.mixer;
    if (!mixer.present || !mixer.controls.length) {
      mixerControls = new Map();
      fill(mixerBox, h("p", { class: "muted" }, "This box has no mixer to set (no sound card, or none configured)."));
      return;
    }
    if (mixerControls.size !== mixer.controls.length) {
      mixerControls = new Map();
      fill(
        mixerBox,
        mixer.controls.map((c) => {
          const slider = new Slider({
            name: c.id.replace(/_/g, " "),
            meta: { min: c.minimum ?? 0, max: c.maximum ?? 100, default: c.value, unit: "%", kind: "float" },
            value: c.value,
            send: (value) => conn.send("MIXER_SET", { control: c.id, value }),
            parameterId: c.id,
          });
          mixerControls.set(c.id, slider);
          return slider.el;
        }),
      );
    }
  }

  function onChange(event) {
    const { kind, reply_to: replyTo } = event.detail;
    if (kind === "health") {
      showFacts();
      if (system) system.show(store.engine && store.engine.system);
    } else if (kind === "meters") {
      showLevels();
      showFacts();
    } else if (kind === "mixer") {
      showMixer();
      for (const c of store.mixer.controls) {
        const slider = mixerControls.get(c.id);
        if (slider) slider.update(c.value, replyTo);
      }
    } else if (kind === "midi") {
      const summary = main && main.querySelector("#midi-summary");
      if (summary) summary.textContent = midiSummary();
    } else if (kind === "structure") render();
  }

  const onState = () => showFacts();

  return {
    mount(container) {
      main = container;
      store.addEventListener("change", onChange);
      conn.addEventListener("state", onState);
      meters.setWantHealth(true);
      render();
    },
    unmount() {
      store.removeEventListener("change", onChange);
      conn.removeEventListener("state", onState);
      meters.setWantHealth(false);
      main = null;
      facts = null;
      mixerBox = null;
      mixerControls = new Map();
      system = null;
    },
  };
}

/** Download a backup of everything; restore one (after a confirm), with a progress bar. */
function backupCard() {
  const outcome = h("p", { class: "muted small", role: "status" });
  async function restore([file]) {
    const sure = await confirmAction({
      title: `Restore ${file.name}?`,
      message: "Everything on the box is replaced by the backup: the board, pedalboards, setlist, MIDI mappings and your files. The box checks it first and then starts again with it (a few seconds of silence).",
      ok: "Restore",
      danger: true,
    });
    if (!sure) return;
    const sent = await restoreBackup(file, progressIn(outcome, file));
    if (sent.ok) {
      fill(outcome, "Restored. The box is starting again with it.");
      toast("Backup restored; the box starts again");
    } else {
      fill(outcome, h("span", { class: "error", role: "alert" }, sent.error));
    }
  }
  return h(
    "section",
    { class: "card" },
    h("h2", {}, "Backup"),
    h("p", {}, "One file with your board, pedalboards, setlist, MIDI mappings and files."),
    h("a", { class: "button", href: backupUrl(), download: "" }, "Download a backup"),
    ...pickFiles({ label: "Restore a backup…", accept: ".zip", onPick: restore }),
    outcome,
  );
}

/**
 * The system the box runs (HEALTH's `system`: version, root, the last update's outcome) and
 * "Install an update…" (after a confirm, with a progress bar). Only a box started from the
 * Debian card (a root A or B) takes updates; elsewhere the button is off and says why.
 * `show(system)` draws a report again and leaves an upload under way alone.
 */
function systemCard() {
  const facts = h("dl", { class: "facts", id: "system-facts" });
  const last = h("p", { id: "system-last" });
  const note = h("p", { class: "muted small", id: "system-note" });
  const outcome = h("p", { class: "muted small", role: "status" });
  async function install([file]) {
    const sure = await confirmAction({
      title: `Install ${file.name}?`,
      message: "The box checks the update, installs it beside the system it runs and restarts with it (a minute or two of silence). If the new system does not play your board within a few minutes, the box goes back to this one by itself. Your board, pedalboards, setlist, MIDI mappings and files stay as they are.",
      ok: "Install",
      danger: true,
    });
    if (!sure) return;
    const sent = await installUpdate(file, progressIn(outcome, file));
    if (sent.ok) {
      fill(outcome, `Installing ${sent.answer.update.version}; the box restarts by itself.`);
      toast("Update sent; the box installs it and restarts");
    } else {
      fill(outcome, h("span", { class: "error", role: "alert" }, sent.error));
    }
  }
  const [picker, button] = pickFiles({ label: "Install an update…", accept: UPDATE_ACCEPT, onPick: install });
  button.disabled = true; // until the box says it runs from the card
  const el = h("section", { class: "card", id: "system-card" }, h("h2", {}, "System"), facts, last, picker, button, note, outcome);

  function show(report) {
    const known = Boolean(report);
    const slot = known ? report.slot : null;
    fill(
      facts,
      [
        ["Version", known ? report.version : "–"],
        ["Root", !known ? "–" : slot ? `${slot} (of A and B)` : "one (not the Debian card)"],
      ].map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
    );
    fill(last, known ? lastUpdate(report) : "");
    button.disabled = !slot;
    fill(note, known && !slot ? "Updates need the Debian card (image/card)." : "");
  }
  return { el, show };
}

/** The last update's outcome in words (HEALTH's `system.last_update`). */
function lastUpdate(report) {
  const last = report.last_update;
  if (!last) return "No update installed yet.";
  const to = last.version ? ` to ${last.version}` : "";
  if (last.outcome === "installed") return `Updated to ${last.version}.`;
  if (last.outcome === "fell back") {
    return `The update${to} did not start; the box went back to ${report.version} by itself: ${last.why || "no reason given"}.`;
  }
  return `The update${to} was not installed: ${last.why || "no reason given"}.`;
}

function uptime(seconds) {
  const s = Math.floor(seconds);
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  return hours ? `${hours} h ${minutes} min` : minutes ? `${minutes} min ${s % 60} s` : `${s} s`;
}
