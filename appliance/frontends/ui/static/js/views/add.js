/**
 * Add an effect to a track's chain, from the catalog grouped by kind (drive,
 * amp, dynamics, EQ, modulation, delay, reverb, utility), or any other LV2
 * effect installed on the box (searched by name).
 */

import { fill, h } from "../dom.js";
import { backButton } from "../router.js";
import { toast } from "../dialogs.js";
import { GROUPS, groupOf } from "../categories.js";
import { trackName } from "./board.js";

/** How many installed plugins the search shows at once. */
const SEARCH_LIMIT = 40;

export function addView({ store, actions, router }) {
  let main = null;
  let trackId = null;
  let busy = false;
  let query = "";

  function render() {
    if (!main) return;
    const track = store.track(trackId) || store.tracks[0];
    if (track) trackId = track.track_id;
    const catalog = store.catalog;
    const head = h(
      "div",
      { class: "plugin-head" },
      backButton(router, "board", "Back to the board"),
      h("h1", {}, store.tracks.length > 1 && track ? `Add to ${trackName(track.track_id)}` : "Add an effect"),
    );
    if (!catalog.plugins.length && !catalog.installed.length) {
      fill(main, head, h("p", { class: "muted" }, "Waiting for the box's catalog…"));
      return;
    }
    const groups = GROUPS.map(([key, label]) => {
      const entries = catalog.plugins.filter((entry) => groupOf(entry) === key);
      if (!entries.length) return null;
      return h(
        "section",
        { class: "group", "aria-label": label },
        h("h3", {}, label),
        h(
          "div",
          { class: "catalog-list" },
          entries.map((entry) =>
            h(
              "button",
              { type: "button", class: "needs-live", dataset: { key: entry.key }, onclick: (e) => add(entry.key, entry.name, e.currentTarget) },
              entry.name,
              h("small", {}, describe(entry)),
            ),
          ),
        ),
      );
    });
    const results = h("div", { class: "catalog-list", id: "installed-results" });
    const search = h("input", {
      type: "text",
      placeholder: "Search by name",
      "aria-label": "Search installed plugins",
      value: query,
      autocomplete: "off",
    });
    search.addEventListener("input", () => {
      query = search.value;
      showInstalled(results);
    });
    const other = h(
      "details",
      { class: "more group" },
      h("summary", {}, `Other installed (${catalog.installed.length})`),
      h("p", { class: "muted small" }, "Effects outside the curated list: their controls use the plugin's own names."),
      search,
      h("div", { style: "height:.5rem" }),
      results,
    );
    showInstalled(results);
    fill(main, head, groups, catalog.installed.length ? other : null);
  }

  function describe(entry) {
    const stereo = entry.audio_inputs > 1 || entry.audio_outputs > 1 ? "stereo" : "mono";
    const count = entry.parameters.length;
    return `${stereo} · ${count} control${count === 1 ? "" : "s"}`;
  }

  function showInstalled(results) {
    const words = query.trim().toLowerCase().split(/\s+/).filter(Boolean);
    const matches = store.catalog.installed.filter((p) => {
      const text = `${p.name} ${p.uri}`.toLowerCase();
      return words.every((w) => text.includes(w));
    });
    fill(
      results,
      matches.slice(0, SEARCH_LIMIT).map((p) =>
        h("button", { type: "button", class: "needs-live", dataset: { uri: p.uri }, onclick: (e) => add(p.uri, p.name, e.currentTarget) }, p.name, h("small", {}, p.uri)),
      ),
      matches.length > SEARCH_LIMIT ? h("p", { class: "muted small" }, `${matches.length - SEARCH_LIMIT} more: type to narrow down.`) : null,
      matches.length ? null : h("p", { class: "muted" }, "No installed plugin matches."),
    );
  }

  async function add(keyOrUri, name, button) {
    if (busy || !trackId) return;
    busy = true;
    const label = button.firstChild;
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    if (label) label.textContent = `Adding ${name}…`;
    const added = await actions.add(trackId, keyOrUri);
    busy = false;
    if (!main) return;
    if (added) {
      toast(`${added.data.name} added`);
      router.go("board");
    } else {
      button.disabled = false;
      button.removeAttribute("aria-busy");
      if (label) label.textContent = name;
    }
  }

  function onChange(event) {
    if (event.detail.kind === "catalog" || (event.detail.kind === "structure" && !busy && !store.track(trackId))) render();
  }

  return {
    mount(container, args) {
      main = container;
      trackId = args[0] || null;
      busy = false;
      store.addEventListener("change", onChange);
      render();
    },
    unmount() {
      store.removeEventListener("change", onChange);
      main = null;
    },
  };
}
