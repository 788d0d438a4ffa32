/**
 * The board at a glance: each track's chain in order, wrapping on a narrow
 * screen; per effect its name, a big on/off (bypass) switch and, one tap
 * away, its controls. "Edit chain" shows reorder (drag or buttons) and
 * remove; the chain cannot be changed by accident otherwise.
 */

import { coalesce, fill, h } from "../dom.js";
import { confirmAction } from "../dialogs.js";
import { MeterBar } from "../meters.js";
import { number } from "../format.js";

/** A track's display name: `track_001` → "Track 1". */
export function trackName(trackId) {
  const match = /^track_0*(\d+)$/.exec(trackId);
  return match ? `Track ${match[1]}` : trackId;
}

/** The big bypass switch of an effect: checked while the effect is on. */
export function bypassSwitch(plugin, actions, store) {
  const button = h("button", {
    type: "button",
    role: "switch",
    class: "bypass needs-live",
    "aria-label": plugin.name,
    dataset: { pluginId: plugin.plugin_id },
    onclick: () => {
      const current = store.plugins.get(plugin.plugin_id);
      if (current) actions.setBypass(current, !current.bypass);
    },
  });
  showBypass(button, plugin);
  return button;
}

/** Show a plugin's bypass state on its switch. */
export function showBypass(button, plugin) {
  button.setAttribute("aria-checked", String(!plugin.bypass));
  button.textContent = plugin.bypass ? "OFF" : "ON";
}

