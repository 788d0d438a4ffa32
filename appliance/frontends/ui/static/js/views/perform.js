/**
 * The performance view, for the stage: the pedalboard and snapshot playing in
 * big type, big snapshot buttons, previous and next in the setlist, and the
 * tuner one tap away, and the box's tempo (tap it, or type it). Nothing here
 * changes a control, adds or removes anything: a stray tap can only recall a
 * snapshot or step the setlist (one tap of the tempo alone changes nothing).
 */

import { askName } from "../dialogs.js";
import { coalesce, fill, h } from "../dom.js";

export function performView({ store, actions }) {
  let main = null;
  let stepping = false;

  const render = coalesce(() => {
    if (!main) return;
    const state = store.library || { pedalboard: null, snapshot: null, snapshots: [], setlist: { entries: [], position: null } };
    const list = (state.setlist && state.setlist.entries) || [];
    const position = state.setlist && Number.isInteger(state.setlist.position) ? state.setlist.position : null;
    const next = position === null ? list[0] : list[position + 1];
    const snapshotNames = state.snapshots || [];
    fill(
      main,
      h(
        "div",
        { class: "perform" },
        h(
          "div",
          { class: "perform-bar" },
          h("a", { class: "button", href: "#/board", "aria-label": "Leave the performance view" }, "✕ Exit"),
          h("button", { type: "button", text: "Full screen", onclick: fullScreen, hidden: !document.documentElement.requestFullscreen }),
        ),
        h("h1", { class: "perform-board", id: "perform-board" }, state.pedalboard || "Unsaved board"),
        h("p", { class: "perform-snapshot", id: "perform-snapshot", "aria-live": "polite" }, state.snapshot || ""),
        h(
          "p",
          { class: "perform-setlist", id: "perform-setlist" },
          list.length
            ? `Setlist ${position === null ? "–" : position + 1} / ${list.length}${next ? ` · next: ${next.pedalboard}${next.snapshot ? ` · ${next.snapshot}` : ""}` : " · last song"}`
            : "No setlist",
        ),
        snapshotNames.length
          ? h(
              "div",
              { class: "perform-snaps", role: "group", "aria-label": "Snapshots" },
              snapshotNames.map((name) =>
                h("button", {
                  type: "button",
                  class: "needs-live",
                  text: name,
                  "aria-pressed": String(name === state.snapshot),
                  onclick: () => actions.library("SNAPSHOT_RECALL", { name }),
                }),
              ),
            )
          : h("p", { class: "muted" }, state.pedalboard ? "This pedalboard has no snapshots (save some under Boards)." : ""),
        tempoRow(),
        h(
          "div",
          { class: "perform-steps" },
          h("button", {
            type: "button",
            class: "needs-live",
            text: "◀ Prev",
            "aria-label": "Previous in the setlist",
            disabled: !list.length || position === 0 || position === null,
            onclick: () => step("SETLIST_PREVIOUS"),
          }),
          h("a", { class: "button perform-tuner", href: "#/tuner" }, "♪ Tuner"),
          h("button", {
            type: "button",
            class: "primary needs-live",
            text: "Next ▶",
            "aria-label": "Next in the setlist",
            disabled: !list.length || position === list.length - 1,
            onclick: () => step("SETLIST_NEXT"),
          }),
        ),
      ),
    );
  });

  function bpmText() {
    const bpm = store.tempo.bpm;
    return bpm === null ? "– BPM" : `${bpm.toFixed(1)} BPM`;
  }

  /** The tempo: its BPM (tap it to type one) and a TAP pad (the box times the taps). */
  function tempoRow() {
    return h(
      "div",
      { class: "perform-tempo", role: "group", "aria-label": "Tempo" },
      h("button", {
        type: "button",
        class: "perform-bpm needs-live",
        id: "perform-bpm",
        "aria-label": "Type the tempo",
        "aria-live": "polite",
        text: bpmText(),
        onclick: typeTempo,
      }),
      h("button", {
        type: "button",
        class: "needs-live perform-tap",
        text: "TAP",
        "aria-label": "Tap the tempo",
        // On the finger's touch, not its lift: a tap's time is when it lands.
        onpointerdown: (event) => {
          event.preventDefault();
          actions.tapTempo();
        },
        onkeydown: (event) => {
          if (event.key === "Enter" || event.key === " ") {
            event.preventDefault();
            actions.tapTempo();
          }
        },
      }),
    );
  }

  async function typeTempo() {
    const bpm = store.tempo.bpm;
    const answer = await askName({ title: "Tempo", label: "Tempo in BPM (20–300)", value: bpm === null ? "" : String(bpm), ok: "Set" });
    if (!answer) return;
    const typed = Number(answer.name.replace(",", "."));
    await actions.setTempo(Number.isFinite(typed) ? typed : answer.name);
  }

  async function step(type) {
    if (stepping) return;
    stepping = true;
    try {
      await actions.library(type, {});
    } finally {
      stepping = false;
    }
  }

  function fullScreen() {
    const root = document.documentElement;
    if (document.fullscreenElement) {
      document.exitFullscreen().catch(() => {});
      return;
    }
    root
      .requestFullscreen()
      .then(() => {
        // Keep the orientation the phone is held in (where the browser allows it).
        const orientation = window.screen.orientation;
        if (orientation && orientation.lock) orientation.lock(orientation.type).catch(() => {});
      })
      .catch(() => {});
  }

  function onChange(event) {
    if (event.detail.kind === "library") render();
    if (event.detail.kind === "tempo" && main) {
      const shown = main.querySelector("#perform-bpm");
      if (shown) shown.textContent = bpmText();
    }
  }

  return {
    mount(container) {
      main = container;
      store.addEventListener("change", onChange);
      render();
    },
    unmount() {
      store.removeEventListener("change", onChange);
      main = null;
    },
  };
}