export function boardView({ store, actions, router }) {
  let main = null;
  const editing = new Set();
  let drag = null;
  let stale = false;
  /** track_id → {in: MeterBar, out: MeterBar, box: HTMLElement} */
  let meterBars = new Map();
  /** plugin_id → element showing gain reduction */
  let grLabels = new Map();

  const render = coalesce(() => {
    if (!main) return;
    if (drag) {
      stale = true; // redraw when the finger lifts
      return;
    }
    stale = false;
    meterBars = new Map();
    grLabels = new Map();
    if (!store.tracks.length) {
      fill(main, h("p", { class: "muted" }, store.synced ? "The box has no tracks." : "Waiting for the box…"));
      return;
    }
    fill(main, h("h1", { class: "visually-hidden" }, "Board"), store.tracks.map((track) => renderTrack(track)));
    updateMeters();
  });

  function renderTrack(track) {
    const isEditing = editing.has(track.track_id);
    const inBar = new MeterBar(`${trackName(track.track_id)} input level`);
    const outBar = new MeterBar(`${trackName(track.track_id)} output level`);
    // Its room is kept while no levels are known, so that the chain does not move when they arrive.
    const meters = h("div", { class: "meters idle" }, h("span", {}, "In"), inBar.el, h("span", {}, "Out"), outBar.el);
    meterBars.set(track.track_id, { in: inBar, out: outBar, box: meters });
    const chain = h(
      "ol",
      { class: "chain", "aria-label": `${trackName(track.track_id)} chain, in signal order`, dataset: { trackId: track.track_id } },
      track.chain.map((id, index) => renderPedal(store.plugins.get(id), index, track, isEditing)),
      h("li", {}, h("a", { class: "add-tile needs-live", href: `#/add/${encodeURIComponent(track.track_id)}` }, "+ Add effect")),
    );
    return h(
      "section",
      { class: "track", dataset: { trackId: track.track_id } },
      h(
        "div",
        { class: "track-head" },
        h("h2", {}, trackName(track.track_id)),
        h("button", {
          type: "button",
          class: "needs-live",
          "aria-pressed": String(isEditing),
          text: isEditing ? "Done" : "Edit chain",
          onclick: () => {
            if (isEditing) editing.delete(track.track_id);
            else editing.add(track.track_id);
            render();
          },
        }),
        meters,
      ),
      chain,
    );
  }

  function renderPedal(plugin, index, track, isEditing) {
    if (!plugin) return null;
    const entry = store.describe(plugin);
    const count = entry ? entry.parameters.length : Object.keys(plugin.parameters).length;
    const trouble = store.pluginTrouble.get(plugin.plugin_id);
    const gr = h("span", { class: "gr" });
    grLabels.set(plugin.plugin_id, gr);
    const li = h(
      "li",
      { class: plugin.bypass ? "pedal" : "pedal on", dataset: { pluginId: plugin.plugin_id } },
      h("span", { class: "order", "aria-hidden": "true" }, String(index + 1)),
      h(
        "button",
        {
          type: "button",
          class: "pedal-open",
          "aria-label": `${plugin.name}: controls`,
          onclick: () => router.go(`plugin/${encodeURIComponent(plugin.plugin_id)}`),
        },
        h("span", { class: "pedal-name" }, plugin.name),
        trouble
          ? h("span", { class: "pedal-sub bad" }, "restarting…")
          : h("span", { class: "pedal-sub" }, `${count} control${count === 1 ? "" : "s"} `, gr),
      ),
      bypassSwitch(plugin, actions, store),
      isEditing ? renderEdit(plugin, index, track) : null,
    );
    return li;
  }

  function renderEdit(plugin, index, track) {
    const last = track.chain.length - 1;
    const handle = h("button", {
      type: "button",
      class: "handle needs-live",
      "aria-label": `Drag ${plugin.name} to reorder`,
      text: "⠿",
    });
    handle.addEventListener("pointerdown", (e) => startDrag(e, plugin, handle));
    handle.addEventListener("keydown", (e) => {
      if (e.key === "ArrowLeft" || e.key === "ArrowUp") actions.move(plugin, index - 1);
      else if (e.key === "ArrowRight" || e.key === "ArrowDown") actions.move(plugin, index + 1);
    });
    return h(
      "div",
      { class: "pedal-edit" },
      handle,
      h("button", {
        type: "button",
        class: "needs-live",
        "aria-label": `Move ${plugin.name} earlier`,
        text: "◀",
        disabled: index === 0,
        onclick: () => actions.move(plugin, index - 1),
      }),
      h("button", {
        type: "button",
        class: "needs-live",
        "aria-label": `Move ${plugin.name} later`,
        text: "▶",
        disabled: index === last,
        onclick: () => actions.move(plugin, index + 1),
      }),
      h("button", {
        type: "button",
        class: "danger needs-live",
        "aria-label": `Remove ${plugin.name}`,
        text: "✕",
        onclick: async () => {
          const sure = await confirmAction({
            title: `Remove ${plugin.name}?`,
            message: "Its settings go with it (a saved pedalboard keeps its own copy).",
            ok: "Remove",
            danger: true,
          });
          if (sure) await actions.remove(plugin);
        },
      }),
    );
  }

  // -- drag to reorder --------------------------------------------------------------

  function startDrag(e, plugin, handle) {
    if (drag || (e.pointerType === "mouse" && e.button !== 0)) return;
    e.preventDefault();
    const li = handle.closest(".pedal");
    const chain = handle.closest(".chain");
    try {
      handle.setPointerCapture(e.pointerId);
    } catch {
      /* gone */
    }
    const items = [...chain.querySelectorAll(".pedal")].map((el) => ({ el, rect: el.getBoundingClientRect() }));
    const from = items.findIndex((item) => item.el === li);
    drag = { plugin, li, handle, pointerId: e.pointerId, x0: e.clientX, y0: e.clientY, items, from, to: from };
    li.classList.add("dragging");
    handle.addEventListener("pointermove", onDragMove);
    handle.addEventListener("pointerup", onDragEnd);
    handle.addEventListener("pointercancel", onDragEnd);
  }

  function onDragMove(e) {
    if (!drag || e.pointerId !== drag.pointerId) return;
    drag.li.style.transform = `translate(${e.clientX - drag.x0}px, ${e.clientY - drag.y0}px)`;
    let best = drag.from;
    let bestDistance = Infinity;
    drag.items.forEach((item, i) => {
      const cx = item.rect.left + item.rect.width / 2;
      const cy = item.rect.top + item.rect.height / 2;
      const distance = Math.hypot(e.clientX - cx, e.clientY - cy);
      if (distance < bestDistance) {
        bestDistance = distance;
        best = i;
      }
    });
    drag.to = best;
    drag.items.forEach((item, i) => item.el.classList.toggle("drop-target", i === best && i !== drag.from));
  }

  function onDragEnd(e) {
    if (!drag || e.pointerId !== drag.pointerId) return;
    const { plugin, li, handle, from, to, items } = drag;
    handle.removeEventListener("pointermove", onDragMove);
    handle.removeEventListener("pointerup", onDragEnd);
    handle.removeEventListener("pointercancel", onDragEnd);
    li.classList.remove("dragging");
    li.style.transform = "";
    for (const item of items) item.el.classList.remove("drop-target");
    drag = null;
    if (e.type === "pointerup" && to !== from) actions.move(plugin, to);
    if (stale) render();
  }

  // -- live values -----------------------------------------------------------------------

  function updateMeters() {
    const meters = store.meters;
    for (const [trackId, bars] of meterBars) {
      const levels = meters && meters.tracks && meters.tracks[trackId];
      bars.box.classList.toggle("idle", !levels);
      if (levels) {
        bars.in.set(levels.in);
        bars.out.set(levels.out);
      }
    }
    const monitors = (meters && meters.monitors) || {};
    for (const [pluginId, label] of grLabels) {
      const gr = monitors[pluginId] && monitors[pluginId].gr;
      label.textContent = typeof gr === "number" ? `GR ${number(gr, 1)} dB` : "";
    }
  }

  function onChange(event) {
    const { kind } = event.detail;
    if (kind === "meters") updateMeters();
    else if (kind === "bypass") showPluginBypass(event.detail.plugin_id);
    else if (["structure", "catalog", "plugin-state"].includes(kind)) render();
  }

  /** Update one effect's switch in place (so that a focused switch keeps its focus). */
  function showPluginBypass(pluginId) {
    const plugin = store.plugins.get(pluginId);
    const li = main && main.querySelector(`.pedal[data-plugin-id="${CSS.escape(pluginId)}"]`);
    if (!plugin || !li) {
      render();
      return;
    }
    li.classList.toggle("on", !plugin.bypass);
    const button = li.querySelector(".bypass");
    if (button) showBypass(button, plugin);
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
      drag = null;
    },
  };
}
